"""The backend's training regimes (TRAIN_MODE), one class each: what is trained on the frozen features,
how it is scored, saved and loaded.

- `head`: a linear head (convex; its trajectory is a straight approach to one optimum). The default.
- `mlp`: one hidden layer on the same features (non-convex, so DISAL's checkpoints differ from the
  last one); DISAL scores it by forward-mode over every parameter (disal.training.mlp).
- `top-N`: the text encoder's last N transformer blocks + a linear head, fine-tuned per project on
  hidden states cached at the block boundary (disal.training.hidden_cache, keyed by task id, text
  hash, model and N), so training and DISAL's JVP run through the top N blocks only
  (disal.training.top). The shared frozen encoder never moves: each round trains a private copy of
  its top blocks.

head and mlp train on the frozen features; top-N reads the tasks' hidden states (`reads_states`:
the job hands it `TaskStates`, the encoder and the project's filled cache). Every regime records a
trajectory of the parameters it trains, so the strategies run unchanged. Warm start (WARM_START):
theta_0 is the previous round's model when it was trained in the same regime for the same labels,
so the trajectory traces what the new labels changed instead of a fresh start.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Callable, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from ..scoring import head_scoring_inputs, mlp_scoring_inputs
from ..strategies import ScoringInputs, Strategy
from ..trajectory import Trajectory
from .head import HeadConfig, LinearHead, head_logits, train_head
from .hidden_cache import HiddenStateCache
from .top import TopConfig, parse_top_mode, top_outputs, top_scoring_inputs, train_top
from .mlp import MLP_HIDDEN, MLP_LR, MLPHead, mlp_hidden, train_mlp


@dataclass
class TaskStates:
    """What a regime that trains encoder blocks reads instead of frozen features: the text encoder's
    torch adapter and a hidden-state cache already filled for the task ids it is asked about."""

    adapter: object  # disal.training.adapter.HFTextAdapter
    cache: HiddenStateCache


class Regime:
    """One way of training a classifier, with its trajectory."""

    name: str
    describe: str
    reads_states: ClassVar[bool] = False  # True: train/score from TaskStates (ids = cache keys), not features

    def unsupported(self, encoder) -> str | None:
        """Why this regime cannot train on `encoder`'s project type, or None when it can."""
        return None

    def train(self, features: np.ndarray, targets: np.ndarray, num_labels: int, multi_label: bool,
              config: HeadConfig, seed: int, init: dict[str, torch.Tensor] | None = None,
              device: str = "cpu", ids: Sequence | None = None,
              states: TaskStates | None = None) -> tuple[nn.Module, Trajectory]:
        raise NotImplementedError

    def scoring_inputs(self, ids: Sequence, features: np.ndarray, model: nn.Module, trajectory: Trajectory,
                       labeled_features: np.ndarray | None, strategy: Strategy | None, multi_label: bool,
                       seed: int, labeled_ids: Sequence | None = None, states: TaskStates | None = None,
                       progress: Callable[[int, int], None] | None = None) -> ScoringInputs:
        """What `strategy` reads for `ids`; `progress(done, n)` where scoring takes long enough to report."""
        raise NotImplementedError

    def logits(self, model: nn.Module, features: np.ndarray, ids: Sequence | None = None,
               states: TaskStates | None = None) -> np.ndarray:
        """(N, C) float64 logits of the trained model for these tasks."""
        return head_logits(model, np.asarray(features, dtype=np.float32)).astype(np.float64)

    def penultimate(self, model: nn.Module, features: np.ndarray) -> np.ndarray:
        """The features the last layer sees: BADGE's embedding is the last layer's gradient over them."""
        raise NotImplementedError

    def load(self, state: dict[str, torch.Tensor], trajectory: Trajectory) -> nn.Module:
        raise NotImplementedError

    def warm_start(self, previous_model: nn.Module | None, previous_regime: str | None, in_features: int,
                   num_labels: int) -> dict[str, torch.Tensor] | None:
        """theta_0 for this round: the previous model's parameters if it is compatible, else None."""
        if previous_model is None or previous_regime != self.name:
            return None
        state = {k: v.detach().clone() for k, v in previous_model.state_dict().items()}
        shapes = self._shapes(in_features, num_labels)
        if any(tuple(state.get(k, torch.empty(0)).shape) != s for k, s in shapes.items()):
            return None  # another encoder width or another label set: start fresh
        return state

    def _shapes(self, in_features: int, num_labels: int) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError


class HeadRegime(Regime):
    name = "head"
    describe = "frozen encoder + linear head"

    def train(self, features, targets, num_labels, multi_label, config, seed, init=None, device="cpu", ids=None,
              states=None):
        return train_head(features, targets, num_labels, multi_label, config, seed=seed, init=init, device=device)

    def scoring_inputs(self, ids, features, model, trajectory, labeled_features, strategy, multi_label, seed,
                       labeled_ids=None, states=None, progress=None):
        return head_scoring_inputs(ids, features, model, trajectory, labeled_features=labeled_features,
                                   strategy=strategy, multi_label=multi_label, seed=seed)

    def penultimate(self, model, features):
        return np.asarray(features, dtype=np.float32)

    def load(self, state, trajectory):
        w = state["head.weight"]
        head = LinearHead(w.shape[1], w.shape[0])
        head.load_state_dict(state)
        return head.eval()

    def _shapes(self, in_features, num_labels):
        return {"head.weight": (num_labels, in_features), "head.bias": (num_labels,)}


class MLPRegime(Regime):
    name = "mlp"
    describe = f"frozen encoder + one-hidden-layer head ({MLP_HIDDEN} GELU units)"

    def __init__(self, hidden: int = MLP_HIDDEN, lr: float = MLP_LR) -> None:
        self.hidden, self.lr = int(hidden), float(lr)

    def train(self, features, targets, num_labels, multi_label, config, seed, init=None, device="cpu", ids=None,
              states=None):
        # the head's loop and checkpoints, its own learning rate (0.05 is too high for it: disal.training.mlp)
        return train_mlp(features, targets, num_labels, multi_label, replace(config, lr=self.lr), seed=seed,
                         init=init, hidden=self.hidden, device=device)

    def scoring_inputs(self, ids, features, model, trajectory, labeled_features, strategy, multi_label, seed,
                       labeled_ids=None, states=None, progress=None):
        return mlp_scoring_inputs(ids, features, model, trajectory, labeled_features=labeled_features,
                                  strategy=strategy, multi_label=multi_label, seed=seed)

    def penultimate(self, model, features):
        return mlp_hidden(model, features)

    def load(self, state, trajectory):
        meta = trajectory.meta if trajectory is not None else {}
        w1, w2 = state["hidden.weight"], state["head.weight"]
        model = MLPHead(w1.shape[1], w2.shape[0], hidden=w1.shape[0], activation=meta.get("activation", "gelu"))
        model.load_state_dict(state)
        return model.eval()

    def _shapes(self, in_features, num_labels):
        return {"hidden.weight": (self.hidden, in_features), "head.weight": (num_labels, self.hidden)}


class TopModel:
    """A top-N version's model: its trained parameters, and the TopBlocks module they run in.

    Why a wrapper: a saved version is loaded (disal.state) before any encoder is, and a TopBlocks
    needs the encoder's architecture; `module(adapter)` builds it on first use from the saved state.
    """

    def __init__(self, top_blocks: int, state: dict[str, torch.Tensor] | None = None, module=None) -> None:
        self.top_blocks = top_blocks
        self._state = state
        self._module = module

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._module.state() if self._module is not None else dict(self._state)

    def num_labels(self) -> int:
        return int(self.state_dict()["classifier.head.weight"].shape[0])

    def module(self, adapter):
        if self._module is None:
            top = private_top(adapter, self.top_blocks, self.num_labels(), seed=0)
            top.load(self._state)
            self._module = top.eval()
        return self._module


def private_top(adapter, top_blocks: int, num_labels: int, seed: int):
    """A TopBlocks over a copy of `adapter`'s encoder with a fresh head: training it never moves the
    shared frozen encoder that every project's features and hidden states come from."""
    from .adapter import TextClassifier
    from .top import TopBlocks

    torch.manual_seed(seed)
    copied = TextClassifier(copy.deepcopy(adapter.model.encoder), num_labels)
    top = TopBlocks(SimpleNamespace(model=copied), top_blocks)
    return top.to(adapter.device)


class TopRegime(Regime):
    """Fine-tune the text encoder's last N blocks + a linear head from cached boundary states."""

    reads_states = True

    def __init__(self, top_blocks: int, config: TopConfig | None = None) -> None:
        self.top_blocks = int(top_blocks)
        self.name = f"top-{self.top_blocks}"
        self.describe = f"text encoder's last {self.top_blocks} block(s) + linear head, fine-tuned"
        self.config = config or TopConfig()

    def unsupported(self, encoder) -> str | None:
        from .adapter import HFTextAdapter

        adapter = getattr(encoder, "adapter", None) if getattr(encoder, "unit", None) == "texts" else None
        if not isinstance(adapter, HFTextAdapter):
            return (f"TRAIN_MODE={self.name} fine-tunes a Hugging Face text encoder's blocks; this project's "
                    f"encoder ({type(adapter or encoder).__name__}) has none, so it trains the linear head")
        return None

    @staticmethod
    def _need(ids, states) -> TaskStates:
        if states is None or ids is None:
            raise ValueError("the top-N regime reads hidden states: pass ids and TaskStates")
        return states

    def train(self, features, targets, num_labels, multi_label, config, seed, init=None, device="cpu", ids=None,
              states=None):
        states = self._need(ids, states)
        top = private_top(states.adapter, self.top_blocks, num_labels, seed)
        cfg = replace(self.config, num_checkpoints=config.num_checkpoints,
                      max_trajectory_bytes=config.max_trajectory_bytes)
        traj = train_top(top, states.cache, list(ids), targets, multi_label, cfg, seed=seed, init=init)
        traj.meta["regime"] = self.name
        return TopModel(self.top_blocks, module=top), traj

    def scoring_inputs(self, ids, features, model, trajectory, labeled_features, strategy, multi_label, seed,
                       labeled_ids=None, states=None, progress=None):
        states = self._need(ids, states)
        return top_scoring_inputs(model.module(states.adapter), states.cache, list(ids), trajectory,
                                  labeled_ids=list(labeled_ids) if labeled_ids is not None else None,
                                  strategy=strategy, multi_label=multi_label, seed=seed,
                                  progress=progress)

    def logits(self, model, features, ids=None, states=None):
        states = self._need(ids, states)
        return top_outputs(model.module(states.adapter), states.cache, list(ids))[0].astype(np.float64)

    def penultimate(self, model, features):
        raise ValueError(f"{self.name} has no penultimate features over frozen features: BADGE and CoreSet "
                         "placement are not offered with it (Settings rejects them)")

    def load(self, state, trajectory):
        return TopModel(self.top_blocks, state={k: v for k, v in state.items()})

    def _shapes(self, in_features, num_labels):
        return {"classifier.head.weight": (num_labels, in_features)}


def make_regime(name: str, mlp_hidden_units: int = MLP_HIDDEN, mlp_lr: float = MLP_LR) -> Regime:
    if name == "head":
        return HeadRegime()
    if name == "mlp":
        return MLPRegime(mlp_hidden_units, mlp_lr)
    n = parse_top_mode(name)
    if n is not None:
        return TopRegime(n)
    raise ValueError(f"unknown training regime {name!r}; the backend offers: {', '.join(REGIME_NAMES)}")


def is_regime(name: str) -> bool:
    """head, mlp, or top-N with N >= 1."""
    try:
        make_regime(name)
    except ValueError:
        return False
    return True


REGIME_NAMES = ("head", "mlp", "top-N")
