"""disal.config: every setting from the environment, validated, secrets kept out of repr and /health."""

from __future__ import annotations

from pathlib import Path

import pytest

from disal.config import ConfigError, Settings


def test_defaults():
    s = Settings.from_env({})
    assert s.strategy == "disal" and s.min_annotations_to_train == 1 and s.model_dir == Path("model_dir")
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
