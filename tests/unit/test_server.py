"""The protocol routes with Flask's test client: answers, validation (4xx with a message), auth, metrics."""

from __future__ import annotations

import base64
import logging
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_labelstudio import (LABELS, connect, BACKEND_URL, TOKEN, annotation_event, make_backend,  # noqa: E402
                              setup_payload, topic_texts)


def auth_header(user="u", pw="p"):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}


# -- /health -----------------------------------------------------------------------------------
def test_health_is_up_before_any_project(backend):
    client, _ = backend
    r = client.get("/health")
    assert r.status_code == 200 and r.get_json()["status"] == "UP" and r.get_json()["projects"] == {}


# -- /setup ------------------------------------------------------------------------------------
def test_setup_answers_model_version_and_builds_the_cold_start_queue(backend, fake):
    client, model = backend
    r = connect(client, model, fake)
    assert r.get_json()["model_version"] is None  # nothing trained yet at the moment of the call
    version = fake.project["model_version"]
    assert version.startswith("disal-0001-coldstart-")
    preds = fake.predictions_of(version)
    assert sorted(preds) == sorted(fake.tasks)  # every unlabeled task is in the queue
    assert sorted(p["score"] for p in preds.values())[0] == 0.0
    assert all(p["result"] == [] for p in preds.values())  # no classifier yet: no predicted choice
    health = client.get("/health").get_json()["projects"]["1"]
    assert health["cold_start"] is True and "CoreSet" in health["note"] and health["state"] == "idle"
    assert [v["data"]["title"] for v in fake.views] == ["DISAL queue"]
    # a second /setup (Label Studio repeats it) answers the version and does not rebuild anything
    n_imports = len(fake.calls("POST", r"/api/projects/1/import/predictions"))
    assert client.post("/setup", json=setup_payload(fake)).get_json()["model_version"] == version
    assert model.jobs.wait_idle(1, 10)
    assert len(fake.calls("POST", r"/api/projects/1/import/predictions")) == n_imports


@pytest.mark.parametrize("schema, words", [
    ('<View><Image name="i" value="$img"/><RectangleLabels name="r" toName="i"><Label value="x"/>'
     '</RectangleLabels></View>', "RectangleLabels"),
    ('<View><Text name="t" value="$text"/><Labels name="l" toName="t"><Label value="x"/></Labels></View>', "Labels"),
    # images are a project type now (tests/unit/test_task_modules.py); audio is not (yet)
    ('<View><Audio name="a" value="$audio"/><Choices name="c" toName="a"><Choice value="a"/><Choice value="b"/>'
     '</Choices></View>', "Audio named 'a', which no project type reads"),
    ('<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>',
     "at least 2"),
    ("<View><Text", "not valid XML"),
])
def test_setup_rejects_unsupported_configs_naming_what_is_supported(backend, fake, schema, words):
    client, _ = backend
    r = client.post("/setup", json={"project": "1.1", "schema": schema})
    assert r.status_code == 422
    msg = r.get_json()["message"]
    assert words in msg and "<Choices>" in msg and "<Text>" in msg and "<Image>" in msg


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"schema": "<View/>"}', 400, "missing 'project'"),
    (b'{"project": "abc", "schema": "<View/>"}', 400, "not a Label Studio project id"),
    (b'{"project": "1.2"}', 400, "missing 'schema'"),
])
def test_setup_bad_input(backend, body, status, words):
    client, _ = backend
    r = client.post("/setup", data=body, content_type="application/json")
    assert r.status_code == status and words in r.get_json()["message"]


# -- /predict ----------------------------------------------------------------------------------
def test_predict_before_any_version_says_so(backend, fake):
    client, model = backend
    model.store(1).save_info({"spec": None})
    r = client.post("/predict", json={"tasks": [fake.tasks[1]], "project": "1.1", "label_config": fake.label_config})
    assert r.status_code == 200
    assert r.get_json()["results"] == [] and "no model version" in r.get_json()["message"]


def test_predict_answers_every_task_in_order(backend, fake):
    client, model = backend
    connect(client, model, fake)
    for tid, (_, topic) in zip(range(1, 7), topic_texts(6)):
        fake.annotate(tid, [topic])
    client.post("/webhook", json=annotation_event(fake, 6))
    assert model.jobs.wait_idle(1, 30)
    version = fake.project["model_version"]
    assert "coldstart" not in version
    tasks = [fake.tasks[t] for t in (12, 7, 30)] + [{"id": 999, "data": {"text": "football goal team win"}}]
    r = client.post("/predict", json={"tasks": tasks, "project": "1.1", "label_config": fake.label_config,
                                      "params": {"login": None, "password": None, "context": None}})
    assert r.status_code == 200
    out = r.get_json()
    assert out["model_version"] == version and len(out["results"]) == 4
    pushed = fake.predictions_of(version)
    for task, res in zip(tasks[:3], out["results"][:3]):
        assert res["model_version"] == version
        assert res["score"] == pytest.approx(pushed[task["id"]]["score"])  # same priority as the pushed queue
        assert res["result"][0]["value"]["choices"][0] in LABELS
        assert 0.0 < res["result"][0]["score"] <= 1.0
    assert 0.0 <= out["results"][3]["score"] <= 1.0  # a task outside the pool is placed into the queue


@pytest.mark.parametrize("tasks, status, words", [
    ([{"id": 1, "data": {"body": "x"}}], 422, "no text field 'text'"),
    ([{"id": 1, "data": {"text": ""}}], 422, "empty"),
    ([{"id": 1, "data": {"text": 5}}], 422, "not text"),
    ([{"id": 1}], 422, "no 'data'"),
    (["nope"], 422, "not a task object"),
    ({"id": 1}, 400, "must be a list"),
])
def test_predict_bad_tasks(backend, fake, tasks, status, words):
    client, model = backend
    connect(client, model, fake)
    r = client.post("/predict", json={"tasks": tasks, "project": "1.1", "label_config": fake.label_config})
    assert r.status_code == status and words in r.get_json()["message"]


def test_predict_unknown_project_without_config_is_404(backend, fake):
    client, _ = backend
    r = client.post("/predict", json={"tasks": [fake.tasks[1]], "project": "77.1"})
    assert r.status_code == 404 and "unknown project 77" in r.get_json()["message"]


def test_predict_truncates_huge_texts_and_answers(backend, fake):
    client, model = backend
    connect(client, model, fake)
    huge = {"id": 500, "data": {"text": "football " * 200_000}}
    r = client.post("/predict", json={"tasks": [huge], "project": "1.1", "label_config": fake.label_config})
    assert r.status_code == 200 and len(r.get_json()["results"]) == 1


# -- /webhook ----------------------------------------------------------------------------------
def test_webhook_answers_in_milliseconds_and_queues_a_job(backend, fake):
    client, model = backend
    connect(client, model, fake)
    fake.annotate(1, ["sport"])
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        r = client.post("/webhook", json=annotation_event(fake, 1))
        times.append(time.perf_counter() - t0)
        assert r.status_code == 201 and r.get_json()["status"] in ("queued", "coalesced")
    assert max(times) < 0.1, times
    assert model.jobs.wait_idle(1, 30)


@pytest.mark.parametrize("action", ["PROJECT_UPDATED", "TASKS_DELETED", "ANNOTATION_FOO"])
def test_other_events_are_acknowledged_and_ignored(backend, action):
    client, model = backend
    r = client.post("/webhook", json={"action": action, "project": {"id": 1}})
    assert r.status_code == 201 and r.get_json() == {"status": "ignored", "action": action}
    assert model.jobs.projects() == []


@pytest.mark.parametrize("payload, status, words", [
    ({"project": {"id": 1}}, 400, "no 'action'"),
    ({"action": "ANNOTATION_CREATED"}, 400, "missing 'project'"),
    ({"action": "ANNOTATION_CREATED", "project": {"id": 1}}, 400, "missing 'annotation'"),
    ({"action": "ANNOTATIONS_DELETED", "project": {"id": 1}}, 400, "missing 'annotations'"),
    ({"action": "START_TRAINING", "project": {"id": 55}}, 404, "unknown project 55"),
    ({"action": "TASKS_CREATED", "project": {"id": 1}, "tasks": [{"data": {}}]}, 400, "integer 'id'"),
    ({"action": "START_TRAINING", "project": {"title": "no id"}}, 400, "missing project id"),
])
def test_webhook_bad_input(backend, fake, payload, status, words):
    client, model = backend
    connect(client, model, fake)
    r = client.post("/webhook", json=payload)
    assert r.status_code == status and words in r.get_json()["message"]


def test_webhook_malformed_json(backend):
    client, _ = backend
    r = client.post("/webhook", data=b"\x00garbage", content_type="application/json")
    assert r.status_code == 400 and "not valid JSON" in r.get_json()["message"]


# -- /versions, /metrics, unknown routes ---------------------------------------------------------
def test_versions_and_metrics(backend, fake):
    client, model = backend
    connect(client, model, fake)
    v = client.get("/versions").get_json()
    assert v["versions"] == [fake.project["model_version"]] and v["current"] == {"1": fake.project["model_version"]}
    assert client.get("/versions?project=1.5").get_json()["model_version"] == fake.project["model_version"]
    text = client.get("/metrics").get_data(as_text=True)
    assert 'disal_trainings_total{kind="coldstart",project="1"} 1.0' in text
    assert 'disal_predictions_pushed_total{project="1"} 30.0' in text
    assert 'disal_queue_length{project="1"} 30.0' in text
    assert "disal_job_phase_seconds_bucket" in text and "disal_errors_total" in text


def test_unknown_route_and_method_are_json_4xx(backend):
    client, _ = backend
    assert client.get("/nope").status_code == 404 and "no route" in client.get("/nope").get_json()["message"]
    r = client.get("/predict")
    assert r.status_code == 405 and "not allowed" in r.get_json()["message"]


# -- basic auth --------------------------------------------------------------------------------
def test_basic_auth_protects_every_route_and_patches_the_webhook(backend_with, fake):
    client, model = backend_with(basic_auth_user="u", basic_auth_pass="p")
    for method, path in [("get", "/health"), ("post", "/setup"), ("post", "/predict"), ("post", "/webhook"),
                         ("get", "/versions"), ("get", "/metrics")]:
        r = getattr(client, method)(path, json={})
        assert r.status_code == 401, path
        assert r.headers["WWW-Authenticate"].startswith("Basic")
    assert client.get("/health", headers=auth_header("u", "wrong")).status_code == 401
    assert client.get("/health", headers=auth_header()).status_code == 200
    r = client.post("/setup", json=setup_payload(fake), headers=auth_header(), base_url=BACKEND_URL)
    assert r.status_code == 200
    assert model.jobs.wait_idle(1, 30)
    assert fake.webhooks[0]["headers"]["Authorization"] == auth_header()["Authorization"]
    # Label Studio repeats /setup on every look at the ML backend: no job once all is in place
    jobs_run = model.jobs.status(1)["jobs_run"]
    for _ in range(5):
        assert client.post("/setup", json=setup_payload(fake), headers=auth_header(),
                           base_url=BACKEND_URL).status_code == 200
    assert model.jobs.wait_idle(1, 30)
    assert model.jobs.status(1)["jobs_run"] == jobs_run


def test_tokens_never_reach_a_log_line(tmp_path, fake, caplog):
    caplog.set_level(logging.DEBUG)
    client, model, _ = make_backend(tmp_path, fake, basic_auth_user="u", basic_auth_pass="secret-pass-123")
    try:
        client.post("/setup", json=setup_payload(fake, access_token="setup-token-XYZ987"), headers=auth_header(
            "u", "secret-pass-123"), base_url=BACKEND_URL)
        assert model.jobs.wait_idle(1, 30)
        fake.fail_next = [401]
        client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}},
                    headers=auth_header("u", "secret-pass-123"))
        assert model.jobs.wait_idle(1, 30)
        client.get("/health", headers=auth_header("u", "bad"))
    finally:
        model.close()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Label Studio" in text  # the job did log
    for secret in (TOKEN, "setup-token-XYZ987", "secret-pass-123", base64.b64encode(b"u:secret-pass-123").decode()):
        assert secret not in text
    assert "secret-pass-123" not in repr(model.settings) and TOKEN not in repr(model.settings)


def test_model_predict_in_the_familiar_shape(backend, fake):
    client, model = backend
    connect(client, model, fake)
    out = model.predict([fake.tasks[3], fake.tasks[4]], None)  # project read from the tasks
    assert out["model_version"] == fake.project["model_version"] and len(out["results"]) == 2
    assert out["results"][0]["score"] == pytest.approx(fake.predictions_of(out["model_version"])[3]["score"])
