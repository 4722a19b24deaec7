"""Project types: one module per type behind `disal.tasks.base.TaskModule`.

`TASK_MODULES` is the registry. `parse_label_config` (disal.labelconfig) picks the module whose
`object_tag` a config's `<Choices>` labels; the job and the model class then call the module only
through the interface. Adding a type (spans, audio) = a new file here and a line in the registry.
"""

from __future__ import annotations

import threading

from .base import Encoded, FeatureEncoder, TaskModule
from .image_classification import ImageClassification
from .text_classification import TextClassification

TASK_MODULES: tuple[TaskModule, ...] = (TextClassification(), ImageClassification())
_BY_NAME = {m.name: m for m in TASK_MODULES}
_BY_TAG = {m.object_tag.lower(): m for m in TASK_MODULES}

__all__ = ["Encoded", "FeatureEncoder", "TASK_MODULES", "TaskModule", "module_for", "module_for_object",
           "supported_shapes"]


def module_for(task_type: str) -> TaskModule:
    """The module a stored spec names (LabelSpec.task_type)."""
    try:
        return _BY_NAME[task_type]
    except KeyError:
        raise ValueError(f"unknown project type {task_type!r}; known: {', '.join(_BY_NAME)}") from None


def module_for_object(tag: str) -> TaskModule | None:
    """The module that reads this Label Studio object tag ("Text", "Image"), if any."""
    return _BY_TAG.get(str(tag).lower())


def supported_shapes() -> str:
    """Every accepted config shape, one per project type, plus the optional note control."""
    shapes = "; or ".join(f"[{m.name}] {m.shape}" for m in TASK_MODULES)
    return (f"{shapes}; each optionally with <TextArea name=\"disal_note\"> over the same object, where the "
            "backend writes its note")


class Encoders:
    """One encoder per project type, built on first use and shared by every project of that type.

    `factories` are handed to the modules' `make_encoder` (tests inject tiny models:
    `adapter_factory` for text, `image_model_factory` for images).
    """

    def __init__(self, settings, **factories) -> None:
        self.settings = settings
        self._factories = factories
        self._built: dict[str, FeatureEncoder] = {}
        self._lock = threading.Lock()

    def for_type(self, task_type: str) -> FeatureEncoder:
        with self._lock:
            enc = self._built.get(task_type)
            if enc is None:
                enc = self._built[task_type] = module_for(task_type).make_encoder(self.settings, **self._factories)
            return enc

    def for_spec(self, spec) -> FeatureEncoder:
        return self.for_type(spec.task_type)

    def built(self) -> dict[str, FeatureEncoder]:
        with self._lock:
            return dict(self._built)
