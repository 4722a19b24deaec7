"""A backend in the mlp regime with warm start (TRAIN_MODE=mlp, WARM_START=true) against the real
Label Studio: annotations train a one-hidden-layer head, its DISAL queue is pushed and served by
/next, and after a restart the next round starts from the saved model."""

from __future__ import annotations

import pytest

from scripts.local_services import BackendServer, free_port

from .helpers import connect_bbc_project, health, label_what_next_serves, served_is_queue_head

N_TASKS = 30
ENV = {"TRAIN_MODE": "mlp", "WARM_START": "true", "BASIC_AUTH_USER": "", "BASIC_AUTH_PASS": "",
       "USE_UNCERTAINTY_SAMPLING": "true", "LOG_LEVEL": "INFO"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mlp_state") / "model_dir"


def test_the_mlp_regime_with_warm_start_on_a_real_label_studio(label_studio, model_dir):
    port = free_port()
    backend = BackendServer(model_dir, port, label_studio, extra_env=ENV)
    backend.start()
    try:
        pid, gold, seen = connect_bbc_project(label_studio, backend, "mlp regime e2e", N_TASKS, seed=5)
        # label what /next serves until a classifier exists and has retrained once
        h, seen = label_what_next_serves(label_studio, backend, pid, gold, seen, 4)
        assert h["kind"] == "head" and h["regime"] == "mlp", h
        top = health(backend, auth=None)
        assert top["train_mode"] == "mlp" and top["warm_start"] is True
    finally:
        backend.stop()
    assert "mlp trained on" in backend.log.read_text()

    # restarted: serves the saved mlp version at once, and the next round warm-starts from it
    backend = BackendServer(model_dir, port, label_studio, extra_env=ENV,  # same URL: Label Studio's ML backend entry
                            log=model_dir.parent / "backend-restarted.log")
    backend.start()
    try:
        assert health(backend, pid, auth=None)["model_version"] == seen[-1]
        h, seen = label_what_next_serves(label_studio, backend, pid, gold, seen, 1)
        assert h["regime"] == "mlp"
        assert f"warm-started from {seen[-2]}" in backend.log.read_text()
        served_is_queue_head(label_studio, pid)
    finally:
        backend.stop()
