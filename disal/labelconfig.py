"""What the backend understands of a Label Studio project: one `<Choices>` over one object, and its labels.

Read with the SDK's `LabelInterface`. Which objects a `<Choices>` may label (`<Text>`, `<Image>`) is
up to the project-type modules in `disal.tasks`: `parse_label_config` asks them, and everything
else (spans, several Choices, ...) is rejected with a message that lists every supported shape,
because a backend that half-understands a config would push a queue built on the wrong labels.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


def supported_shapes() -> str:
    """Every label-config shape some task module accepts, for error messages."""
    from .tasks import supported_shapes as shapes

    return shapes()

# The optional control the labeling screen shows the model's note in (its guess with its probability, and
# what the prediction score means): Label Studio 1.23 displays no per-result score for a whole-task
# <Choices>, and renders the prediction score as a percentage (disal.queue.model_note).
NOTE_CONTROL = "disal_note"


class UnsupportedConfigError(ValueError):
    """The label config is not one the backend supports (message names what is)."""


class TaskInputError(ValueError):
    """A task has no usable input (text, image reference) in the configured data field."""

    def __init__(self, task_id: Any, message: str) -> None:
        super().__init__(f"task {task_id}: {message}")
        self.task_id = task_id


TaskTextError = TaskInputError  # the text module's name for it


@dataclass(frozen=True)
class LabelSpec:
    """The parts of a label config the backend uses."""

    from_name: str  # the <Choices> name
    to_name: str  # the <Text> name
    value_field: str  # the task data key the <Text> reads ($text -> "text")
    labels: tuple[str, ...]
    multi_label: bool
    note_from_name: str | None = None  # the <TextArea name="disal_note"> that shows the model's note, if any
    task_type: str = "text_classification"  # the disal.tasks module that reads, encodes and predicts

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def as_dict(self) -> dict:
        return {"from_name": self.from_name, "to_name": self.to_name, "value_field": self.value_field,
                "labels": list(self.labels), "multi_label": self.multi_label, "note_from_name": self.note_from_name,
                "task_type": self.task_type}

    @classmethod
    def from_dict(cls, d: dict) -> "LabelSpec":
        return cls(d["from_name"], d["to_name"], d["value_field"], tuple(d["labels"]), bool(d["multi_label"]),
                   d.get("note_from_name"),  # versions saved before the note control existed have none
                   d.get("task_type") or "text_classification")  # ... and before images, were text


def parse_label_config(xml: str) -> LabelSpec:
    """Parse and validate a label config; raise UnsupportedConfigError listing every supported shape.

    The shape is the same for every project type (one `<Choices>` over one object whose value is a
    task data field, optionally the note `<TextArea>`); which object tags are allowed, and which task
    module a config belongs to, comes from `disal.tasks`.
    """
    from label_studio_sdk.label_interface import LabelInterface

    from .tasks import module_for_object

    SUPPORTED = supported_shapes()
    if not isinstance(xml, str) or not xml.strip():
        raise UnsupportedConfigError(f"the label config is empty; supported: {SUPPORTED}")
    if re.search(r"<!\s*(DOCTYPE|ENTITY)", xml, re.IGNORECASE):  # entity expansion costs seconds of CPU
        raise UnsupportedConfigError("the label config declares a DTD or entities (<!DOCTYPE>/<!ENTITY>), which "
                                     f"Label Studio configs never use; supported: {SUPPORTED}")
    try:
        li = LabelInterface(xml)
    except Exception as exc:  # noqa: BLE001 - the SDK raises several XML error types
        raise UnsupportedConfigError(f"the label config is not valid XML ({exc}); supported: {SUPPORTED}") from None
    controls = list(li.controls)
    choices = [c for c in controls if c.tag.lower() == "choices"]
    notes = [c for c in controls if c.tag.lower() == "textarea" and c.name == NOTE_CONTROL]
    others = sorted({c.tag for c in controls if c.tag.lower() != "choices" and c not in notes})
    if others:
        raise UnsupportedConfigError(f"control tag(s) {', '.join(others)} are not supported; supported: {SUPPORTED}")
    if len(choices) != 1:
        raise UnsupportedConfigError(f"found {len(choices)} <Choices> controls; supported: {SUPPORTED}")
    ctrl = choices[0]
    to_names = list(ctrl.to_name or [])
    if len(to_names) != 1:
        raise UnsupportedConfigError(f"<Choices name=\"{ctrl.name}\"> must have one toName; supported: {SUPPORTED}")
    objects = {o.name: o for o in li.objects}
    obj = objects.get(to_names[0])
    module = module_for_object(obj.tag) if obj is not None else None
    if module is None:
        tag = obj.tag if obj is not None else "nothing"
        raise UnsupportedConfigError(f"<Choices name=\"{ctrl.name}\"> points at {tag} named {to_names[0]!r}, which "
                                     f"no project type reads; supported: {SUPPORTED}")
    value = str(obj.value or "")
    if not value.startswith("$") or len(value) < 2:
        raise UnsupportedConfigError(f"<{obj.tag} name=\"{obj.name}\"> value={value!r} is not a task data field "
                                     f"($field); supported: {SUPPORTED}")
    labels = tuple(dict.fromkeys(str(x) for x in (ctrl.labels or [])))
    if len(labels) < 2:
        raise UnsupportedConfigError(f"<Choices name=\"{ctrl.name}\"> has {len(labels)} choice(s); at least 2 are "
                                     f"needed to classify; supported: {SUPPORTED}")
    mode = str(ctrl.attr.get("choice", "single")).lower()
    if mode not in ("single", "single-radio", "multiple"):
        raise UnsupportedConfigError(f"<Choices choice={mode!r}> is not supported; supported: {SUPPORTED}")
    note = None
    if notes:
        if list(notes[0].to_name or []) != [obj.name]:
            raise UnsupportedConfigError(f"<TextArea name=\"{NOTE_CONTROL}\"> must have toName=\"{obj.name}\", "
                                         f"the <{obj.tag}> the choices label; supported: {SUPPORTED}")
        note = notes[0].name
    return LabelSpec(ctrl.name, obj.name, value[1:], labels, mode == "multiple", note, module.name)


UNDEFINED_KEY = "$undefined$"  # Label Studio's settings.DATA_UNDEFINED_NAME


def task_field(task: dict, spec: LabelSpec, word: str = "text") -> Any:
    """The raw value of the task data field the config reads; TaskInputError naming the task without it.

    An uploaded file (a .txt, an image) or one synced from storage is kept by Label Studio under
    "$undefined$", which it maps to the config's one data field when it serializes a task; webhook
    payloads carry it raw, so it stands for the field here too.
    """
    data = task.get("data")
    if not isinstance(data, dict):
        raise TaskInputError(task.get("id"), "has no 'data' object")
    if spec.value_field in data:
        return data[spec.value_field]
    if UNDEFINED_KEY in data:
        return data[UNDEFINED_KEY]
    raise TaskInputError(task.get("id"), f"has no {word} field {spec.value_field!r} in its data "
                                         f"(fields: {', '.join(sorted(map(str, data))) or 'none'})")


def task_text(task: dict, spec: LabelSpec, max_chars: int) -> str:
    """The task's text, cut to max_chars (the tokenizer truncates to max_length tokens anyway)."""
    text = task_field(task, spec, "text")
    if not isinstance(text, str):
        raise TaskTextError(task.get("id"), f"field {spec.value_field!r} is {type(text).__name__}, not text")
    if not text.strip():
        raise TaskTextError(task.get("id"), f"field {spec.value_field!r} is empty")
    return clean_text(text[:max_chars], task.get("id"))


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def clean_text(text: str, task_id: Any = None) -> str:
    """Replace unpaired UTF-16 surrogates (invalid in UTF-8; the tokenizer raises on them) with U+FFFD,
    with a log line naming the task, so one odd character costs nothing but itself."""
    cleaned, n = _SURROGATE_RE.subn("\ufffd", text)
    if n:
        log.warning("task %s: its text had %d unpaired surrogate character(s); replaced with U+FFFD", task_id, n)
    return cleaned


@dataclass(frozen=True)
class TaskLabel:
    """One task's label as the backend trains on it."""

    task_id: int
    labels: tuple[str, ...]
    annotation_id: Any


def annotation_choices(annotation: dict, spec: LabelSpec) -> list[str] | None:
    """The choices an annotation gives the configured control; None if it is not a label.

    Skipped (was_cancelled) annotations and empty results are not labels.
    """
    if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
        return None
    chosen: list[str] = []
    for item in annotation.get("result") or []:
        if not isinstance(item, dict) or item.get("from_name") != spec.from_name:
            continue
        value = item.get("value") or {}
        for c in value.get("choices") or []:
            if isinstance(c, str) and c not in chosen:
                chosen.append(c)
    return chosen or None


def task_label(task: dict, spec: LabelSpec) -> tuple[TaskLabel | None, str | None]:
    """(label, None) or (None, reason): the most recent usable annotation wins.

    Labels no longer in the config are dropped (the reason says which), so a renamed or removed
    choice never reaches the trainer.
    """
    usable = []
    for ann in task.get("annotations") or []:
        chosen = annotation_choices(ann, spec)
        if chosen is not None:
            usable.append((str(ann.get("updated_at") or ann.get("created_at") or ""), ann.get("id") or 0, ann, chosen))
    tid = task.get("id")
    if not usable:
        return None, "no usable annotation (skipped or empty)"
    usable.sort(key=lambda t: (t[0], t[1] if isinstance(t[1], int) else 0))
    _, _, ann, chosen = usable[-1]
    known = [c for c in chosen if c in spec.labels]
    unknown = [c for c in chosen if c not in spec.labels]
    if unknown:
        if not known:
            return None, f"label(s) {unknown} are not in the current config"
        log.info("task %s: dropping label(s) %s that are no longer in the config", tid, unknown)
    if not spec.multi_label and len(known) > 1:
        return None, f"{len(known)} choices {known} on a single-choice control"
    return TaskLabel(int(tid), tuple(known), ann.get("id")), None
