"""A backend in the mlp regime with warm start (TRAIN_MODE=mlp, WARM_START=true) against the real
Label Studio: annotations train a one-hidden-layer head, its DISAL queue is pushed and served by
/next, and after a restart the next round starts from the saved model."""

from __future__ import annotations

import numpy as np
import pytest

from disal.data import load_bbc
from scripts.local_services import BackendServer, free_port

from .helpers import annotate, health, tasks_of, wait_idle_version

N_TASKS = 30
ENV = {"TRAIN_MODE": "mlp", "WARM_START": "true", "BASIC_AUTH_USER": "", "BASIC_AUTH_PASS": "",
       "USE_UNCERTAINTY_SAMPLING": "true", "LOG_LEVEL": "INFO"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mlp_state") / "model_dir"


def test_the_mlp_regime_with_warm_start_on_a_real_label_studio(label_studio, model_dir):
    ds = load_bbc()
    idx = np.random.default_rng(5).choice(len(ds.train_texts), N_TASKS, replace=False)
    cfg = ('<View><Text name="text" value="$text"/><Choices name="topic" toName="text" choice="single">'
           + "".join(f'<Choice value="{c}"/>' for c in ds.classes) + "</Choices></View>")
    gold = {}
    port = free_port()
    backend = BackendServer(model_dir, port, label_studio, extra_env=ENV)
    backend.start()
    try:
        with label_studio.client() as c:
            pid = c.post("/api/projects/", json={"title": "mlp regime e2e", "label_config": cfg,
                                                 "start_training_on_annotation_update": True}).json()["id"]
            r = c.post(f"/api/projects/{pid}/import",
                       json=[{"text": ds.train_texts[i], "gold": ds.classes[int(ds.train_labels[i])]} for i in idx])
            assert r.status_code == 201, r.text
            r = c.post("/api/ml/", json={"url": backend.url, "project": pid, "title": "DISAL mlp"})
            assert r.status_code == 201, r.text
        seen = (None, wait_idle_version(backend, pid, (None,), auth=None)["model_version"])
        gold = {t["id"]: t["data"]["gold"] for t in tasks_of(label_studio, pid)}
        for _ in range(4):  # label what /next serves until a classifier exists and has retrained once
            with label_studio.client() as c:
                tid = c.get(f"/api/projects/{pid}/next").json()["id"]
            annotate(label_studio, tid, [gold[tid]], "topic", "text")
            h = wait_idle_version(backend, pid, seen, auth=None)
            seen += (h["model_version"],)
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
        with label_studio.client() as c:
            tid = c.get(f"/api/projects/{pid}/next").json()["id"]
        annotate(label_studio, tid, [gold[tid]], "topic", "text")
        h = wait_idle_version(backend, pid, seen, auth=None)
        assert h["regime"] == "mlp"
        assert f"warm-started from {seen[-1]}" in backend.log.read_text()
        tasks = tasks_of(label_studio, pid)
        with label_studio.client() as c:
            version = c.get(f"/api/projects/{pid}").json()["model_version"]
        scores = {t["id"]: p["score"] for t in tasks if not t["is_labeled"]
                  for p in t["predictions"] if p["model_version"] == version}
        assert len(scores) == N_TASKS - 5
        with label_studio.client() as c:
            served = c.get(f"/api/projects/{pid}/next").json()["id"]
        assert scores[served] == min(scores.values()), "Label Studio serves the head of the mlp DISAL queue"
    finally:
        backend.stop()
