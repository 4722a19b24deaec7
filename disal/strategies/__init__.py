"""Acquisition strategies: DISAL and the baselines, all behind one interface (see base.Strategy).

`make_strategy(name, **disal_options)` is the only constructor the simulator and the backend use.
"""

from __future__ import annotations

import numpy as np

from .base import EmptyPoolError, MissingInputError, ScoringInputs, Selection, Strategy, seeded_order, top_k
from .disal_batch import DisalBatch
from .diversity import BADGE, CoreSet
from .influence import (DISAL, STATIC_INFLUENCE, DisalOptions, StaticInfluence, disal_scores, head_logit_tangents,
                        reads_only_last_checkpoint)
from .random_sampling import RandomSampling
from .uncertainty import BALD, Entropy, LeastConfidence, Margin

BASELINES = ("random", "least_confidence", "margin", "entropy", "bald", "coreset", "badge", "static_influence")
STRATEGY_NAMES = ("disal", "disal-batch") + BASELINES
#: disal-batch's own options (the rest of its spec are DISAL options): name -> type
BATCH_OPTIONS = {"beta": float, "gamma": float, "embedding": str, "pick": str}

_SIMPLE = {
    "random": RandomSampling,
    "least_confidence": LeastConfidence,
    "margin": Margin,
    "entropy": Entropy,
    "bald": BALD,
    "coreset": CoreSet,
    "badge": BADGE,
}


def parse_strategy_spec(spec: str) -> tuple[str, dict]:
    """'disal:sign=ascent:lam=0.5' -> ('disal', {'sign': 'ascent', 'lam': 0.5}). Values are typed."""
    base, *parts = spec.strip().split(":")
    opts: dict = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq:
            raise ValueError(f"strategy option {part!r} in {spec!r} must look like key=value")
        key = key.strip().replace("-", "_")
        if key == "lam":
            opts[key] = float(value)
        elif key == "last_checkpoint_only":
            opts[key] = value.lower() in ("1", "true", "yes")
        else:
            opts[key] = value.strip()
    return base.strip(), opts


def make_strategy(spec: str, **disal_options) -> Strategy:
    """Build a strategy from a name or spec; DISAL options (direction, dynamic, lam, sign, weights).

    Options written in the spec ('disal:sign=descent') override the keyword defaults; a spec with
    options keeps the full spec as its display name so ablation variants stay distinguishable.
    """
    base, spec_opts = parse_strategy_spec(spec)
    if base in ("disal-batch", "disal_batch"):
        batch = {k: BATCH_OPTIONS[k](v) for k, v in spec_opts.items() if k in BATCH_OPTIONS}
        opts = {**disal_options, **{k: v for k, v in spec_opts.items() if k not in BATCH_OPTIONS}}
        return DisalBatch(DisalOptions(**opts), name=spec if spec_opts else "disal-batch", **batch)
    if base == "disal":
        opts = {**disal_options, **spec_opts}
        return DISAL(DisalOptions(**opts), name=spec if spec_opts else "disal")
    if spec_opts and base != "static_influence":
        raise ValueError(f"strategy {base!r} takes no options (got {spec!r})")
    if base == "static_influence":
        strategy = StaticInfluence(sign=spec_opts.get("sign", disal_options.get("sign")))
        strategy.name = spec if spec_opts else strategy.name
        return strategy
    if base in _SIMPLE:
        return _SIMPLE[base]()
    raise ValueError(f"unknown strategy {base!r}; choose from {', '.join(STRATEGY_NAMES)}")


def needs(strategy: Strategy) -> set[str]:
    """Which ScoringInputs fields a strategy reads, so callers compute only what is needed.

    A strategy object may declare them itself in a `needs` attribute (the benchmark's peer adapters do).
    """
    own = getattr(strategy, "needs", None)
    if own is not None:
        return set(own)
    if isinstance(strategy, DISAL):
        return {"trajectory"}
    return {
        "random": set(),
        "least_confidence": {"probs"},
        "margin": {"probs"},
        "entropy": {"probs"},
        "bald": {"mc_probs"},
        "coreset": {"features", "labeled_features"},
        "badge": {"probs", "features"},
    }[strategy.name]


def select_with_candidates(
    strategy: Strategy, inputs: ScoringInputs, batch_size: int, seed: int, max_candidates: int | None
) -> Selection:
    """Score only a seeded random subset of the pool (cost control for big pools).

    Items outside the subset are ranked after every candidate, in seeded random order, and get the
    score -inf, so nobody mistakes them for scored items.
    """
    if not max_candidates or max_candidates >= len(inputs):
        return strategy.select(inputs, batch_size, seed)
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(inputs), dtype=bool)
    mask[rng.choice(len(inputs), size=max_candidates, replace=False)] = True
    sub = strategy.select(inputs.subset(mask), batch_size, seed)
    rest_ids = inputs.ids[~mask]
    rest_ids = rest_ids[rng.permutation(len(rest_ids))]
    scores = np.full(len(inputs), -np.inf)
    pos = {i: n for n, i in enumerate(inputs.ids.tolist())}
    for i, s in zip(sub.item_ids.tolist(), sub.scores):
        scores[pos[i]] = s
    order = np.concatenate([sub.order, rest_ids])
    return Selection(strategy.name, inputs.ids, scores, sub.selected, order)


__all__ = [
    "BADGE", "BALD", "BASELINES", "CoreSet", "DISAL", "DisalBatch", "DisalOptions", "EmptyPoolError", "Entropy",
    "LeastConfidence", "Margin", "MissingInputError", "RandomSampling", "STATIC_INFLUENCE",
    "STRATEGY_NAMES", "ScoringInputs", "Selection", "StaticInfluence", "Strategy", "disal_scores",
    "head_logit_tangents", "make_strategy", "needs", "parse_strategy_spec", "reads_only_last_checkpoint", "seeded_order", "select_with_candidates", "top_k",
]
