"""End-to-end flows through the routes against a MockTransport Label Studio (hashing encoder, real head).

Annotation -> background round -> pushed queue; cold start; skipped/unknown labels; new tasks;
Label Studio down; restart; multi-label; MIN_ANNOTATIONS_TO_TRAIN; uncertainty sampling.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from disal.config import Settings  # noqa: E402
from fake_labelstudio import (LABELS, connect, FakeLabelStudio, annotation_event, choices_config, make_backend,  # noqa: E402
                              setup_payload, topic_texts)

N_TASKS = 40


def annotate_and_notify(client, model, fake, ids, action="ANNOTATION_CREATED"):
    topics = dict(zip(range(1, 41), (t for _, t in topic_texts(40))))
    for tid in ids:
        fake.annotate(tid, [topics[tid]])
    r = client.post("/webhook", json=annotation_event(fake, ids[-1], action))
    assert r.status_code == 201
    assert model.jobs.wait_idle(fake.project_id, 60)


def unlabeled_ids(fake):
    return sorted(t for t, task in fake.tasks.items() if fake.total_annotations(task) == 0)


def test_annotations_train_a_head_and_push_a_full_queue(backend, fake):
    client, model = backend
    connect(client, model, fake)
    cold = fake.project["model_version"]
    annotate_and_notify(client, model, fake, list(range(1, 10)))
    version = fake.project["model_version"]
    assert version.startswith("disal-0002-") and "coldstart" not in version
    preds = fake.predictions_of(version)
    assert sorted(preds) == unlabeled_ids(fake)  # every unlabeled task, none of the labeled ones
    scores = sorted(p["score"] for p in preds.values())
    n = len(scores)
    assert scores == pytest.approx([i / (n - 1) for i in range(n)])  # rank / (N-1): a strict order, no ties
    assert all(p["result"][0]["value"]["choices"][0] in LABELS for p in preds.values())
    # the older version's predictions stay for OLD_VERSIONS_GRACE_S: a task open in the UI may refer to one
    assert fake.predictions_of(cold) and fake.project["model_version"] == version
    health = client.get("/health").get_json()["projects"]["1"]
    assert health["kind"] == "head" and health["cold_start"] is False and health["labels"] == 9
    assert health["strategy"] == Settings().strategy and health["queue_length"] == n
    assert health["job"]["last_job"]["outcome"] == "pushed"
    # the version on disk holds the trajectory, the label map, and the round each label arrived in
    store = model.store(1)
    v = store.current()
    assert v.trajectory is not None and v.trajectory.num_checkpoints >= 1 and v.head is not None
    assert {r["round"] for r in v.labels.values()} == {2}
    annotate_and_notify(client, model, fake, [10, 11])
    v3 = store.current()
    assert v3.labels[1]["round"] == 2 and v3.labels[10]["round"] == 3


def test_a_pool_bigger_than_push_top_k_pushes_the_head_of_the_queue_only(backend_with, fake):
    """PUSH_TOP_K caps Label Studio's per-round work: the K first tasks of the queue get predictions
    (the same K a full push would rank first), every task is still scored and placed in the version."""
    client, model = backend_with(push_top_k=7)
    connect(client, model, fake)
    annotate_and_notify(client, model, fake, list(range(1, 10)))
    version = fake.project["model_version"]
    v = model.store(1).current()
    assert v.name == version and len(v.priority) == len(unlabeled_ids(fake)) == N_TASKS - 9
    preds = fake.predictions_of(version)
    head = sorted(v.priority, key=lambda t: v.priority[t])[:7]
    assert sorted(preds) == sorted(head)
    assert {t: p["score"] for t, p in preds.items()} == pytest.approx({t: v.priority[t] for t in head})
    # /predict still answers for a scored task that got no prediction in Label Studio
    tail = sorted(v.priority, key=lambda t: v.priority[t])[-1]
    r = client.post("/predict", json={"tasks": [{"id": tail, "project": 1, "data": fake.tasks[tail]["data"]}],
                                      "project": "1.0"})
    assert r.status_code == 200 and r.get_json()["results"][0]["score"] == pytest.approx(v.priority[tail])


def test_skipped_empty_and_unknown_labels_are_not_trained_on(backend, fake):
    client, model = backend
    connect(client, model, fake)
    fake.annotate(1, ["sport"])
    fake.annotate(2, [], cancelled=True)  # skipped
    fake.tasks[3]["annotations"].append({"id": 50, "result": [], "was_cancelled": False})  # empty result
    fake.annotate(4, ["politics"])  # a label no longer in the config
    fake.annotate(5, ["business"])
    fake.annotate(6, ["sport", "tech"])  # two choices on a single-choice control
    client.post("/webhook", json=annotation_event(fake, 5))
    assert model.jobs.wait_idle(1, 30)
    v = model.store(1).current()
    assert sorted(v.labels) == [1, 5]
    assert v.kind == "head"
    assert 2 in v.priority  # the skipped task stays in the queue
    assert 4 not in v.priority and 3 not in v.priority  # annotated tasks are not queued


def test_one_class_stays_cold_start_and_health_says_so(backend, fake):
    client, model = backend
    connect(client, model, fake)
    fake.annotate(1, ["sport"])
    fake.annotate(2, ["sport"])
    client.post("/webhook", json=annotation_event(fake, 2))
    assert model.jobs.wait_idle(1, 30)
    v = model.store(1).current()
    assert v.kind == "coldstart" and v.name.startswith("disal-0002-coldstart-")
    assert set(v.centres) >= {1, 2}  # labeled tasks are CoreSet centres
    health = client.get("/health").get_json()["projects"]["1"]
    assert health["cold_start"] is True and "fewer than 2 classes" in health["note"]


def test_tasks_created_scores_only_the_new_tasks_with_the_current_version(backend, fake, caplog):
    client, model = backend
    connect(client, model, fake)
    annotate_and_notify(client, model, fake, list(range(1, 10)))
    version = fake.project["model_version"]
    before = len(fake.predictions)
    new_ids = fake.add_tasks(["football goal win match", "bank profit shares market"], start_id=100)
    with caplog.at_level(logging.INFO, "disal.training_job"):
        r = client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 1},
                                          "tasks": [fake.tasks[i] for i in new_ids]})
        assert r.status_code == 201
        assert model.jobs.wait_idle(1, 30)
    assert len(fake.predictions) == before + 2
    preds = fake.predictions_of(version)
    assert all(0.0 <= preds[i]["score"] <= 1.0 for i in new_ids)
    assert fake.project["model_version"] == version  # no retraining for new tasks
    assert model.store(1).load_scored()[100] == version
    assert client.get("/health").get_json()["projects"]["1"]["job"]["last_job"]["outcome"] == "new tasks: pushed"
    # what an operator reads: the encoding, with its count and rate, then the push
    assert re.search(r"project 1: 2 new tasks encoded in \S+s \(\d+ tasks/s\), 0 skipped", caplog.text), caplog.text
    assert f"project 1: pushed 2 new-task predictions of {version}" in caplog.text
    # the same event again is idempotent
    client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 1},
                                  "tasks": [fake.tasks[i] for i in new_ids]})
    assert model.jobs.wait_idle(1, 30)
    assert len(fake.predictions) == before + 2


def test_start_training_without_annotation_key_forces_a_round(backend, fake):
    client, model = backend
    connect(client, model, fake)
    annotate_and_notify(client, model, fake, list(range(1, 7)))
    v1 = fake.project["model_version"]
    r = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1, "title": "x"}})
    assert r.status_code == 201
    assert model.jobs.wait_idle(1, 30)
    assert fake.project["model_version"] != v1  # forced even though no label changed
    # an annotation event without any change is idempotent: no new version
    v2 = fake.project["model_version"]
    client.post("/webhook", json=annotation_event(fake, 3, "ANNOTATION_UPDATED"))
    assert model.jobs.wait_idle(1, 30)
    assert fake.project["model_version"] == v2
    assert client.get("/health").get_json()["projects"]["1"]["job"]["last_job"]["outcome"] == "up to date"


def test_annotations_deleted_retrains_without_the_deleted_label(backend, fake):
    client, model = backend
    connect(client, model, fake)
    annotate_and_notify(client, model, fake, list(range(1, 8)))
    deleted = fake.tasks[7]["annotations"].pop()
    client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "annotations": [{"id": deleted["id"]}],
                                  "project": {"id": 1}})
    assert model.jobs.wait_idle(1, 30)
    v = model.store(1).current()
    assert 7 not in v.labels and 7 in v.priority


def test_min_annotations_to_train_waits_for_enough_new_labels(backend_with, fake):
    client, model = backend_with(min_annotations_to_train=3)
    connect(client, model, fake)
    annotate_and_notify(client, model, fake, [1, 2, 3])
    v = fake.project["model_version"]
    annotate_and_notify(client, model, fake, [4])
    assert fake.project["model_version"] == v
    health = client.get("/health").get_json()["projects"]["1"]
    assert health["job"]["last_job"]["outcome"] == "waiting for annotations"
    assert "MIN_ANNOTATIONS_TO_TRAIN" in health["job"]["note"]
    annotate_and_notify(client, model, fake, [5, 6])
    assert fake.project["model_version"] != v


def test_label_studio_down_fails_the_job_and_the_previous_version_keeps_serving(backend, fake):
    client, model = backend
    connect(client, model, fake)
    annotate_and_notify(client, model, fake, list(range(1, 7)))
    good = fake.project["model_version"]
    fake.fail_paths[r"/api/projects/1/import/predictions"] = [httpx.ConnectError("refused")] * 20
    annotate_and_notify(client, model, fake, [7, 8])
    health = client.get("/health").get_json()["projects"]["1"]
    assert "unreachable" in health["error"] and health["model_version"] == good and health["state"] == "idle"
    assert fake.project["model_version"] == good
    r = client.post("/predict", json={"tasks": [fake.tasks[20]], "project": "1.1", "label_config": fake.label_config})
    assert r.get_json()["model_version"] == good
    assert 'disal_errors_total{where="job"} 1.0' in client.get("/metrics").get_data(as_text=True)
    # Label Studio is back: the next event fetches everything again, nothing was lost
    fake.fail_paths.clear()
    annotate_and_notify(client, model, fake, [9])
    v = model.store(1).current()
    assert fake.project["model_version"] == v.name != good and {7, 8, 9} <= set(v.labels)
    # older versions (a failed round's partial push too) are in the superseded ledger: deleted once
    # OLD_VERSIONS_GRACE_S has passed (tests/unit/test_old_versions.py), never the current one
    listed = {p["model_version"] for p in fake.predictions}
    assert {good, v.name} <= listed and set(model.store(1).load_superseded()) == listed - {v.name}


def test_a_restarted_backend_serves_the_latest_version_at_once(tmp_path, fake):
    client, model, _ = make_backend(tmp_path, fake)
    connect(client, model, fake)
    annotate_and_notify(client, model, fake, list(range(1, 8)))
    version = fake.project["model_version"]
    model.close()
    fake.fail_next = [503] * 1000  # Label Studio unreachable: serving must not need it
    client2, model2, _ = make_backend(tmp_path, fake)
    try:
        assert client2.get("/health").get_json()["projects"]["1"]["model_version"] == version
        r = client2.post("/predict", json={"tasks": [fake.tasks[30]], "project": "1.1"})
        assert r.status_code == 200 and r.get_json()["model_version"] == version
        assert r.get_json()["results"][0]["score"] == pytest.approx(fake.predictions_of(version)[30]["score"])
    finally:
        model2.close()


def test_a_corrupt_current_version_falls_back_to_the_previous_one_loudly(tmp_path, fake, caplog):
    client, model, _ = make_backend(tmp_path, fake)
    connect(client, model, fake)
    cold = model.store(1).current().name
    annotate_and_notify(client, model, fake, list(range(1, 8)))
    store = model.store(1)
    newest = store.current().name
    model.close()
    (store.versions_dir / newest / "head.pt").write_bytes(b"garbage")
    _, model2, _ = make_backend(tmp_path, fake)
    try:
        assert model2.store(1).current().name == cold
        assert any("unreadable" in r.getMessage() or "cannot load" in r.getMessage() for r in caplog.records)
    finally:
        model2.close()


def test_uncertainty_sampling_from_extra_params(backend, fake):
    client, model = backend
    connect(client, model, fake, extra_params={"use_uncertainty_sampling": True})
    assert fake.project["sampling"] == "Uncertainty sampling"


def test_multi_label_projects_train_sigmoid_heads(backend_with):
    fake = FakeLabelStudio(choices_config(LABELS, multiple=True))
    fake.add_tasks([t for t, _ in topic_texts(30)])
    client, model = backend_with(ls=fake)
    connect(client, model, fake)
    fake.annotate(1, ["sport", "tech"])
    fake.annotate(2, ["business"])
    fake.annotate(3, ["tech"])
    client.post("/webhook", json=annotation_event(fake, 3))
    assert model.jobs.wait_idle(1, 30)
    v = model.store(1).current()
    assert v.kind == "head" and v.spec.multi_label and v.trajectory.meta["multi_label"] is True
    r = client.post("/predict", json={"tasks": [fake.tasks[10]], "project": "1.1"})
    res = r.get_json()["results"][0]["result"][0]
    assert set(res["value"]["choices"]) <= set(LABELS) and len(res["value"]["choices"]) >= 1


def test_queue_is_never_silently_random(backend, fake):
    """Two rounds from the same labels give the same queue (seeded), and it differs from id order."""
    client, model = backend
    connect(client, model, fake)
    annotate_and_notify(client, model, fake, list(range(1, 10)))
    p1 = model.store(1).current().priority
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert model.jobs.wait_idle(1, 30)
    p2 = model.store(1).current().priority
    assert p1 == p2
    order = sorted(p1, key=p1.get)
    assert order != sorted(order)
    assert np.isfinite(list(p1.values())).all()


def test_cleanup_failures_are_warnings_and_the_new_queue_still_serves(backend, fake):
    client, model = backend
    connect(client, model, fake)
    fake.fail_paths[r"/api/projects/1/model-versions/"] = [400]  # listing versions refused (not retried)
    annotate_and_notify(client, model, fake, list(range(1, 7)))
    health = client.get("/health").get_json()["projects"]["1"]
    assert health["kind"] == "head" and health["model_version"] == fake.project["model_version"]
    assert any("delete old versions" in w for w in health["job"]["last_job"]["warnings"])
    assert health["job"]["last_error"] is None
    assert 'disal_errors_total{where="tidy"} 1.0' in client.get("/metrics").get_data(as_text=True)


def test_without_env_credentials_the_setup_hostname_and_token_are_used(backend_with, fake):
    client, model = backend_with(label_studio_url=None, label_studio_api_key=None)
    connect(client, model, fake)  # setup_payload carries hostname + access_token
    assert fake.project["model_version"].startswith("disal-0001-coldstart-")


def test_no_credentials_at_all_is_a_clear_setup_error_that_leaves_no_state(backend_with, fake):
    client, model = backend_with(label_studio_url=None, label_studio_api_key=None)
    r = client.post("/setup", json=setup_payload(fake, access_token=None))
    assert r.status_code == 422
    assert "no token for" in r.get_json()["message"] and "reconnect" in r.get_json()["message"]
    assert not (model.settings.model_dir / "projects" / "1").exists()
    assert client.get("/health").get_json()["projects"] == {}
    assert not fake.calls("GET", r"/api/projects/1/?")  # nothing was sent anywhere without a token


def test_a_label_config_changed_to_something_unsupported_fails_the_job_clearly(backend, fake):
    client, model = backend
    connect(client, model, fake)
    fake.project["label_config"] = '<View><Audio name="a" value="$audio"/><Choices name="c" toName="a">' \
                                   '<Choice value="a"/><Choice value="b"/></Choices></View>'
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert model.jobs.wait_idle(1, 30)
    health = client.get("/health").get_json()["projects"]["1"]
    assert "UnsupportedConfigError" in health["error"] and "<Text>" in health["error"]
    assert health["model_version"] == fake.project["model_version"]  # still serving the previous version


def test_a_text_project_switched_to_an_image_config_fails_the_job_naming_the_field(backend, fake):
    """Every task then lacks what the config reads: no queue over nothing replaces the working one."""
    client, model = backend
    connect(client, model, fake)
    fake.project["label_config"] = '<View><Image name="i" value="$img"/><Choices name="c" toName="i">' \
                                   '<Choice value="a"/><Choice value="b"/></Choices></View>'
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert model.jobs.wait_idle(1, 30)
    health = client.get("/health").get_json()["projects"]["1"]
    assert "has a usable image in data field 'img'" in health["error"] and '<Image name="i">' in health["error"]
    assert health["model_version"] == fake.project["model_version"]  # still serving the previous version


def test_tasks_imported_into_an_empty_project_get_a_whole_queue(backend_with):
    fake = FakeLabelStudio(choices_config(LABELS))
    client, model = backend_with(ls=fake)
    connect(client, model, fake)
    empty = model.store(1).current()
    assert empty.kind == "coldstart" and empty.priority == {}
    ids = fake.add_tasks([t for t, _ in topic_texts(12)])
    client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 1},
                                  "tasks": [fake.tasks[i] for i in ids]})
    assert model.jobs.wait_idle(1, 30)
    v = model.store(1).current()
    assert v.name != empty.name and sorted(v.priority) == ids
    scores = sorted(p["score"] for p in fake.predictions_of(v.name).values())
    assert scores == pytest.approx([i / 11 for i in range(12)])  # a real CoreSet order, not all-equal


@pytest.mark.parametrize("strategy", ["random", "least_confidence", "margin", "entropy", "bald", "coreset", "badge",
                                      "static_influence", "disal:sign=descent"])
def test_every_strategy_builds_a_queue_and_places_new_tasks(backend_with, fake, strategy):
    client, model = backend_with(strategy=strategy, coldstart_batch=10)
    connect(client, model, fake)
    annotate_and_notify(client, model, fake, list(range(1, 10)))
    v = model.store(1).current()
    assert v.kind == "head" and v.meta["strategy"] == strategy
    scores = sorted(p["score"] for p in fake.predictions_of(v.name).values())
    assert scores == pytest.approx([i / 30 for i in range(31)])
    new = fake.add_tasks(["football goal team", "bank market"], start_id=200)
    client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 1},
                                  "tasks": [fake.tasks[i] for i in new]})
    assert model.jobs.wait_idle(1, 30)
    assert client.get("/health").get_json()["projects"]["1"]["job"]["last_error"] is None
    assert all(0.0 <= fake.predictions_of(v.name)[i]["score"] <= 1.0 for i in new)
