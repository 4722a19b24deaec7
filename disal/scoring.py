"""From a trained model to ScoringInputs: computes only the arrays the chosen strategy needs.

Three producers, one output: `head_scoring_inputs` (frozen encoder, linear head: the closed form over
cached features), `mlp_scoring_inputs` (frozen encoder, MLP head: forward-mode over its parameters)
and `jvp_scoring_inputs` (any parameter set, forward-mode over the HF adapter).
The strategies then rank the pool without knowing which one ran.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .strategies import DISAL, ScoringInputs, Strategy, needs
from .strategies.influence import DIRECTIONS, head_logit_tangents, probabilities
from .trajectory import Trajectory
from .training.head import LinearHead, head_logits, head_mc_probs


EVERYTHING = frozenset({"probs", "features", "labeled_features", "mc_probs", "trajectory", "head_fn"})


def _head_fn(model):
    """The trained head as a pure function of its inputs: logits (float64) in eval mode, weights untouched."""
    return lambda x: head_logits(model, np.asarray(x, dtype=np.float32)).astype(np.float64)


def _head_arrays(traj: Trajectory) -> tuple[np.ndarray, np.ndarray]:
    w = next(n for n in traj.param_names if n.endswith("head.weight"))
    b = next(n for n in traj.param_names if n.endswith("head.bias"))
    return traj.stacked(w), traj.stacked(b)


def _directions_for(strategy: Strategy | None) -> tuple[str, ...]:
    if strategy is None:
        return DIRECTIONS
    return (strategy.options.direction,) if isinstance(strategy, DISAL) else ()


def head_scoring_inputs(
    ids: Sequence,
    pool_features: np.ndarray,
    head: LinearHead,
    trajectory: Trajectory,
    labeled_features: np.ndarray | None = None,
    strategy: Strategy | None = None,
    multi_label: bool = False,
    mc_samples: int = 20,
    seed: int = 0,
) -> ScoringInputs:
    """ScoringInputs for a linear head on fixed features; `strategy=None` computes everything."""
    want = needs(strategy) if strategy is not None else EVERYTHING
    feats = np.asarray(pool_features)
    probs = probabilities(head_logits(head, feats).astype(np.float64), multi_label)
    inputs = ScoringInputs(ids=np.asarray(ids), probs=probs, features=feats, multi_label=multi_label,
                           labeled_features=labeled_features if "labeled_features" in want else None)
    if "mc_probs" in want:
        inputs.mc_probs = head_mc_probs(head, feats, mc_samples, seed, multi_label)
    if "head_fn" in want:
        inputs.head_fn = _head_fn(head)
    if "trajectory" in want:
        W, b = _head_arrays(trajectory)
        tangents, norms = {}, {}
        for d in _directions_for(strategy):
            logits, tangents[d], norms[d] = head_logit_tangents(feats, W, b, d)
            inputs.traj_logits = logits
        inputs.traj_tangents, inputs.traj_dir_norms = tangents, norms
        inputs.traj_lrs = np.asarray(trajectory.lrs)
    return inputs


def mlp_scoring_inputs(
    ids: Sequence,
    pool_features: np.ndarray,
    model,
    trajectory: Trajectory,
    labeled_features: np.ndarray | None = None,
    strategy: Strategy | None = None,
    multi_label: bool = False,
    mc_samples: int = 20,
    seed: int = 0,
) -> ScoringInputs:
    """ScoringInputs for the `mlp` regime: every array a strategy reads, in the hidden layer's terms.

    `features` and `labeled_features` are the hidden activations a(h) (the penultimate layer), so
    BADGE's r (x) a is the MLP's own last-layer gradient and CoreSet measures distance where the
    classifier does. DISAL's logits and tangents come from one jvp per checkpoint over all parameters.
    """
    from .training.mlp import mlp_hidden, mlp_trajectory_arrays

    want = needs(strategy) if strategy is not None else EVERYTHING
    feats = np.asarray(pool_features)
    lab = mlp_hidden(model, labeled_features) if ("labeled_features" in want and labeled_features is not None) else None
    inputs = ScoringInputs(ids=np.asarray(ids), multi_label=multi_label, labeled_features=lab)
    if "trajectory" in want:
        directions = _directions_for(strategy) or ("accumulated",)
        logits, tangents, norms, hidden = mlp_trajectory_arrays(model, trajectory, feats, directions)
        inputs.traj_logits, inputs.traj_tangents, inputs.traj_dir_norms = logits, tangents, norms
        inputs.traj_lrs = np.asarray(trajectory.lrs)
        inputs.probs = probabilities(logits[-1], multi_label)
        inputs.features = hidden
    else:
        inputs.probs = probabilities(head_logits(model, feats).astype(np.float64), multi_label)
        inputs.features = mlp_hidden(model, feats)
    if "mc_probs" in want:
        inputs.mc_probs = head_mc_probs(model, feats, mc_samples, seed, multi_label)
    if "head_fn" in want:
        inputs.head_fn, inputs.head_inputs = _head_fn(model), feats
    return inputs


def jvp_scoring_inputs(adapter, ids: Sequence, texts: Sequence[str], trajectory: Trajectory,
                       labeled_features: np.ndarray | None = None, strategy: Strategy | None = None,
                       batch_size: int | None = None) -> ScoringInputs:
    """ScoringInputs for a fine-tuned HF adapter: logits and tangents by torch.func.jvp per batch.

    Texts are batched shortest first (adapter.batches: little padding) and every array is written
    back in input order. The features are the last checkpoint's, taken from the same pass (no
    separate encode), and the direction norms are computed once for the whole pool.
    """
    from .training.jvp import direction_norms, logit_tangents_jvp

    directions = _directions_for(strategy) or ("accumulated",)
    adapter.load_checkpoint(trajectory, -1)
    k1, n, c = len(trajectory.checkpoints), len(texts), adapter.num_labels
    norms = direction_norms(trajectory, directions)
    traj_logits = np.zeros((k1, n, c))
    tangents = {d: np.zeros((k1, n, c)) for d in directions}
    feats = np.zeros((n, adapter.dim), dtype=np.float32)
    for idx, batch in adapter.batches(texts, batch_size):
        z, t, _, h = logit_tangents_jvp(adapter.model, trajectory, batch, directions, norms=norms,
                                        return_features=True)
        traj_logits[:, idx] = z
        for d in directions:
            tangents[d][:, idx] = t[d]
        feats[idx] = h
    return ScoringInputs(
        ids=np.asarray(ids), probs=probabilities(traj_logits[-1], adapter.multi_label), features=feats,
        labeled_features=labeled_features, traj_logits=traj_logits, traj_tangents=tangents,
        traj_dir_norms=norms, traj_lrs=np.asarray(trajectory.lrs), multi_label=adapter.multi_label,
    )
