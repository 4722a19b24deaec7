"""The backend's training regimes (TRAIN_MODE), one class each: what is trained on the frozen features,
how it is scored, saved and loaded.

- `head`: a linear head (convex; its trajectory is a straight approach to one optimum). The default.
- `mlp`: one hidden layer on the same features (non-convex, so DISAL's checkpoints differ from the
  last one); DISAL scores it by forward-mode over every parameter (disal.training.mlp).

Both are trained by the same loop and record the same kind of trajectory, so the strategies run
unchanged. Warm start (WARM_START): theta_0 is the previous round's model when it was trained in
the same regime on features of the same width for the same labels, so the trajectory traces what
the new labels changed instead of a fresh start.

The top-N and fine-tuning regimes of the simulator (disal.bench) are not offered here: they train
encoder blocks per project, which does not fit the shared frozen encoder of the service (see
docs/method.md for their measured costs).
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from ..scoring import head_scoring_inputs, mlp_scoring_inputs
from ..strategies import ScoringInputs, Strategy
from ..trajectory import Trajectory
from .head import HeadConfig, LinearHead, train_head
from .mlp import MLP_HIDDEN, MLP_LR, MLPHead, mlp_hidden, train_mlp


class Regime:
    """One way of training a classifier on frozen features, with its trajectory."""

    name: ClassVar[str]
    describe: ClassVar[str]

    def train(self, features: np.ndarray, targets: np.ndarray, num_labels: int, multi_label: bool,
              config: HeadConfig, seed: int, init: dict[str, torch.Tensor] | None = None,
              device: str = "cpu") -> tuple[nn.Module, Trajectory]:
        raise NotImplementedError

    def scoring_inputs(self, ids: Sequence, features: np.ndarray, model: nn.Module, trajectory: Trajectory,
                       labeled_features: np.ndarray | None, strategy: Strategy | None, multi_label: bool,
                       seed: int) -> ScoringInputs:
        raise NotImplementedError

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

    def train(self, features, targets, num_labels, multi_label, config, seed, init=None, device="cpu"):
        return train_head(features, targets, num_labels, multi_label, config, seed=seed, init=init, device=device)

    def scoring_inputs(self, ids, features, model, trajectory, labeled_features, strategy, multi_label, seed):
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

    def train(self, features, targets, num_labels, multi_label, config, seed, init=None, device="cpu"):
        # the head's loop and checkpoints, its own learning rate (0.05 is too high for it: disal.training.mlp)
        return train_mlp(features, targets, num_labels, multi_label, replace(config, lr=self.lr), seed=seed,
                         init=init, hidden=self.hidden, device=device)

    def scoring_inputs(self, ids, features, model, trajectory, labeled_features, strategy, multi_label, seed):
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


def make_regime(name: str, mlp_hidden_units: int = MLP_HIDDEN, mlp_lr: float = MLP_LR) -> Regime:
    if name == "head":
        return HeadRegime()
    if name == "mlp":
        return MLPRegime(mlp_hidden_units, mlp_lr)
    raise ValueError(f"unknown training regime {name!r}; the backend offers: {', '.join(REGIME_NAMES)}")


REGIME_NAMES = ("head", "mlp")
