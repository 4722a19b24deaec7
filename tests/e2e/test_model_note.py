"""The model note against a real Label Studio 1.23.2: a project whose config has <TextArea
name="disal_note"> accepts the predictions' textarea result beside the choice, keeps the note with
an annotation submitted from it, and the note never becomes a label."""

from __future__ import annotations

import numpy as np
import pytest

from disal.data import load_bbc

from .helpers import BASIC_AUTH, health, tasks_of, wait_idle_version

N_TASKS = 12


@pytest.fixture(scope="module")
def project(label_studio, backend):
    ds = load_bbc()
    idx = [int(i) for i in np.random.default_rng(3).choice(len(ds.train_texts), N_TASKS, replace=False)]
    cfg = ('<View><Text name="text" value="$text"/><Choices name="topic" toName="text" choice="single">'
           + "".join(f'<Choice value="{c}"/>' for c in ds.classes) + "</Choices>"
           '<TextArea name="disal_note" toName="text" rows="2"/></View>')
    with label_studio.client() as c:
        pid = c.post("/api/projects/", json={"title": "model note e2e", "label_config": cfg,
                                             "start_training_on_annotation_update": True}).json()["id"]
        c.post(f"/api/projects/{pid}/import", json=[
            {"text": ds.train_texts[i], "gold": ds.classes[int(ds.train_labels[i])]} for i in idx]).raise_for_status()
        r = c.post("/api/ml/", json={"url": backend.url, "project": pid, "title": "DISAL note",
                                     "auth_method": "BASIC_AUTH", "basic_auth_user": BASIC_AUTH[0],
                                     "basic_auth_pass": BASIC_AUTH[1]})
        assert r.status_code == 201, r.text
    wait_idle_version(backend, pid, (None,))
    return pid


def test_predictions_carry_the_note_and_an_annotation_keeps_it_without_it_being_a_label(label_studio, backend,
                                                                                       project):
    tasks = tasks_of(label_studio, project)
    version = health(backend, project)["model_version"]
    pred = next(p for p in tasks[0]["predictions"] if p["model_version"] == version)
    note = next(r for r in pred["result"] if r["from_name"] == "disal_note")
    assert note["type"] == "textarea" and note["value"]["text"][0].startswith("no model yet (cold start")
    assert f"{pred['score'] * 100:.2f}% is this task's place in the DISAL queue" in note["value"]["text"][0]
    # two tasks opened now (the UI starts each from its cold-start prediction) and submitted one after the
    # other as the UI does: the choice plus the note, parent_prediction = the prediction they opened with.
    # The second one's parent belongs to a version superseded by the first submit's retrain: it still saves.
    first = tasks[0]
    second = next(t for t in tasks if t["data"]["gold"] != first["data"]["gold"])
    opened = {t["id"]: next(p for p in t["predictions"] if p["model_version"] == version) for t in (first, second)}
    seen = (version,)
    for t in (first, second):
        p = opened[t["id"]]
        result = [{"from_name": "topic", "to_name": "text", "type": "choices",
                   "value": {"choices": [t["data"]["gold"]]}},
                  next(r for r in p["result"] if r["from_name"] == "disal_note")]
        with label_studio.client() as c:
            r = c.post(f"/api/tasks/{t['id']}/annotations/", json={"result": result, "parent_prediction": p["id"]})
            assert r.status_code == 201, r.text
        h = wait_idle_version(backend, project, seen)
        seen += (h["model_version"],)
    assert len(seen) == 3  # the second submit came after a retrain
    assert h["kind"] == "head" and h["labels"] == 2
    tasks = tasks_of(label_studio, project)
    unlabeled = next(t for t in tasks if not t["is_labeled"])
    pred = next(p for p in unlabeled["predictions"] if p["model_version"] == h["model_version"])
    choice, note = pred["result"]
    assert note["value"]["text"][0].startswith(f"model's guess: {choice['value']['choices'][0]} "
                                               f"{choice['score']:.0%}")
