"""A second backend process configured the other way round: MODEL_NAME = a local folder (the tiny random
BERT from tests/conftest.py), no basic auth, uncertainty sampling off, and a MULTIPLE-choice
`<Choices>` project. Checks that the encoder from MODEL_NAME is the one serving, that a round trains on
multi-label annotations and pushes a queue over every unlabeled task, that /versions lists the pushed
versions, and that sampling is left alone when USE_UNCERTAINTY_SAMPLING is off."""

from __future__ import annotations

import time

import httpx
import pytest

from disal.data import load_bbc
from scripts.local_services import BackendServer, free_port

from .helpers import health, wait_idle_version

N_TASKS = 30


@pytest.fixture(scope="module")
def tiny_backend(tmp_path_factory, label_studio, tiny_model_dir):
    server = BackendServer(tmp_path_factory.mktemp("tiny_state") / "model_dir", free_port(), label_studio,
                           extra_env={"MODEL_NAME": str(tiny_model_dir), "BASIC_AUTH_USER": "", "BASIC_AUTH_PASS": "",
                                      "USE_UNCERTAINTY_SAMPLING": "false", "LOG_LEVEL": "INFO"})
    server.start()
    yield server
    server.stop()


def test_multiple_choice_project_on_a_model_name_encoder(label_studio, tiny_backend, tiny_model_dir):
    ds = load_bbc()
    classes = ds.classes
    cfg = ('<View><Text name="text" value="$text"/><Choices name="tags" toName="text" choice="multiple">'
           + "".join(f'<Choice value="{c}"/>' for c in classes) + "</Choices></View>")
    with label_studio.client() as c:
        r = c.post("/api/projects/", json={"title": "multi-label e2e (MODEL_NAME)", "label_config": cfg,
                                           "start_training_on_annotation_update": True})  # annotations retrain
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        rows = [{"text": ds.train_texts[i]} for i in range(N_TASKS)]
        assert c.post(f"/api/projects/{pid}/import", json=rows).status_code == 201
        sampling_before = c.get(f"/api/projects/{pid}").json()["sampling"]
        r = c.post("/api/ml/", json={"url": tiny_backend.url, "project": pid, "title": "DISAL tiny"})
        assert r.status_code == 201, r.text

    t0 = time.time()
    first = wait_idle_version(tiny_backend, pid, (None,), auth=None)
    print(f"\n[tiny] connect -> first queue {time.time() - t0:.1f}s ({first['model_version']})")
    h = health(tiny_backend, auth=None)
    assert h["encoder"] == str(tiny_model_dir), "the encoder named by MODEL_NAME serves"

    with label_studio.client() as c:
        tasks = c.get("/api/tasks/", params={"project": pid, "page_size": 100}).json()["tasks"]
    seen = (first["model_version"],)
    for task, labels in ((tasks[0], [classes[0]]), (tasks[1], [classes[1], classes[2]])):
        t0 = time.time()
        with label_studio.client() as c:
            r = c.post(f"/api/tasks/{task['id']}/annotations/",
                       json={"result": [{"from_name": "tags", "to_name": "text", "type": "choices",
                                         "value": {"choices": labels}}]})
            assert r.status_code == 201, r.text
        p = wait_idle_version(tiny_backend, pid, seen, auth=None)
        seen += (p["model_version"],)
        print(f"[tiny] annotation {labels} -> pushed queue {time.time() - t0:.1f}s ({p['model_version']}, {p['kind']})")
    assert p["kind"] == "head", p

    with label_studio.client() as c:
        proj = c.get(f"/api/projects/{pid}").json()
        tasks = c.get("/api/tasks/", params={"project": pid, "fields": "all", "page_size": 100}).json()["tasks"]
    assert proj["model_version"] == p["model_version"]
    assert proj["sampling"] == sampling_before, "USE_UNCERTAINTY_SAMPLING=false leaves sampling alone"
    unlabeled = [t for t in tasks if not t["is_labeled"]]
    assert len(unlabeled) == N_TASKS - 2
    for t in unlabeled:
        mine = [x for x in t["predictions"] if x["model_version"] == proj["model_version"]]
        assert mine, f"task {t['id']} has no prediction of {proj['model_version']}"
        assert 0.0 <= mine[0]["score"] <= 1.0
        for item in mine[0]["result"]:
            assert item["from_name"] == "tags" and set(item["value"]["choices"]) <= set(classes)

    versions = httpx.get(tiny_backend.url + "/versions", params={"project": str(pid)}, timeout=10).json()
    assert versions["model_version"] == proj["model_version"]
    assert set(seen) <= set(versions["versions"]), versions
