"""The optional <TextArea name="disal_note">: the labeling screen shows the model's guess with its
probability and what the prediction tab's percentage means (Label Studio 1.23 renders the prediction
score as "x%" and no per-result score for a whole-task <Choices>)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_labelstudio import LABELS, FakeLabelStudio, annotation_event, connect, topic_texts  # noqa: E402

from disal.labelconfig import NOTE_CONTROL, UnsupportedConfigError, parse_label_config, task_label  # noqa: E402

CHOICES = "".join(f'<Choice value="{c}"/>' for c in LABELS)


def config(note: str = '<TextArea name="disal_note" toName="text" rows="2"/>') -> str:
    return (f'<View><Text name="text" value="$text"/><Choices name="label" toName="text">{CHOICES}</Choices>'
            f"{note}</View>")


def test_the_note_control_is_recognised_and_other_textareas_still_refused():
    assert parse_label_config(config()).note_from_name == NOTE_CONTROL == "disal_note"
    assert parse_label_config(config("")).note_from_name is None
    with pytest.raises(UnsupportedConfigError, match="TextArea are not supported"):
        parse_label_config(config('<TextArea name="comment" toName="text"/>'))
    with pytest.raises(UnsupportedConfigError, match='toName="text"'):
        parse_label_config(config('<Text name="other" value="$other"/><TextArea name="disal_note" toName="other"/>'))


def test_a_project_with_the_note_control_gets_notes_and_the_note_is_never_a_label(backend_with):
    fake = FakeLabelStudio(config())
    texts = topic_texts(30)
    fake.add_tasks([t for t, _ in texts])
    client, model = backend_with(ls=fake)
    connect(client, model, fake)
    cold = fake.predictions_of(fake.project["model_version"])
    assert all(p["result"][-1]["value"]["text"][0].startswith("no model yet") for p in cold.values())
    for tid in range(1, 7):
        fake.annotate(tid, [texts[tid - 1][1]])
    # an annotation submitted from a prediction keeps the note result beside the choice: not a label
    fake.tasks[1]["annotations"][-1]["result"].append(
        {"from_name": "disal_note", "to_name": "text", "type": "textarea", "value": {"text": ["model's guess: x"]}})
    assert client.post("/webhook", json=annotation_event(fake, 6)).status_code == 201
    assert model.jobs.wait_idle(1, 60)
    v = model.store(1).current()
    assert v.kind == "head" and v.spec.note_from_name == "disal_note"
    assert v.labels[1]["labels"] == [texts[0][1]]
    preds = fake.predictions_of(v.name)
    for p in preds.values():
        choice, note = p["result"]
        text = note["value"]["text"][0]
        guess = choice["value"]["choices"][0]
        assert text.startswith(f"model's guess: {guess} {choice['score']:.0%} · the prediction's "
                               f"{p['score'] * 100:.2f}% is this task's place in the DISAL queue")
    # /predict answers with the same note
    r = client.post("/predict", json={"tasks": [fake.tasks[20]], "project": "1.1"})
    assert r.get_json()["results"][0]["result"][-1]["from_name"] == "disal_note"
    # a choice-less annotation with only a note is no label
    task = {"id": 99, "annotations": [{"id": 5, "result": [{"from_name": "disal_note", "type": "textarea",
                                                           "value": {"text": ["n"]}}]}]}
    assert task_label(task, v.spec)[0] is None
