"""A linear classification head trained on fixed features, with its trajectory recorded.

This is the fast path used by the simulator's default mode and by the backend: the pretrained
encoder is frozen, its features are computed once per item (and cached), and each round trains
only z = W h + b. Training a head on a few hundred labeled items takes well under a second on a
CPU, so DISAL's scoring cost is one matrix product per checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..trajectory import DEFAULT_MAX_BYTES, Trajectory, TrajectoryRecorder

HEAD_PARAMS = ("head.weight", "head.bias")


class LinearHead(nn.Module):
    """Dropout then a linear layer; dropout doubles as the MC-dropout source for BALD."""

    def __init__(self, in_features: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(in_features, num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))


@dataclass
class HeadConfig:
    """Optimisation settings for the head; the defaults were tuned on BBC/R8 features (docs/method.md)."""

    steps: int = 150
    lr: float = 0.05
    weight_decay: float = 1e-4
    batch_size: int = 64
    dropout: float = 0.1
    num_checkpoints: int = 5
    max_trajectory_bytes: int = DEFAULT_MAX_BYTES


def loss_fn(logits: torch.Tensor, targets: torch.Tensor, multi_label: bool) -> torch.Tensor:
    if multi_label:
        return nn.functional.binary_cross_entropy_with_logits(logits, targets.float())
    return nn.functional.cross_entropy(logits, targets)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`auto` (or None): CUDA when present, else CPU; anything else as given, checked to exist.

    Why checked here: a typo'd or absent `cuda` would otherwise fail deep inside the first round.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but torch sees no CUDA device here (use auto or cpu)")
    return dev


def fit_with_trajectory(model: nn.Module, x: torch.Tensor, y: torch.Tensor, multi_label: bool, config: HeadConfig,
                        gen: torch.Generator, meta: dict) -> Trajectory:
    """AdamW on seeded mini-batches of (x, y), recording every parameter of `model` on the schedule.

    Shared by the linear and the MLP head so both regimes train the same way (same batches for a seed).
    """
    params = dict(model.named_parameters())
    recorder = TrajectoryRecorder(params, config.steps, config.num_checkpoints, config.max_trajectory_bytes)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    bs = min(config.batch_size, len(x))
    perm = torch.randperm(len(x), generator=gen)
    pos = 0
    model.train()
    for step in range(1, config.steps + 1):
        if pos + bs > len(x):
            perm = torch.randperm(len(x), generator=gen)
            pos = 0
        idx = perm[pos : pos + bs].to(x.device)
        pos += bs
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx], multi_label)
        loss.backward()
        opt.step()
        recorder.on_step(step, opt.param_groups[0]["lr"])
    model.eval()
    return recorder.finish(meta)


def _as_training_tensors(features: np.ndarray, targets: np.ndarray, device: torch.device):
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(targets))
    if len(x) == 0:
        raise ValueError("no labeled items to train on")
    if len(x) != len(y):
        raise ValueError(f"{len(x)} feature rows but {len(y)} targets")
    return x.to(device), y.to(device)


def train_head(
    features: np.ndarray,
    targets: np.ndarray,
    num_labels: int,
    multi_label: bool = False,
    config: HeadConfig = HeadConfig(),
    seed: int = 0,
    init: dict[str, torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[LinearHead, Trajectory]:
    """Train a seeded head; theta_0 is its initialisation, theta_K the trained head.

    targets: (N,) class indices, or (N, C) multi-hot for multi-label. `init` (a LinearHead state
    dict, e.g. the previous round's head) warm-starts it, so theta_0 -> theta_K is what the new
    labels changed rather than the whole way from a random initialisation. The trajectory is kept
    on the CPU whatever `device` trains.
    """
    dev = resolve_device(device)
    x, y = _as_training_tensors(features, targets, dev)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = LinearHead(x.shape[1], num_labels, config.dropout)
    if init is not None:
        model.load_state_dict(init)
    model.to(dev)
    traj = fit_with_trajectory(model, x, y, multi_label, config, gen,
                               {"kind": "head", "in_features": int(x.shape[1]), "num_labels": num_labels,
                                "multi_label": multi_label, "n_train": int(len(x))})
    return model, traj


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def head_logits(model: nn.Module, features: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Logits (N, C) on the CPU for a head (linear or MLP) on whatever device it sits."""
    model.eval()
    dev = _model_device(model)
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    return torch.cat([model(x[s : s + batch_size].to(dev)).cpu() for s in range(0, len(x), batch_size)]).numpy()


@torch.no_grad()
def head_mc_probs(model: nn.Module, features: np.ndarray, samples: int = 20, seed: int = 0,
                  multi_label: bool = False) -> np.ndarray:
    """(T, N, C) probabilities under T dropout masks (MC dropout, for BALD)."""
    torch.manual_seed(seed)
    model.train()
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32).to(_model_device(model))
    out = []
    for _ in range(samples):
        z = model(x)
        out.append(torch.sigmoid(z) if multi_label else torch.softmax(z, dim=1))
    model.eval()
    return torch.stack(out).cpu().numpy()


def trajectory_head_arrays(traj: Trajectory) -> tuple[np.ndarray, np.ndarray]:
    """(K+1, C, d) weights and (K+1, C) biases of a head trajectory."""
    return traj.stacked("head.weight"), traj.stacked("head.bias")
