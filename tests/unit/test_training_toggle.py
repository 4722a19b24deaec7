"""Label Studio's "Start model training on annotation submission" toggle is respected.

1.23 keeps it as project.min_annotations_to_start_training (0 = off) and serializes it as
start_training_on_annotation_update. Off: annotation events do not retrain, and /health says why and
how to turn it on; START_TRAINING (the Start Training button) still trains; TASKS_CREATED still
scores new tasks. The fake project has it on, as the demo and e2e projects create it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_labelstudio import TOKEN, annotation_event, connect, topic_texts  # noqa: E402

from disal.labelstudio import training_on_annotation  # noqa: E402

N_TASKS = 30
TOPICS = dict(zip(range(1, N_TASKS + 1), (t for _, t in topic_texts(N_TASKS))))


def annotate(client, model, fake, ids):
    for tid in ids:
        fake.annotate(tid, [TOPICS[tid]])
    assert client.post("/webhook", json=annotation_event(fake, ids[-1])).status_code == 201
    assert model.jobs.wait_idle(1, 60)


def turn_training(fake, on: bool) -> None:
    with fake.client() as c:  # what the toggle in Settings > Model saves
        r = c.patch("/api/projects/1/", json={"start_training_on_annotation_update": on},
                    headers={"Authorization": f"Token {TOKEN}"})
        assert r.status_code == 200
    assert fake.project["min_annotations_to_start_training"] == int(on)


@pytest.mark.parametrize("project, expected", [
    ({"start_training_on_annotation_update": True, "min_annotations_to_start_training": 1}, True),
    ({"start_training_on_annotation_update": False, "min_annotations_to_start_training": 0}, False),
    ({"start_training_on_annotation_update": None, "min_annotations_to_start_training": 5}, True),
    ({"min_annotations_to_start_training": 0}, False),
    ({"start_training_on_annotation_update": None, "min_annotations_to_start_training": None}, None),
    ({}, None),
])
def test_the_toggle_is_read_from_either_field(project, expected):
    assert training_on_annotation(project) is expected


def test_with_the_toggle_off_annotations_do_not_retrain_and_health_says_how_to_turn_it_on(backend, fake, caplog):
    client, model = backend
    connect(client, model, fake)
    turn_training(fake, False)
    cold = fake.project["model_version"]
    with caplog.at_level(logging.INFO, logger="disal.training_job"):
        annotate(client, model, fake, [1, 2, 3, 4])
    assert fake.project["model_version"] == cold and model.store(1).current().name == cold  # no round ran
    health = client.get("/health").get_json()["projects"]["1"]
    assert health["training_on_annotation"] is False
    assert "Start model training on annotation submission" in health["training_note"]
    assert "start_training_on_annotation_update" in health["training_note"]  # how to turn it on
    assert health["job"]["last_job"]["outcome"] == "not retrained: training on annotation is off in Label Studio"
    assert any("not retrained on annotations" in r.getMessage() for r in caplog.records)

    # the Start Training button still trains, on the labels made meanwhile
    assert client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}).status_code == 201
    assert model.jobs.wait_idle(1, 60)
    v = model.store(1).current()
    assert v.name == fake.project["model_version"] != cold and v.kind == "head" and set(v.labels) == {1, 2, 3, 4}

    # new tasks are still scored with the current version
    new_ids = fake.add_tasks(["football goal match team", "bank profit market shares"], start_id=101)
    before = len(fake.predictions_of(v.name))
    r = client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 1},
                                      "tasks": [fake.tasks[i] for i in new_ids]})
    assert r.status_code == 201 and model.jobs.wait_idle(1, 60)
    assert len(fake.predictions_of(v.name)) == before + 2

    # turned on again: the next annotation retrains, and /health no longer carries the note
    turn_training(fake, True)
    annotate(client, model, fake, [5])
    assert model.store(1).current().name == fake.project["model_version"] != v.name
    health = client.get("/health").get_json()["projects"]["1"]
    assert health["training_on_annotation"] is True and "training_note" not in health


def test_a_label_studio_without_the_field_retrains_and_says_it_cannot_tell(backend, fake):
    client, model = backend
    connect(client, model, fake)
    del fake.project["start_training_on_annotation_update"], fake.project["min_annotations_to_start_training"]
    cold = fake.project["model_version"]
    annotate(client, model, fake, [1, 2])
    assert fake.project["model_version"] != cold
    health = client.get("/health").get_json()["projects"]["1"]
    assert health["training_on_annotation"] is None
    assert any("unknown" in w for w in health["job"]["last_job"]["warnings"])
