"""The backend's non-default regimes with warm start against the real Label Studio and the real
packaged MiniLM: TRAIN_MODE=mlp (a one-hidden-layer head) and TRAIN_MODE=top-2 (a private copy of
the encoder's last two blocks + head, fine-tuned from the project's hidden-state cache).
Annotations train the regime, its DISAL queue is pushed and served by /next, and after a restart
the saved version serves at once and warm-starts the next round (top-2: from the cache on disk)."""

from __future__ import annotations

import pytest

from scripts.local_services import BackendServer, free_port

from .helpers import connect_bbc_project, health, label_what_next_serves, served_is_queue_head

N_TASKS = 30
BASE_ENV = {"WARM_START": "true", "BASIC_AUTH_USER": "", "BASIC_AUTH_PASS": "", "USE_UNCERTAINTY_SAMPLING": "true",
            "LOG_LEVEL": "INFO"}
TOP_FILL = "hidden states below the top 2 block(s): encoded"


@pytest.mark.parametrize("regime, seed", [("mlp", 5), ("top-2", 6)])
def test_a_regime_with_warm_start_on_a_real_label_studio(label_studio, tmp_path, regime, seed):
    env = {**BASE_ENV, "TRAIN_MODE": regime}
    model_dir = tmp_path / "model_dir"
    port = free_port()
    backend = BackendServer(model_dir, port, label_studio, extra_env=env)
    backend.start()
    try:
        pid, gold, seen = connect_bbc_project(label_studio, backend, f"{regime} regime e2e", N_TASKS, seed=seed)
        # label what /next serves until a classifier exists and has retrained once
        h, seen = label_what_next_serves(label_studio, backend, pid, gold, seen, 4)
        assert h["kind"] == "head" and h["regime"] == regime, h
        top = health(backend, auth=None)
        assert top["train_mode"] == regime and top["warm_start"] is True
        if regime == "top-2":
            assert h["hidden_cache"]["tasks"] == N_TASKS and h["hidden_cache"]["bytes_per_task"] > 0, h
        served_is_queue_head(label_studio, pid)
    finally:
        backend.stop()
    log = backend.log.read_text()
    assert f"{regime} trained on" in log
    assert (TOP_FILL in log) == (regime == "top-2")

    # restarted: serves the saved version at once, and the next round warm-starts from it
    backend = BackendServer(model_dir, port, label_studio, extra_env=env,  # same URL: Label Studio's ML backend entry
                            log=tmp_path / "backend-restarted.log")
    backend.start()
    try:
        assert health(backend, pid, auth=None)["model_version"] == seen[-1]
        h, seen = label_what_next_serves(label_studio, backend, pid, gold, seen, 1)
        assert h["regime"] == regime
        log = backend.log.read_text()
        assert f"warm-started from {seen[-2]}" in log
        assert TOP_FILL not in log, "top-2: the hidden states on disk served the restart"
        served_is_queue_head(label_studio, pid)
    finally:
        backend.stop()
