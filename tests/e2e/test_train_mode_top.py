"""A backend in the top-N regime (TRAIN_MODE=top-2, WARM_START=true) against the real Label Studio,
with the real packaged MiniLM: annotations fine-tune a private copy of its last two blocks from the
project's hidden-state cache, the DISAL queue is pushed and served by /next, /health reports the
cache, and after a restart the saved blocks serve at once and warm-start the next round."""

from __future__ import annotations

import pytest

from scripts.local_services import BackendServer, free_port

from .helpers import connect_bbc_project, health, label_what_next_serves, served_is_queue_head

N_TASKS = 30
ENV = {"TRAIN_MODE": "top-2", "WARM_START": "true", "BASIC_AUTH_USER": "", "BASIC_AUTH_PASS": "",
       "USE_UNCERTAINTY_SAMPLING": "true", "LOG_LEVEL": "INFO"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("top_state") / "model_dir"


def test_the_top_n_regime_with_warm_start_on_a_real_label_studio(label_studio, model_dir):
    port = free_port()
    backend = BackendServer(model_dir, port, label_studio, extra_env=ENV)
    backend.start()
    try:
        pid, gold, seen = connect_bbc_project(label_studio, backend, "top-2 regime e2e", N_TASKS, seed=6)
        # label what /next serves until a classifier exists and has retrained once
        h, seen = label_what_next_serves(label_studio, backend, pid, gold, seen, 4)
        assert h["kind"] == "head" and h["regime"] == "top-2", h
        assert h["hidden_cache"]["tasks"] == N_TASKS and h["hidden_cache"]["bytes_per_task"] > 0, h
        top = health(backend, auth=None)
        assert top["train_mode"] == "top-2" and top["warm_start"] is True
        served_is_queue_head(label_studio, pid)
    finally:
        backend.stop()
    log = backend.log.read_text()
    assert "top-2 trained on" in log and "hidden states below the top 2 block(s): encoded" in log

    # restarted: serves the saved top-2 version at once, and the next round warm-starts from it
    backend = BackendServer(model_dir, port, label_studio, extra_env=ENV,  # same URL: Label Studio's ML backend entry
                            log=model_dir.parent / "backend-restarted.log")
    backend.start()
    try:
        assert health(backend, pid, auth=None)["model_version"] == seen[-1]
        h, seen = label_what_next_serves(label_studio, backend, pid, gold, seen, 1)
        assert h["regime"] == "top-2"
        log = backend.log.read_text()
        assert f"warm-started from {seen[-2]}" in log
        assert "hidden states below the top 2 block(s): encoded" not in log, "the cache on disk served the restart"
        served_is_queue_head(label_studio, pid)
    finally:
        backend.stop()
