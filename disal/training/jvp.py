"""Forward-mode DISAL for any parameter set: one torch.func.jvp per checkpoint and direction.

<grad_theta l(x), d> = (dl/dz) . (J_theta z(x)) d, and (J_theta z) d is what jvp returns as the
tangent of the logits. So a batch is scored with one forward-mode pass per checkpoint, no per-sample
gradients, and memory of one direction at a time. The residual dl/dz is applied by the pure
function disal.strategies.influence.disal_scores.

Frozen prefix (params=last-N): the blocks below the lowest trained one never move, so their output
is the same at every checkpoint and carries no tangent. It is computed ONCE per batch and fed to the
lowest trained block; the K jvps then run only through the top blocks + pooling + head. Exact: the
cached tensor is the very value those blocks would recompute.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jvp

from ..trajectory import Trajectory


@torch.no_grad()
def _norm(d: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in d.values())))


def direction_norms(traj: Trajectory, directions: Sequence[str]) -> dict[str, np.ndarray]:
    """||d_k|| for k = 0..K per direction kind; independent of the data, so compute it once per pool."""
    return {d: np.array([_norm(traj.direction(d, k)) for k in range(len(traj.checkpoints))]) for d in directions}


class _Skip(nn.Module):
    """Stands in for a frozen block whose output is cached: passes the hidden states through."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


class _Stop(Exception):
    pass


def frozen_prefix(model: nn.Module, trained: Sequence[str]) -> tuple[nn.ModuleList, int] | None:
    """(blocks, m) when every trained parameter sits in blocks[m:] or the classifier and m > 0, else None.

    `blocks` is the ModuleList of numbered encoder blocks (`...layer.N.` names, as param_names uses).
    """
    prefixes, lows = set(), []
    for n in trained:
        if n.startswith("classifier."):
            continue
        m = re.match(r"(.*\.layer)\.(\d+)\.", n)
        if not m:
            return None  # an embedding or other non-block parameter moves: nothing below it is frozen
        prefixes.add(m.group(1))
        lows.append(int(m.group(2)))
    if len(prefixes) != 1 or min(lows) == 0:
        return None
    blocks = model.get_submodule(prefixes.pop())
    if not isinstance(blocks, nn.ModuleList):
        return None
    return blocks, min(lows)


@torch.no_grad()
def block_input(model: nn.Module, blocks: nn.ModuleList, m: int, batch: dict) -> torch.Tensor | None:
    """The hidden states entering blocks[m] for `batch` (embeddings + blocks[:m] run once, then stop).

    None when blocks[m-1] returns something other than a plain tensor (then _Skip would not fit).
    """
    seen: dict = {}

    def grab(module, args, kwargs):
        seen["h"] = args[0] if args else kwargs["hidden_states"]
        raise _Stop

    def kind(module, args, kwargs, output):
        seen["tensor_out"] = isinstance(output, torch.Tensor)

    h1 = blocks[m].register_forward_pre_hook(grab, with_kwargs=True)
    h2 = blocks[m - 1].register_forward_hook(kind, with_kwargs=True)
    try:
        model(**batch)
    except _Stop:
        pass
    finally:
        h1.remove()
        h2.remove()
    if not seen.get("tensor_out") or "h" not in seen:
        return None
    return seen["h"].detach()


@contextmanager
def _from_block(blocks: nn.ModuleList, m: int, cached: torch.Tensor):
    """Inside: blocks[:m] are pass-throughs and blocks[m] receives `cached` as its hidden states."""

    def feed(module, args, kwargs):
        if args:
            return (cached, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": cached}

    saved = [blocks[i] for i in range(m)]
    handle = blocks[m].register_forward_pre_hook(feed, with_kwargs=True)
    try:
        for i in range(m):
            blocks[i] = _Skip()
        yield
    finally:
        handle.remove()
        for i, b in enumerate(saved):
            blocks[i] = b


def logit_tangents_jvp(
    model: nn.Module, traj: Trajectory, batch: dict[str, torch.Tensor], directions: Sequence[str],
    norms: dict[str, np.ndarray] | None = None, return_features: bool = False, cache_frozen: bool = True,
    checkpoints: Sequence[int] | None = None,
):
    """Logits (K+1, N, C) at each checkpoint and, per direction kind, tangents (K+1, N, C) and norms (K+1,).

    `checkpoints`: only these indices (e.g. [K] for a strategy that reads the last checkpoint alone);
    the arrays and norms then hold those checkpoints only, in that order.

    The model runs in eval mode (no dropout); parameters outside the trajectory keep their current
    values. `batch` holds the model's keyword inputs (e.g. input_ids, attention_mask). `norms`
    (from `direction_norms`) saves recomputing them per batch. With `return_features`, a 4th value:
    the penultimate features (N, d) at the last checkpoint, from the same pass. `cache_frozen`
    runs frozen lower blocks once per batch instead of once per checkpoint (see module docstring).
    """
    was_training = model.training
    model.eval()
    k1 = len(traj.checkpoints)
    which = list(range(k1)) if checkpoints is None else [int(k) % k1 for k in checkpoints]
    logits_all: list[np.ndarray] = []
    tangents = {d: [] for d in directions}
    norms = dict(norms) if norms is not None else direction_norms(traj, directions)
    dtype = next(model.parameters()).dtype
    dev = next(model.parameters()).device  # checkpoints live on the CPU; the model may be on CUDA
    batch = {key: v.to(dev) if isinstance(v, torch.Tensor) else v for key, v in batch.items()}
    kwargs = {**batch, "with_features": True}
    feats = None
    prefix = frozen_prefix(model, traj.param_names) if cache_frozen else None
    cached = block_input(model, *prefix, batch) if prefix is not None else None
    ctx = _from_block(*prefix, cached) if cached is not None else _nullctx()
    try:
        with ctx:
            for k in which:
                primal = {n: t.to(dev, dtype) for n, t in traj.checkpoints[k].items()}

                def f(p: dict[str, torch.Tensor]):
                    return functional_call(model, p, args=(), kwargs=kwargs)

                out = None
                for d in directions:
                    if norms[d][k] == 0.0:
                        if out is None:
                            with torch.no_grad():
                                out = f(primal)
                        tangents[d].append(np.zeros(tuple(out[0].shape)))
                        continue
                    dirv = traj.direction(d, k)
                    o, tan = jvp(f, (primal,), ({n: dirv[n].to(dev, dtype) for n in primal},))
                    del dirv
                    out = o if out is None else out
                    tangents[d].append(tan[0].detach().double().cpu().numpy())
                if out is None:
                    with torch.no_grad():
                        out = f(primal)
                logits_all.append(out[0].detach().double().cpu().numpy())
                if k == k1 - 1:
                    feats = out[1].detach().float().cpu().numpy()
    finally:
        model.train(was_training)
    if feats is None and return_features:  # the last checkpoint was not asked for: its features still are
        with torch.no_grad():
            feats = functional_call(model, {n: t.to(dev, dtype) for n, t in traj.checkpoints[-1].items()}, args=(),
                                    kwargs=kwargs)[1].detach().float().cpu().numpy()
    norms = {d: np.asarray(v)[which] for d, v in norms.items()}
    result = (np.stack(logits_all), {d: np.stack(v) for d, v in tangents.items()}, norms)
    return (*result, feats) if return_features else result


@contextmanager
def _nullctx():
    yield
