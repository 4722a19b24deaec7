"""The `mlp` regime: a one-hidden-layer head on frozen features, trained with its whole trajectory.

Why: a linear head with weight decay is convex, so its trajectory is a straight approach to one
optimum and DISAL's checkpoints add nothing over the last one (docs/benchmarks.md). A hidden layer
with a non-linearity makes training non-convex at a cost two CPU cores still carry (384 -> 256 -> C
is ~100k parameters: a round trains in about a second and K checkpoints take a few MB).

The trajectory records every parameter (`hidden.*` and `head.*`). DISAL scores it with the generic
forward-mode path (`disal.training.jvp.logit_tangents_jvp`: torch.func.jvp over functional_call),
which `tests/unit/test_mlp_regime.py` checks against per-sample autograd. BADGE, CoreSet and
DISAL-batch see the hidden activations as the penultimate features, since the last layer's
gradient is r (x) a(h).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..trajectory import Trajectory
from .head import HeadConfig, _as_training_tensors, fit_with_trajectory, resolve_device

MLP_HIDDEN = 256
#: The MLP's learning rate (AdamW). The linear head's 0.05 is too high for it: on BBC features with 40 and
#: 100 random labels, 150 steps, test accuracy was 0.840 / 0.901 at 0.05, 0.851 / 0.932 at 0.01 and
#: 0.865 / 0.939 at 0.003 (linear head at 0.05: 0.853 / 0.932); weight decay 1e-4 vs 1e-2 changed nothing.
MLP_LR = 0.003
ACTIVATIONS = ("gelu", "relu")


class MLPHead(nn.Module):
    """dropout -> Linear(d, H) -> activation -> dropout -> Linear(H, C); dropout is BALD's MC source.

    forward(features, with_features=True) also returns the hidden activations (the penultimate
    features), as TextClassifier does, so one pass (or one jvp) gives both.
    """

    def __init__(self, in_features: int, num_labels: int, hidden: int = MLP_HIDDEN, dropout: float = 0.1,
                 activation: str = "gelu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Linear(in_features, hidden)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.head = nn.Linear(hidden, num_labels)

    def forward(self, features: torch.Tensor, with_features: bool = False):
        a = self.act(self.hidden(self.dropout(features)))
        z = self.head(self.dropout(a))
        return (z, a) if with_features else z


def train_mlp(
    features: np.ndarray,
    targets: np.ndarray,
    num_labels: int,
    multi_label: bool = False,
    config: HeadConfig = HeadConfig(),
    seed: int = 0,
    init: dict[str, torch.Tensor] | None = None,
    hidden: int = MLP_HIDDEN,
    activation: str = "gelu",
    device: str | torch.device = "cpu",
) -> tuple[MLPHead, Trajectory]:
    """Train a seeded MLP head with the linear head's loop; theta_0 is `init` (warm start) or the seeded init.

    The trajectory holds every parameter, named as in the module's state dict, so
    `trajectory.last()` is a valid `init` for the next round (also after Trajectory.save/load).
    """
    dev = resolve_device(device)
    x, y = _as_training_tensors(features, targets, dev)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MLPHead(x.shape[1], num_labels, hidden, config.dropout, activation)
    if init is not None:
        model.load_state_dict(init)
    model.to(dev)
    traj = fit_with_trajectory(model, x, y, multi_label, config, gen,
                               {"kind": "mlp", "in_features": int(x.shape[1]), "hidden": hidden,
                                "activation": activation, "num_labels": num_labels, "multi_label": multi_label,
                                "n_train": int(len(x))})
    return model, traj


def init_from_trajectory(traj: Trajectory) -> dict[str, torch.Tensor]:
    """The warm start of the next round: a copy of the last checkpoint (theta_K), loadable as a state dict."""
    return {n: t.clone() for n, t in traj.last().items()}


def mlp_trajectory_arrays(
    model: MLPHead, traj: Trajectory, features: np.ndarray, directions: Sequence[str], batch_size: int = 4096,
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Logits (K+1, N, C), tangents {direction: (K+1, N, C)}, norms {direction: (K+1,)} and the hidden
    activations (N, H) at the last checkpoint, by one jvp per checkpoint, direction and batch.

    The model's own parameters are left as they were (functional_call swaps the checkpoints in).
    """
    from .jvp import direction_norms, logit_tangents_jvp

    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    x = torch.as_tensor(np.asarray(features), dtype=dtype)
    n, k1 = len(x), len(traj.checkpoints)
    norms = direction_norms(traj, directions)
    c = model.head.out_features
    logits = np.zeros((k1, n, c))
    tangents = {d: np.zeros((k1, n, c)) for d in directions}
    hidden = np.zeros((n, model.hidden.out_features), dtype=np.float32)
    for s in range(0, n, batch_size):
        batch = {"features": x[s : s + batch_size].to(dev)}
        z, t, _, a = logit_tangents_jvp(model, traj, batch, directions, norms=norms, return_features=True)
        logits[:, s : s + batch_size] = z
        for d in directions:
            tangents[d][:, s : s + batch_size] = t[d]
        hidden[s : s + batch_size] = a
    return logits, tangents, norms, hidden


@torch.no_grad()
def mlp_hidden(model: MLPHead, features: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Hidden activations (N, H) in eval mode: the penultimate features of the mlp regime."""
    model.eval()
    dev = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(features), dtype=next(model.parameters()).dtype)
    out = [model(x[s : s + batch_size].to(dev), with_features=True)[1].float().cpu() for s in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, model.hidden.out_features), dtype=np.float32)
