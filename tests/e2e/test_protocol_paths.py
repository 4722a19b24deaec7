"""The protocol paths Label Studio itself drives, against a real Label Studio 1.23.2 and the backend
under gunicorn (basic auth on): new tasks imported into a live project (TASKS_CREATED), the
"Start training" button (START_TRAINING), the Data Manager's "Retrieve predictions" (LS -> /predict
with the credentials from the connect form), and /setup, /predict, /health and project.model_version
agreeing on one version before and after a backend restart.

Its own project (second in the session's Label Studio); the tests run in file order and build on
each other. Timings are printed, never asserted.
"""

from __future__ import annotations

import re
import time

import httpx
import numpy as np
import pytest

from disal.data import load_bbc

from .helpers import BASIC_AUTH, annotate, health, tasks_of, wait_for, wait_idle_version

N_TASKS = 40
N_NEW = 6
STATE: dict = {}


def metric(backend, name: str, **labels) -> float:
    """Sum of a Prometheus series from /metrics (0 when absent)."""
    text = httpx.get(backend.url + "/metrics", auth=BASIC_AUTH, timeout=10).text
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? ([0-9.eE+-]+)$", line)
        if not m:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(got.get(k) == str(v) for k, v in labels.items()):
            total += float(m.group(2))
    return total


def project_version(ls, pid: int) -> str:
    with ls.client() as c:
        return c.get(f"/api/projects/{pid}").json()["model_version"]


def has_current_prediction(task: dict, version: str) -> bool:
    return any(p["model_version"] == version for p in task["predictions"])


def label_config(classes) -> str:
    return ('<View><Text name="body" value="$body"/><Choices name="section" toName="body" choice="single">'
            + "".join(f'<Choice value="{c}"/>' for c in classes) + "</Choices></View>")


@pytest.fixture(scope="module")
def bbc():
    ds = load_bbc()
    rng = np.random.default_rng(7)
    idx = [int(i) for i in rng.choice(len(ds.train_texts), N_TASKS + N_NEW, replace=False)]
    rows = [{"body": ds.train_texts[i], "gold": ds.classes[int(ds.train_labels[i])]} for i in idx]
    return ds.classes, rows


@pytest.fixture(scope="module")
def project(label_studio, backend, bbc):
    """A second project (text field `body`, control `section`), connected with basic auth, first queue pushed."""
    classes, rows = bbc
    with label_studio.client() as c:
        r = c.post("/api/projects/", json={"title": "BBC News e2e protocol", "label_config": label_config(classes),
                                           "start_training_on_annotation_update": True})  # annotations retrain
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        r = c.post(f"/api/projects/{pid}/import", json=rows[:N_TASKS])
        assert r.status_code == 201, r.text
        t0 = time.time()
        r = c.post("/api/ml/", json={"url": backend.url, "project": pid, "title": "DISAL protocol",
                                     "auth_method": "BASIC_AUTH", "basic_auth_user": BASIC_AUTH[0],
                                     "basic_auth_pass": BASIC_AUTH[1]})
        assert r.status_code == 201, r.text
        STATE["ml_id"] = r.json()["id"]
    h = wait_idle_version(backend, pid, (None,))
    print(f"\n[protocol] connect -> first queue of {N_TASKS} tasks in {time.time() - t0:.1f}s ({h['model_version']})")
    return pid


def test_imported_tasks_get_a_prediction_of_the_current_version(label_studio, backend, project, bbc):
    """TASKS_CREATED: the backend scores tasks imported into a live project and pushes them."""
    before = metric(backend, "disal_webhook_events_total", action="TASKS_CREATED") or \
        metric(backend, "disal_webhook_events", action="TASKS_CREATED")
    t0 = time.time()
    with label_studio.client() as c:
        r = c.post(f"/api/projects/{project}/import", json=bbc[1][N_TASKS:])
        assert r.status_code == 201, r.text

    def all_scored():
        version = project_version(label_studio, project)
        tasks = tasks_of(label_studio, project)
        missing = [t["id"] for t in tasks if not has_current_prediction(t, version)]
        return (len(tasks) == N_TASKS + N_NEW and not missing) or None

    wait_for(all_scored, 180, "a prediction of project.model_version on every task, the imported ones included")
    after = metric(backend, "disal_webhook_events_total", action="TASKS_CREATED") or \
        metric(backend, "disal_webhook_events", action="TASKS_CREATED")
    print(f"\n[protocol] import of {N_NEW} tasks -> all scored in {time.time() - t0:.1f}s")
    assert after > before, "Label Studio's TASKS_CREATED webhook reached the backend"


def test_annotations_of_two_classes_train_a_head(label_studio, backend, project):
    tasks = tasks_of(label_studio, project)
    first = tasks[0]
    second = next(t for t in tasks if t["data"]["gold"] != first["data"]["gold"])
    seen = (health(backend, project).get("model_version"),)
    for t in (first, second):
        t0 = time.time()
        annotate(label_studio, t["id"], [t["data"]["gold"]], "section", "body")
        h = wait_idle_version(backend, project, seen)
        seen += (h["model_version"],)
        print(f"\n[protocol] annotation -> pushed queue {time.time() - t0:.1f}s ({h['model_version']})")
    assert h["kind"] == "head" and h["cold_start"] is False, h
    STATE["labeled"] = [first["id"], second["id"]]
    STATE["version"] = h["model_version"]


def test_start_training_from_label_studio_pushes_a_new_version(label_studio, backend, project):
    """The model card's "Start Training" (POST /api/ml/{id}/train) sends START_TRAINING: a forced round."""
    previous = STATE["version"]
    t0 = time.time()
    with label_studio.client() as c:
        r = c.post(f"/api/ml/{STATE['ml_id']}/train")
        assert r.status_code == 200, r.text
    h = wait_idle_version(backend, project, (previous,), timeout=300)
    print(f"\n[protocol] START_TRAINING -> pushed queue {time.time() - t0:.1f}s ({h['model_version']})")
    assert project_version(label_studio, project) == h["model_version"]
    unlabeled = [t for t in tasks_of(label_studio, project) if not t["is_labeled"]]
    assert unlabeled and all(has_current_prediction(t, h["model_version"]) for t in unlabeled)
    STATE["version"] = h["model_version"]


def test_retrieve_predictions_goes_through_basic_auth_to_predict(label_studio, backend, project):
    """Data Manager "Retrieve Predictions": Label Studio POSTs the selected tasks that lack a prediction of
    the current version (here the labeled ones) to /predict, with the connect form's credentials."""
    before = metric(backend, "disal_predicted_tasks_total") or metric(backend, "disal_predicted_tasks")
    ids = [t["id"] for t in tasks_of(label_studio, project)]
    t0 = time.time()
    with label_studio.client() as c:
        r = c.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
                   json={"selectedItems": {"all": False, "included": ids}})
        assert r.status_code == 200, r.text
    ms = (time.time() - t0) * 1000
    after = metric(backend, "disal_predicted_tasks_total") or metric(backend, "disal_predicted_tasks")
    version = project_version(label_studio, project)
    by_id = {t["id"]: t for t in tasks_of(label_studio, project)}
    print(f"\n[protocol] Retrieve Predictions over {len(ids)} tasks answered in {ms:.0f} ms; "
          f"/predict answered {after - before:.0f} tasks")
    assert after - before >= len(STATE["labeled"]), "Label Studio's /predict call reached the backend"
    for tid in STATE["labeled"]:
        preds = [p for p in by_id[tid]["predictions"] if p["model_version"] == version]
        assert preds, f"labeled task {tid} got a prediction of {version} from /predict"
        assert preds[0]["result"][0]["from_name"] == "section"


def setup_version(backend, label_studio, pid: int) -> str:
    with label_studio.client() as c:
        proj = c.get(f"/api/projects/{pid}").json()
    created = proj.get("created_at", "")
    r = httpx.post(backend.url + "/setup", auth=BASIC_AUTH, timeout=60,
                   json={"project": f"{pid}.{created}", "schema": proj["label_config"],
                         "hostname": label_studio.url, "access_token": label_studio.token, "extra_params": {}})
    assert r.status_code == 200, r.text
    return r.json()["model_version"]


def predict_version(backend, label_studio, pid: int) -> tuple[str, float]:
    task = next(t for t in tasks_of(label_studio, pid) if not t["is_labeled"])
    t0 = time.perf_counter()
    r = httpx.post(backend.url + "/predict", auth=BASIC_AUTH, timeout=60,
                   json={"tasks": [{"id": task["id"], "data": task["data"]}], "project": f"{pid}.0",
                         "label_config": project_config(label_studio, pid), "params": {"context": None}})
    ms = (time.perf_counter() - t0) * 1000
    assert r.status_code == 200, r.text
    return r.json()["results"][0]["model_version"], ms


def project_config(ls, pid: int) -> str:
    with ls.client() as c:
        return c.get(f"/api/projects/{pid}").json()["label_config"]


def test_setup_predict_health_and_project_agree_across_a_restart(label_studio, backend, project):
    version = STATE["version"]
    assert project_version(label_studio, project) == version
    assert health(backend, project)["model_version"] == version
    assert setup_version(backend, label_studio, project) == version
    assert predict_version(backend, label_studio, project)[0] == version
    t0 = time.time()
    backend.stop()
    backend.start()
    print(f"\n[protocol] backend restart to /health 200 in {time.time() - t0:.1f}s")
    assert health(backend, project)["model_version"] == version
    assert setup_version(backend, label_studio, project) == version
    got, ms = predict_version(backend, label_studio, project)
    print(f"[protocol] first /predict of one task after the restart: {ms:.0f} ms")
    assert got == version
    # Label Studio's own view of the connection (GET /api/ml/{id} repeats /health and /setup)
    with label_studio.client() as c:
        r = c.get(f"/api/ml/{STATE['ml_id']}")
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "CO", r.json()  # connected
    assert project_version(label_studio, project) == version
