"""disal.config: every setting from the environment, validated, secrets kept out of repr and /health."""

from __future__ import annotations

from pathlib import Path

import pytest

from disal.config import DEFAULT_STRATEGY, ConfigError, Settings
from disal.strategies import make_strategy


def test_defaults():
    s = Settings.from_env({})
    assert s.strategy == DEFAULT_STRATEGY and s.query_batch == 20
    default = make_strategy(s.strategy)
    assert default.options.last_checkpoint_only and default.pick == "centroid"
    assert s.min_annotations_to_train == 1 and s.model_dir == Path("model_dir")
    assert not s.auth_enabled and not s.use_uncertainty_sampling and s.push_chunk_size == 500


def test_reads_every_variable():
    env = {"LABEL_STUDIO_URL": "http://ls:8080", "LABEL_STUDIO_API_KEY": "k" * 40, "MODEL_DIR": "/data/m",
           "MODEL_NAME": "some/model", "BASIC_AUTH_USER": "u", "BASIC_AUTH_PASS": "p",
           "MIN_ANNOTATIONS_TO_TRAIN": "5", "USE_UNCERTAINTY_SAMPLING": "yes", "STRATEGY": "margin",
           "PUSH_CHUNK_SIZE": "100", "LOG_LEVEL": "debug", "BACKEND_URL": "http://backend:9090"}
    s = Settings.from_env(env)
    assert (s.label_studio_url, s.model_dir, s.model_name) == ("http://ls:8080", Path("/data/m"), "some/model")
    assert s.auth_enabled and s.min_annotations_to_train == 5 and s.use_uncertainty_sampling
    assert s.strategy == "margin" and s.push_chunk_size == 100 and s.log_level == "DEBUG"
    assert "k" * 40 not in repr(s) and "'p'" not in repr(s)
    pub = s.public()
    assert pub["label_studio_api_key"] == "set" and pub["basic_auth_pass"] == "set"


@pytest.mark.parametrize("env, words", [
    ({"MIN_ANNOTATIONS_TO_TRAIN": "zero"}, "MIN_ANNOTATIONS_TO_TRAIN"),
    ({"MIN_ANNOTATIONS_TO_TRAIN": "0"}, ">= 1"),
    ({"USE_UNCERTAINTY_SAMPLING": "maybe"}, "USE_UNCERTAINTY_SAMPLING"),
    ({"STRATEGY": "magic"}, "STRATEGY"),
    ({"BASIC_AUTH_USER": "u"}, "BASIC_AUTH_PASS"),
    ({"LS_TIMEOUT": "-1"}, "LS_TIMEOUT"),
])
def test_bad_values_name_the_variable(env, words):
    with pytest.raises(ConfigError, match=words):
        Settings.from_env(env)


def test_strategy_specs_with_options_are_accepted():
    assert Settings.from_env({"STRATEGY": "disal:sign=descent"}).strategy == "disal:sign=descent"


def test_the_security_limits_are_read_from_the_environment():
    from disal.config import Settings

    env = {"PREDICT_CONCURRENCY": "1", "PREDICT_WAIT_S": "0.2", "PREDICT_MAX_TASKS": "7", "MAX_PREDICT_BYTES": "4096",
           "MAX_WEBHOOK_BYTES": "2048", "MAX_REQUEST_BYTES": "1024", "MAX_JSON_DEPTH": "9", "REQUEST_TIMEOUT_S": "3",
           "SETUP_VERIFY_TIMEOUT_S": "1.5"}
    s = Settings.from_env(env)
    assert (s.predict_concurrency, s.predict_wait_s, s.predict_max_tasks, s.max_predict_bytes, s.max_webhook_bytes,
            s.max_request_bytes, s.max_json_depth, s.request_timeout_s, s.setup_verify_timeout_s) == \
        (1, 0.2, 7, 4096, 2048, 1024, 9, 3.0, 1.5)
