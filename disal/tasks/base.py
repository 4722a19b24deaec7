"""The interface every project type implements, and the one the training job speaks to.

A project type (text classification, image classification; spans next) is one module in
`disal/tasks/` with a `TaskModule` subclass. It knows:
- which label configs it owns: the object tag a `<Choices>` labels (`object_tag`), and a line for
  the error message that lists what is supported (`shape`);
- how to read a task's input from its data (`read_input`: a text, an image reference);
- which encoder turns inputs into features (`make_encoder`), cached by task id + a content hash;
- how a prediction's `result` is written. Every current type predicts a `<Choices>` (disal.queue),
  so training (the head) and scoring (the engine's strategies) are the same for all of them.

`training_job.py` and `model.py` see only this interface: a new project type is a new file
registered in `disal/tasks/__init__.py`, not new `if`s in the job.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from ..config import Settings
from ..labelconfig import LabelSpec, TaskInputError
from ..state import FeatureCache

Progress = Callable[[int, int], None]

__all__ = ["Encoded", "FeatureEncoder", "Progress", "TaskInputError", "TaskModule"]


@dataclass
class Encoded:
    """Features aligned with the inputs, and the inputs that could not be encoded.

    `failed` maps an input's position to the reason (a 404, a truncated file, ...). Those rows of
    `features` are zeros and must not be used: callers drop them, log them and count them, so one
    bad input costs one task, never the round.
    """

    features: np.ndarray
    failed: dict[int, str] = field(default_factory=dict)

    def ok(self) -> np.ndarray:
        """Boolean mask of the rows that were encoded."""
        mask = np.ones(len(self.features), dtype=bool)
        if self.failed:
            mask[list(self.failed)] = False
        return mask


class FeatureEncoder(ABC):
    """A frozen pretrained encoder shared by every project of one type; features cached by task id."""

    model_id: str
    cache: FeatureCache
    unit: ClassVar[str] = "inputs"  # what log lines count ("texts", "images")
    runtime: str | None = None  # what computes the features once loaded ("onnxruntime", "torch (why)"): /health

    @property
    @abstractmethod
    def dim(self) -> int:
        """The feature dimension (loads the model)."""

    @abstractmethod
    def load(self) -> None:
        """Load the model now (start-up warm-up), not at the first event."""

    @abstractmethod
    def lookup(self, task_ids: Sequence[int], inputs: Sequence[Any]) -> tuple[dict[int, np.ndarray], list[int]]:
        """(cached features by task id, positions that need encoding), without reading any file."""

    @abstractmethod
    def encode(self, task_ids: Sequence[int | None], inputs: Sequence[Any], *, media: Any = None,
               progress: Progress | None = None, save: bool = True, log_summary: bool = True) -> Encoded:
        """Features for `inputs` (the module's `read_input` values), only the uncached ones computed.

        `media`: how this project's files are fetched (disal.media.MediaFetcher), for types whose
        inputs are references. `save`: persist the cache now; `log_summary=False` lets a caller that
        encodes in chunks log its own totals.
        """


class TaskModule(ABC):
    """One project type. Stateless: one instance per type, shared by every project."""

    name: ClassVar[str]  # stored in LabelSpec.task_type and in every version
    object_tag: ClassVar[str]  # the Label Studio object a <Choices> of this type labels ("Text", "Image")
    shape: ClassVar[str]  # the configs it accepts, in words, for the 4xx that lists every supported shape
    reads_media: ClassVar[bool] = False  # inputs are file references read through disal.media

    @abstractmethod
    def read_input(self, task: dict, spec: LabelSpec, settings: Settings) -> Any:
        """The task's input as its encoder takes it; raises TaskInputError naming the task."""

    @abstractmethod
    def make_encoder(self, settings: Settings, **kwargs: Any) -> FeatureEncoder:
        """The encoder for this type (built once per process, loaded lazily)."""

    input_word: ClassVar[str] = "input"  # how error messages name the input ("text", "image")
