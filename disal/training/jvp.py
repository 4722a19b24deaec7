"""Forward-mode DISAL for any parameter set: one torch.func.jvp per checkpoint and direction.

<grad_theta l(x), d> = (dl/dz) . (J_theta z(x)) d, and (J_theta z) d is what jvp returns as the
tangent of the logits. So a batch is scored with one forward-mode pass per checkpoint, no per-sample
gradients, and memory of one direction at a time. The residual dl/dz is applied by the pure
function disal.strategies.influence.disal_scores.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jvp

from ..trajectory import Trajectory


@torch.no_grad()
def _norm(d: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in d.values())))


def logit_tangents_jvp(
    model: nn.Module, traj: Trajectory, batch: dict[str, torch.Tensor], directions: Sequence[str]
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Logits (K+1, N, C) at each checkpoint and, per direction kind, tangents (K+1, N, C) and norms (K+1,).

    The model runs in eval mode (no dropout); parameters outside the trajectory keep their current
    values. `batch` holds the model's keyword inputs (e.g. input_ids, attention_mask).
    """
    was_training = model.training
    model.eval()
    k1 = len(traj.checkpoints)
    logits_all: list[np.ndarray] = []
    tangents = {d: [] for d in directions}
    norms = {d: np.zeros(k1) for d in directions}
    try:
        for k in range(k1):
            primal = {n: t.to(next(model.parameters()).dtype) for n, t in traj.checkpoints[k].items()}

            def f(p: dict[str, torch.Tensor]) -> torch.Tensor:
                return functional_call(model, p, args=(), kwargs=batch)

            z = None
            for d in directions:
                dirv = traj.direction(d, k)
                norms[d][k] = _norm(dirv)
                if norms[d][k] == 0.0:
                    if z is None:
                        with torch.no_grad():
                            z = f(primal)
                    tangents[d].append(np.zeros(tuple(z.shape)))
                    continue
                out, tan = jvp(f, (primal,), ({n: dirv[n].to(primal[n].dtype) for n in primal},))
                z = out.detach() if z is None else z
                tangents[d].append(tan.detach().double().numpy())
            if z is None:
                with torch.no_grad():
                    z = f(primal)
            logits_all.append(z.detach().double().numpy())
    finally:
        model.train(was_training)
    return np.stack(logits_all), {d: np.stack(v) for d, v in tangents.items()}, norms
