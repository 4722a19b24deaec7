"""Table-driven hostile input: every bad request gets its 4xx and a message naming the problem, never
a 500, and leaves no state behind (no project folder, no job, no version, no metrics series).

The backend runs with small body limits (a few KiB) so the size cases need no megabytes; the real
defaults are exercised against a gunicorn process in test_slow_clients_and_logs.py.
"""

from __future__ import annotations

import json

import pytest

from fake_labelstudio import connect, setup_payload

LIMITS = dict(max_request_bytes=8192, max_predict_bytes=65536, max_webhook_bytes=32768, predict_max_tasks=50)
SCHEMA = ('<View><Text name="text" value="$text"/><Choices name="label" toName="text" choice="single">'
          '<Choice value="business"/><Choice value="sport"/><Choice value="tech"/></Choices></View>')


def deep(n: int) -> str:
    return "[" * n + "]" * n


def setup_body(**kw) -> dict:
    body = {"project": "1.1767225600", "schema": SCHEMA, "hostname": "http://labelstudio.test",
            "access_token": "legacy-token-abcdef123456"}
    body.update(kw)
    return {k: v for k, v in body.items() if v is not ...}


def task(tid=1, text="markets rallied today", **data) -> dict:
    return {"id": tid, "data": {"text": text, **data}}


LOL = ('<!DOCTYPE v [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>' + SCHEMA)

# (id, method, path, body: dict | str | bytes | None, expected status, words in the message)
CASES = [
    # -- /setup: the body itself
    ("setup-empty", "POST", "/setup", b"", 400, "empty"),
    ("setup-not-json", "POST", "/setup", b"{not json", 400, "not valid JSON"),
    ("setup-invalid-utf8", "POST", "/setup", b"\xff\xfe{\x00", 400, "not valid JSON"),
    ("setup-list", "POST", "/setup", b"[1, 2]", 400, "JSON object, got list"),
    ("setup-string", "POST", "/setup", b'"project"', 400, "JSON object, got str"),
    ("setup-null", "POST", "/setup", b"null", 400, "JSON object, got NoneType"),
    ("setup-deep-2000", "POST", "/setup", deep(2000).encode(), 400, "nests deeper than 64"),
    ("setup-deep-object-70", "POST", "/setup", ('{"a":' * 70 + "1" + "}" * 70).encode(), 400, "nests deeper"),
    ("setup-too-large", "POST", "/setup", json.dumps(setup_body(schema=SCHEMA + " " * 9000)).encode(), 413,
     "MAX_REQUEST_BYTES"),
    # -- /setup: the project id
    ("setup-no-project", "POST", "/setup", {"schema": SCHEMA}, 400, "missing 'project'"),
    ("setup-project-true", "POST", "/setup", setup_body(project=True), 400, "got a boolean"),
    ("setup-project-null", "POST", "/setup", setup_body(project=None), 400, "missing project id"),
    ("setup-project-float", "POST", "/setup", setup_body(project=1.5), 400, "got a number"),
    ("setup-project-list", "POST", "/setup", setup_body(project=[1]), 400, "got a list"),
    ("setup-project-object-no-id", "POST", "/setup", setup_body(project={"title": "x"}), 400, "has no 'id'"),
    ("setup-project-word", "POST", "/setup", setup_body(project="abc"), 400, "not a Label Studio project id"),
    ("setup-project-minus5-str", "POST", "/setup", setup_body(project="-5"), 400, "not a Label Studio project id"),
    ("setup-project-minus5", "POST", "/setup", setup_body(project=-5), 400, "out of range"),
    ("setup-project-zero", "POST", "/setup", setup_body(project=0), 400, "out of range"),
    ("setup-project-10e30", "POST", "/setup", setup_body(project=10**30), 400, "out of range"),
    ("setup-project-10e30-str", "POST", "/setup", setup_body(project=str(10**30)), 400, "not a Label Studio"),
    ("setup-project-exponent", "POST", "/setup", setup_body(project="1e3"), 400, "not a Label Studio project id"),
    ("setup-project-arabic-digits", "POST", "/setup", setup_body(project="\u0661\u0662"), 400, "not a Label Studio"),
    ("setup-project-99999", "POST", "/setup", setup_body(project="99999.1"), 404, "does not exist in the Label Studio"),
    ("setup-project-nan", "POST", "/setup", b'{"project": NaN, "schema": "<View/>"}', 400, "got a number"),
    # -- /setup: the schema and the credentials
    ("setup-no-schema", "POST", "/setup", setup_body(schema=...), 400, "missing 'schema'"),
    ("setup-schema-number", "POST", "/setup", setup_body(schema=123), 400, "XML string, got a number"),
    ("setup-schema-null", "POST", "/setup", setup_body(schema=None), 400, "XML string, got null"),
    ("setup-schema-object", "POST", "/setup", setup_body(schema={"View": 1}), 400, "XML string, got an object"),
    ("setup-schema-empty", "POST", "/setup", setup_body(schema="  "), 422, "empty"),
    ("setup-schema-broken-xml", "POST", "/setup", setup_body(schema="<View><Text"), 422, "not valid XML"),
    ("setup-schema-entities", "POST", "/setup", setup_body(schema=LOL), 422, "DTD or entities"),
    ("setup-schema-rectangles", "POST", "/setup",
     setup_body(schema='<View><Image name="i" value="$i"/><RectangleLabels name="r" toName="i"><Label value="x"/>'
                       '</RectangleLabels></View>'), 422, "RectangleLabels"),
    ("setup-schema-one-choice", "POST", "/setup",
     setup_body(schema='<View><Text name="t" value="$t"/><Choices name="c" toName="t"><Choice value="a"/>'
                       '</Choices></View>'), 422, "at least 2"),
    ("setup-token-number", "POST", "/setup", setup_body(access_token=123), 400, "'access_token' must be a string"),
    ("setup-hostname-number", "POST", "/setup", setup_body(hostname=5), 400, "'hostname' must be a string"),
    ("setup-hostname-ftp", "POST", "/setup", setup_body(hostname="ftp://labelstudio.test"), 400, "not an http(s) URL"),
    ("setup-hostname-userinfo", "POST", "/setup", setup_body(hostname="http://u:p@labelstudio.test"), 400,
     "must not carry credentials"),
    # -- /predict
    ("predict-not-json", "POST", "/predict", b"tasks=1", 400, "not valid JSON"),
    ("predict-tasks-string", "POST", "/predict", {"tasks": "x", "project": "1.1"}, 400, "'tasks' must be a list"),
    ("predict-no-project", "POST", "/predict", {"tasks": [task()]}, 400, "missing project id"),
    ("predict-project-true", "POST", "/predict", {"tasks": [task()], "project": True}, 400, "got a boolean"),
    ("predict-unknown-project", "POST", "/predict", {"tasks": [task()], "project": "99999.1"}, 404, "unknown project"),
    ("predict-item-number", "POST", "/predict", {"tasks": [5], "project": "1.1"}, 422, "item 0 is not a task object"),
    ("predict-no-data", "POST", "/predict", {"tasks": [{"id": 1}], "project": "1.1"}, 422, "has no 'data'"),
    ("predict-text-number", "POST", "/predict", {"tasks": [task(text=5)], "project": "1.1"}, 422, "not text"),
    ("predict-text-empty", "POST", "/predict", {"tasks": [task(text=" ")], "project": "1.1"}, 422, "is empty"),
    ("predict-no-text-field", "POST", "/predict", {"tasks": [{"id": 1, "data": {"body": "x"}}], "project": "1.1"},
     422, "has no text field 'text'"),
    ("predict-too-many-tasks", "POST", "/predict", {"tasks": [task(i) for i in range(1, 52)], "project": "1.1"},
     413, "PREDICT_MAX_TASKS"),
    ("predict-too-large", "POST", "/predict", {"tasks": [task(text="x" * 70000)], "project": "1.1"}, 413,
     "MAX_PREDICT_BYTES"),
    ("predict-deep", "POST", "/predict", ('{"tasks": ' + deep(100) + "}").encode(), 400, "nests deeper"),
    # -- /webhook
    ("webhook-empty", "POST", "/webhook", b"", 400, "empty"),
    ("webhook-no-action", "POST", "/webhook", {"project": {"id": 1}}, 400, "no 'action'"),
    ("webhook-action-number", "POST", "/webhook", {"action": 5, "project": {"id": 1}}, 400,
     "must be a non-empty string like 'ANNOTATION_CREATED', got 5"),
    ("webhook-action-empty", "POST", "/webhook", {"action": "", "project": {"id": 1}}, 400, "non-empty string"),
    ("webhook-action-null", "POST", "/webhook", {"action": None, "project": {"id": 1}}, 400, "got null"),
    ("webhook-action-list", "POST", "/webhook", {"action": ["START_TRAINING"]}, 400, "non-empty string"),
    ("webhook-action-huge", "POST", "/webhook", {"action": "A" * 100}, 400, "100 characters long"),
    ("webhook-no-project", "POST", "/webhook", {"action": "ANNOTATION_CREATED"}, 400, "missing 'project'"),
    ("webhook-no-annotation", "POST", "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 1}}, 400,
     "missing 'annotation'"),
    ("webhook-annotation-string", "POST", "/webhook",
     {"action": "ANNOTATION_UPDATED", "project": {"id": 1}, "annotation": "x"}, 400, "missing 'annotation'"),
    ("webhook-deleted-no-list", "POST", "/webhook", {"action": "ANNOTATIONS_DELETED", "project": {"id": 1}}, 400,
     "missing 'annotations' list"),
    ("webhook-unknown-project", "POST", "/webhook", {"action": "START_TRAINING", "project": {"id": 55}}, 404,
     "unknown project 55"),
    ("webhook-project-no-id", "POST", "/webhook", {"action": "START_TRAINING", "project": {"title": "x"}}, 400,
     "missing project id"),
    ("webhook-project-true", "POST", "/webhook", {"action": "START_TRAINING", "project": True}, 400, "got a boolean"),
    ("webhook-project-minus", "POST", "/webhook", {"action": "START_TRAINING", "project": {"id": -5}}, 400,
     "out of range"),
    ("webhook-tasks-string", "POST", "/webhook", {"action": "TASKS_CREATED", "project": {"id": 1}, "tasks": "x"},
     400, "'tasks' must be a list"),
    ("webhook-task-without-id", "POST", "/webhook",
     {"action": "TASKS_CREATED", "project": {"id": 1}, "tasks": [{"data": {}}]}, 400, "integer 'id'"),
    ("webhook-task-id-bool", "POST", "/webhook",
     {"action": "TASKS_CREATED", "project": {"id": 1}, "tasks": [{"id": True}]}, 400, "integer 'id'"),
    ("webhook-too-large", "POST", "/webhook", {"action": "PROJECT_UPDATED", "pad": "x" * 40000}, 413,
     "MAX_WEBHOOK_BYTES"),
    ("webhook-deep", "POST", "/webhook", ('{"action": "X", "a": ' + deep(200) + "}").encode(), 400, "nests deeper"),
    # -- /versions and unknown routes
    ("versions-unknown-project", "GET", "/versions?project=99999", None, 404, "unknown project 99999"),
    ("versions-bad-project", "GET", "/versions?project=abc", None, 400, "not a Label Studio project id"),
    ("versions-minus-project", "GET", "/versions?project=-1", None, 400, "not a Label Studio project id"),
    ("route-unknown", "GET", "/admin", None, 404, "no route GET /admin"),
    ("route-wrong-method", "DELETE", "/predict", None, 405, "DELETE is not allowed on /predict"),
    ("route-get-setup", "GET", "/setup", None, 405, "GET is not allowed on /setup"),
    ("route-get-body-too-large", "GET", "/health", b"x" * 9000, 413, "MAX_REQUEST_BYTES"),
]


def send(client, method: str, path: str, body):
    if body is None:
        return client.open(path, method=method)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.open(path, method=method, data=data, content_type="application/json")


@pytest.fixture
def connected(backend_with, fake):
    client, model = backend_with(**LIMITS)
    connect(client, model, fake)
    return client, model


def test_the_table_has_at_least_60_hostile_inputs():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name, method, path, body, status, words", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_gets_its_4xx_and_a_message(connected, name, method, path, body, status, words):
    client, model = connected
    before = sorted(p.name for p in (model.settings.model_dir / "projects").iterdir())
    r = send(client, method, path, body)
    assert r.status_code == status, (name, r.status_code, r.get_data(as_text=True)[:300])
    msg = r.get_json()["message"]
    assert words in msg, (name, msg)
    assert "<html" not in msg.lower() and "Traceback" not in msg
    # no state behind: no new project folder, no job, no new version
    assert sorted(p.name for p in (model.settings.model_dir / "projects").iterdir()) == before == ["1"]
    assert model.jobs.projects() == [1]
    assert list(client.get("/health").get_json()["projects"]) == ["1"]
    assert 'disal_errors_total{where="internal"}' not in client.get("/metrics").get_data(as_text=True)


def test_every_case_together_leaves_one_project_one_version_and_no_internal_error(connected, fake):
    client, model = connected
    versions_before = client.get("/versions?project=1").get_json()["versions"]
    for _, method, path, body, status, _ in CASES:
        assert send(client, method, path, body).status_code == status
    assert model.jobs.wait_idle(1, 30)
    assert client.get("/versions?project=1").get_json()["versions"] == versions_before
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'where="internal"' not in metrics
    # arbitrary actions do not grow /metrics: they count as "other"
    assert 'action="' + "A" * 100 not in metrics


def test_a_lone_surrogate_is_cleaned_and_logged_naming_the_task(connected, caplog):
    client, _ = connected
    body = '{"project": "1.1", "tasks": [{"id": 4242, "data": {"text": "bad \\ud800 char in markets"}}]}'
    with caplog.at_level("WARNING", logger="disal.labelconfig"):
        r = client.post("/predict", data=body.encode(), content_type="application/json")
    assert r.status_code == 200, r.get_data(as_text=True)
    assert len(r.get_json()["results"]) == 1
    assert any("task 4242" in rec.getMessage() and "surrogate" in rec.getMessage() for rec in caplog.records)


def test_a_version_killed_mid_push_is_never_listed(connected, fake):
    client, model = connected
    served = client.get("/versions?project=1").get_json()["versions"]
    fake.annotate(1, ["business"])
    fake.annotate(2, ["sport"])
    fake.fail_paths[r"/api/projects/1/import/predictions"] = [500] * 30  # every push attempt fails
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert model.jobs.wait_idle(1, 60)
    store = model.store(1)
    assert len(store.list_versions()) > len(served)  # the new version was saved ...
    assert client.get("/versions?project=1").get_json()["versions"] == served  # ... but never served


def test_project_ids_from_setup_are_confirmed_with_label_studio_before_anything_is_stored(backend_with, fake):
    client, model = backend_with(**LIMITS)
    for pid in ("99999.1", "2.1"):
        r = client.post("/setup", json=setup_body(project=pid))
        assert r.status_code == 404 and "does not exist in the Label Studio at http://labelstudio.test" in \
            r.get_json()["message"]
    assert not (model.settings.model_dir / "projects").exists()
    assert client.get("/health").get_json()["projects"] == {}
    assert client.get("/versions").get_json() == {"versions": [], "current": {}}
    metrics = client.get("/metrics").get_data(as_text=True).splitlines()
    assert not [line for line in metrics if line.startswith(("disal_jobs_total{", "disal_queue_length{"))]


def test_label_studio_html_error_pages_never_reach_the_answer(backend_with, fake):
    client, model = backend_with(**LIMITS)
    fake.fail_paths[r"/api/projects/1/?"] = [502]
    r = client.post("/setup", json=setup_body())
    assert r.status_code == 422 and "could not confirm project 1" in r.get_json()["message"]
    assert not (model.settings.model_dir / "projects").exists()


def test_an_html_error_page_from_label_studio_is_named_by_its_title_not_pasted(backend_with, fake):
    import httpx

    from disal.labelstudio import LabelStudioClient, LabelStudioError

    page = "<!DOCTYPE html><html><head><title>Not Found</title></head><body>" + "<p>x</p>" * 500 + "</body></html>"
    client = LabelStudioClient("http://labelstudio.test", "legacy-token-abcdef123456", retries=0,
                               httpx_client=httpx.Client(transport=httpx.MockTransport(
                                   lambda req: httpx.Response(404, text=page, headers={"Content-Type": "text/html"}))))
    with pytest.raises(LabelStudioError) as err:
        client.get_project(5)
    assert "an HTML page (Not Found)" in str(err.value) and "<p>" not in str(err.value)
