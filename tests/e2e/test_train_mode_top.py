"""A backend in the top-N regime (TRAIN_MODE=top-2, WARM_START=true) against the real Label Studio,
with the real packaged MiniLM: annotations fine-tune a private copy of its last two blocks from the
project's hidden-state cache, the DISAL queue is pushed and served by /next, /health reports the
cache, and after a restart the saved blocks serve at once and warm-start the next round."""

from __future__ import annotations

import numpy as np
import pytest

from disal.data import load_bbc
from scripts.local_services import BackendServer, free_port

from .helpers import annotate, health, tasks_of, wait_idle_version

N_TASKS = 30
ENV = {"TRAIN_MODE": "top-2", "WARM_START": "true", "BASIC_AUTH_USER": "", "BASIC_AUTH_PASS": "",
       "USE_UNCERTAINTY_SAMPLING": "true", "LOG_LEVEL": "INFO"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("top_state") / "model_dir"


def served_is_queue_head(label_studio, pid: int) -> None:
    tasks = tasks_of(label_studio, pid)
    with label_studio.client() as c:
        version = c.get(f"/api/projects/{pid}").json()["model_version"]
        served = c.get(f"/api/projects/{pid}/next").json()["id"]
    scores = {t["id"]: p["score"] for t in tasks if not t["is_labeled"]
              for p in t["predictions"] if p["model_version"] == version}
    assert len(scores) == sum(not t["is_labeled"] for t in tasks)
    assert scores[served] == min(scores.values()), "Label Studio serves the head of the top-2 DISAL queue"


def test_the_top_n_regime_with_warm_start_on_a_real_label_studio(label_studio, model_dir):
    ds = load_bbc()
    idx = np.random.default_rng(6).choice(len(ds.train_texts), N_TASKS, replace=False)
    cfg = ('<View><Text name="text" value="$text"/><Choices name="topic" toName="text" choice="single">'
           + "".join(f'<Choice value="{c}"/>' for c in ds.classes) + "</Choices></View>")
    port = free_port()
    backend = BackendServer(model_dir, port, label_studio, extra_env=ENV)
    backend.start()
    try:
        with label_studio.client() as c:
            pid = c.post("/api/projects/", json={"title": "top-2 regime e2e", "label_config": cfg,
                                                 "start_training_on_annotation_update": True}).json()["id"]
            r = c.post(f"/api/projects/{pid}/import",
                       json=[{"text": ds.train_texts[i], "gold": ds.classes[int(ds.train_labels[i])]} for i in idx])
            assert r.status_code == 201, r.text
            r = c.post("/api/ml/", json={"url": backend.url, "project": pid, "title": "DISAL top-2"})
            assert r.status_code == 201, r.text
        seen = (None, wait_idle_version(backend, pid, (None,), auth=None)["model_version"])
        gold = {t["id"]: t["data"]["gold"] for t in tasks_of(label_studio, pid)}
        for _ in range(4):  # label what /next serves until a classifier exists and has retrained once
            with label_studio.client() as c:
                tid = c.get(f"/api/projects/{pid}/next").json()["id"]
            annotate(label_studio, tid, [gold[tid]], "topic", "text")
            h = wait_idle_version(backend, pid, seen, auth=None)
            seen += (h["model_version"],)
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
        with label_studio.client() as c:
            tid = c.get(f"/api/projects/{pid}/next").json()["id"]
        annotate(label_studio, tid, [gold[tid]], "topic", "text")
        h = wait_idle_version(backend, pid, seen, auth=None)
        assert h["regime"] == "top-2"
        log = backend.log.read_text()
        assert f"warm-started from {seen[-1]}" in log
        assert "hidden states below the top 2 block(s): encoded" not in log, "the cache on disk served the restart"
        served_is_queue_head(label_studio, pid)
    finally:
        backend.stop()
