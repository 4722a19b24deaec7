"""The checkpoint trajectory theta_0..theta_K of one training round, for a chosen parameter set.

Recorded on a schedule during training (K evenly spaced optimizer steps), kept on the CPU in
float32, bounded in memory before the first snapshot is taken, and saved to / loaded from a folder
(safetensors + a JSON manifest, written atomically).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_dir

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 2 * 1024**3
MANIFEST = "trajectory.json"
TENSORS = "trajectory.safetensors"


class TrajectoryTooLargeError(ValueError):
    """The requested checkpoints would exceed the memory bound: fewer checkpoints or a smaller `params`."""


def checkpoint_schedule(total_steps: int, num_checkpoints: int) -> list[int]:
    """Optimizer steps after which checkpoints 1..K are taken (K evenly spaced, the last at the end)."""
    if total_steps < 1:
        raise ValueError("a training round needs at least one step")
    k = max(1, min(num_checkpoints, total_steps))
    return sorted({max(1, int(round(i * total_steps / k))) for i in range(1, k + 1)})


@dataclass
class Trajectory:
    """Checkpoints of the parameters named in `param_names`, with the step and segment learning rate."""

    param_names: list[str]
    checkpoints: list[dict[str, torch.Tensor]]
    steps: list[int]
    lrs: list[float]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.checkpoints:
            raise ValueError("a trajectory needs at least theta_0")
        if not (len(self.checkpoints) == len(self.steps) == len(self.lrs)):
            raise ValueError("checkpoints, steps and lrs must have the same length")

    @property
    def num_checkpoints(self) -> int:
        """K: the number of checkpoints after theta_0."""
        return len(self.checkpoints) - 1

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for cp in self.checkpoints for t in cp.values())

    def stacked(self, name: str) -> np.ndarray:
        """(K+1, *shape) array of one parameter across checkpoints."""
        return torch.stack([cp[name] for cp in self.checkpoints]).numpy()

    def direction(self, kind: str, k: int) -> dict[str, torch.Tensor]:
        """d_k as named tensors (see disal.strategies.influence.direction_deltas for the definitions)."""
        cps = self.checkpoints
        if kind == "accumulated":
            a, b = cps[k], cps[0]
        elif kind == "segment":
            a, b = cps[k], cps[max(k - 1, 0)]
        elif kind == "remaining":
            a, b = cps[-1], cps[k]
        else:
            raise ValueError(f"unknown direction {kind!r}")
        return {n: a[n] - b[n] for n in self.param_names}

    def last(self) -> dict[str, torch.Tensor]:
        return self.checkpoints[-1]

    def save(self, folder: str | Path) -> Path:
        """Write atomically: a crash mid-save leaves any previous trajectory in `folder` intact."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            flat = {f"{k}/{n}": t.contiguous() for k, cp in enumerate(self.checkpoints) for n, t in cp.items()}
            save_file(flat, str(tmp / TENSORS))
            manifest = {"param_names": self.param_names, "steps": self.steps, "lrs": self.lrs,
                        "meta": self.meta, "nbytes": self.nbytes}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Trajectory":
        folder = Path(folder)
        manifest = json.loads((folder / MANIFEST).read_text())
        flat = load_file(str(folder / TENSORS))
        k1 = len(manifest["steps"])
        cps = [{n: flat[f"{k}/{n}"] for n in manifest["param_names"]} for k in range(k1)]
        return cls(manifest["param_names"], cps, manifest["steps"], manifest["lrs"], manifest.get("meta", {}))


class TrajectoryRecorder:
    """Snapshots the named parameters at theta_0 and after each scheduled optimizer step.

    Use: `rec = TrajectoryRecorder(params, total_steps, K)`, call `rec.on_step(step, lr)` after every
    optimizer step (1-based), then `rec.finish()`. The bound is checked up front, so a round that
    would not fit fails before any training time is spent.
    """

    def __init__(self, params: Mapping[str, torch.Tensor], total_steps: int, num_checkpoints: int,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.params = dict(params)
        if not self.params:
            raise ValueError("no parameters to record")
        self.schedule = checkpoint_schedule(total_steps, num_checkpoints)
        per = sum(p.numel() * 4 for p in self.params.values())
        self.expected_bytes = per * (len(self.schedule) + 1)
        if self.expected_bytes > max_bytes:
            raise TrajectoryTooLargeError(
                f"trajectory of {len(self.schedule)}+1 checkpoints x {per / 1e6:.1f} MB = "
                f"{self.expected_bytes / 1e6:.0f} MB exceeds the bound of {max_bytes / 1e6:.0f} MB; "
                "use fewer checkpoints or params=head / last-n"
            )
        self.checkpoints = [self._snapshot()]
        self.steps = [0]
        self.lrs = [0.0]
        self._lr_sum = 0.0
        self._lr_n = 0

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().to("cpu", torch.float32).clone() for n, p in self.params.items()}

    def on_step(self, step: int, lr: float) -> None:
        self._lr_sum += lr
        self._lr_n += 1
        if step in self.schedule and step != self.steps[-1]:
            self.checkpoints.append(self._snapshot())
            self.steps.append(step)
            self.lrs.append(self._lr_sum / max(self._lr_n, 1))
            self._lr_sum, self._lr_n = 0.0, 0

    def finish(self, meta: dict | None = None) -> Trajectory:
        if len(self.checkpoints) == 1:
            raise RuntimeError("training ended before the first checkpoint: no trajectory to score with")
        traj = Trajectory(list(self.params), self.checkpoints, self.steps, self.lrs, dict(meta or {}))
        log.debug("trajectory: %d checkpoints, %.1f MB", traj.num_checkpoints, traj.nbytes / 1e6)
        return traj
