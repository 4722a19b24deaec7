"""Lagged deletion of old versions' predictions: no annotation ever fails because of the backend.

A task open in Label Studio's UI was started from a prediction of the version current when it
opened, and Submit sends `parent_prediction: <id>`; the fake answers 400 like Label Studio 1.23 once
that prediction is deleted. A fake clock stands in for an hour of annotation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_labelstudio import BASE_URL, TOKEN, annotation_event, connect, topic_texts  # noqa: E402

N_TASKS = 60
TOPICS = dict(zip(range(1, N_TASKS + 1), (t for _, t in topic_texts(N_TASKS))))


class Clock:
    """A settable clock for ProjectStore.clock: superseded-at times and the grace are read from it."""

    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def label_and_retrain(client, model, fake, tid: int) -> str:
    fake.annotate(tid, [TOPICS[tid]])
    assert client.post("/webhook", json=annotation_event(fake, tid)).status_code == 201
    assert model.jobs.wait_idle(fake.project_id, 60)
    return fake.project["model_version"]


def submit_from_prediction(fake, task_id: int, prediction: dict) -> httpx.Response:
    """What the labeling UI's Submit sends for a task opened with `prediction` pre-filled."""
    with httpx.Client(transport=fake.transport(), base_url=BASE_URL,
                      headers={"Authorization": f"Token {TOKEN}"}) as c:
        return c.post(f"/api/tasks/{task_id}/annotations/",
                      json={"result": prediction["result"], "parent_prediction": prediction["id"]})


def test_a_task_open_for_an_hour_across_20_retrains_still_saves(backend, fake):
    client, model = backend
    connect(client, model, fake)
    clock = Clock()
    model.store(1).clock = clock
    v = label_and_retrain(client, model, fake, 1)
    v = label_and_retrain(client, model, fake, 2)  # two classes: a head
    open_task = min(fake.predictions_of(v), key=lambda t: fake.predictions_of(v)[t]["score"])  # head of the queue
    opened_with = fake.predictions_of(v)[open_task]
    versions = [v]
    labeled = iter(t for t in range(3, N_TASKS + 1) if t != open_task)
    for _ in range(20):  # 20 retrains in an hour, three minutes apart
        clock.t += 180
        versions.append(label_and_retrain(client, model, fake, next(labeled)))
    assert len(set(versions)) == 21 and model.store(1).current().name == versions[-1]
    assert fake.calls("DELETE", r"/api/projects/1/model-versions/") == []  # all within the 2 h grace
    r = submit_from_prediction(fake, open_task, opened_with)
    assert r.status_code == 201, r.text
    assert fake.tasks[open_task]["annotations"][-1]["parent_prediction"] == opened_with["id"]


def test_versions_are_deleted_once_superseded_longer_than_the_grace_and_never_the_current(backend_with, fake):
    client, model = backend_with(old_versions_grace_s=600.0)
    connect(client, model, fake)
    clock = Clock()
    store = model.store(1)
    store.clock = clock
    cold = fake.project["model_version"]
    v2 = label_and_retrain(client, model, fake, 1)  # cold superseded at t0
    clock.t += 300
    v3 = label_and_retrain(client, model, fake, 2)  # v2 superseded at t0 + 300
    assert set(json.loads((store.dir / "superseded.json").read_text())) == {cold, v2}
    assert fake.predictions_of(cold) and fake.predictions_of(v2)  # 300 s < 600 s: both kept
    ledger = store.load_superseded()
    assert ledger[v2] - ledger[cold] == 300 and v3 not in ledger  # explicit state; the current is never in it

    clock.t += 301  # cold: 601 s ago -> deleted; v2: 301 s ago -> kept
    v4 = label_and_retrain(client, model, fake, 3)
    assert fake.predictions_of(cold) == {} and fake.predictions_of(v2) and fake.predictions_of(v3)
    assert cold not in store.load_superseded()

    clock.t += 10_000  # everything older is past its grace; the current version stays
    v5 = label_and_retrain(client, model, fake, 4)
    listed = {p["model_version"] for p in fake.predictions}
    assert listed == {v4, v5}  # v4 was superseded just now: kept; v2, v3 deleted
    assert fake.project["model_version"] == v5


def test_the_grace_survives_a_restart_and_unknown_versions_wait_from_first_sight(backend_with, fake):
    """superseded.json is the state: a restarted backend keeps the times; a version Label Studio lists
    that the ledger never saw (pushed before the ledger existed) gets a whole grace from first sight."""
    fake.predictions.append({"id": 9999, "task": 60, "result": [], "score": 0.5, "model_version": "disal-0000-legacy",
                             "project": 1})
    client, model = backend_with(old_versions_grace_s=600.0)
    clock = Clock()
    model.store(1).clock = clock  # before connect: the first round already sees the legacy version
    connect(client, model, fake)
    label_and_retrain(client, model, fake, 1)
    t_first_seen = model.store(1).load_superseded()["disal-0000-legacy"]
    assert t_first_seen == clock.t
    model.close()

    client, model = backend_with(old_versions_grace_s=600.0)  # a restart on the same MODEL_DIR
    model.store(1).clock = clock
    clock.t += 599
    label_and_retrain(client, model, fake, 2)
    assert any(p["model_version"] == "disal-0000-legacy" for p in fake.predictions)
    assert model.store(1).load_superseded()["disal-0000-legacy"] == t_first_seen  # not reset by the restart
    clock.t += 2
    label_and_retrain(client, model, fake, 3)
    assert not any(p["model_version"] == "disal-0000-legacy" for p in fake.predictions)


def test_with_zero_grace_every_older_version_goes_at_once(backend_with, fake):
    client, model = backend_with(old_versions_grace_s=0.0)
    connect(client, model, fake)
    cold = fake.project["model_version"]
    v2 = label_and_retrain(client, model, fake, 1)
    assert fake.predictions_of(cold) == {} and {p["model_version"] for p in fake.predictions} == {v2}


def test_the_grace_setting_defaults_to_two_hours_and_refuses_negative_values():
    from disal.config import ConfigError, Settings

    assert Settings.from_env({}).old_versions_grace_s == 7200.0
    assert Settings.from_env({"OLD_VERSIONS_GRACE_S": "90"}).old_versions_grace_s == 90.0
    with pytest.raises(ConfigError, match="OLD_VERSIONS_GRACE_S"):
        Settings.from_env({"OLD_VERSIONS_GRACE_S": "-1"})
