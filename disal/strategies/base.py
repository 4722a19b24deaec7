"""The one strategy interface: inputs as arrays keyed by item id, outputs as scores plus a top-b.

Every strategy returns a score per item (higher = more worth labeling) AND the top-b selection in
priority order. Selection is deterministic for a seed: ties are broken by a seeded random key, never
by list position, so two items with equal scores are not always ordered by their ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np


class EmptyPoolError(ValueError):
    """Raised when a strategy is asked to select from a pool with no items."""


class MissingInputError(ValueError):
    """Raised when a strategy needs an array (features, MC samples, trajectory) that was not given."""


@dataclass
class ScoringInputs:
    """Everything a strategy may look at, one row per pool item, aligned with `ids`.

    Only `ids` is mandatory; each strategy declares which other fields it needs.
    - probs: (N, C) predictive probabilities at the final checkpoint (softmax, or sigmoid if multi_label).
    - features: (N, d) penultimate features at the final checkpoint.
    - labeled_features: (M, d) features of the labeled set (CoreSet centres).
    - mc_probs: (T, N, C) probabilities under T stochastic (MC dropout) passes (BALD).
    - traj_logits: (K+1, N, C) logits at checkpoints 0..K.
    - traj_tangents: {direction: (K+1, N, C)} directional derivatives of the logits along d_k.
    - traj_dir_norms: {direction: (K+1,)} ||d_k|| for each direction kind.
    - traj_lrs: (K+1,) mean learning rate of the segment ending at checkpoint k (entry 0 unused).
    - head_grad_embedding: (N, C*d) optional precomputed BADGE embedding.
    - head_fn: the trained head as a function, (M, d_in) inputs -> (M, C) logits, for strategies that
      perturb the head's inputs (DropQuery's feature dropout). Pure: it never changes the model.
    - head_inputs: (N, d_in) the rows the head reads, when they are not `features` (the mlp regime's
      `features` are its hidden activations; its inputs are the encoder's features).
    """

    ids: np.ndarray
    probs: np.ndarray | None = None
    features: np.ndarray | None = None
    labeled_features: np.ndarray | None = None
    mc_probs: np.ndarray | None = None
    traj_logits: np.ndarray | None = None
    traj_tangents: Mapping[str, np.ndarray] = field(default_factory=dict)
    traj_dir_norms: Mapping[str, np.ndarray] = field(default_factory=dict)
    traj_lrs: np.ndarray | None = None
    multi_label: bool = False
    head_fn: Callable[[np.ndarray], np.ndarray] | None = None
    head_inputs: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids)
        if self.ids.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {self.ids.shape}")
        if len(np.unique(self.ids)) != len(self.ids):
            raise ValueError("ids must be unique: state is keyed by item id")
        n = len(self.ids)
        for name in ("probs", "features", "head_inputs"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} rows but there are {n} ids")
        if self.mc_probs is not None and self.mc_probs.shape[1] != n:
            raise ValueError(f"mc_probs has {self.mc_probs.shape[1]} items but there are {n} ids")
        if self.traj_logits is not None and self.traj_logits.shape[1] != n:
            raise ValueError(f"traj_logits has {self.traj_logits.shape[1]} items but there are {n} ids")

    def __len__(self) -> int:
        return len(self.ids)

    def require(self, *names: str, strategy: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise MissingInputError(f"strategy {strategy!r} needs {', '.join(missing)} in ScoringInputs")

    def subset(self, mask: np.ndarray) -> "ScoringInputs":
        """The same inputs restricted to the items where mask is True (e.g. a random candidate subset)."""
        mask = np.asarray(mask)
        take = lambda a, axis=0: None if a is None else np.compress(mask, a, axis=axis)  # noqa: E731
        return ScoringInputs(
            ids=self.ids[mask],
            probs=take(self.probs),
            features=take(self.features),
            labeled_features=self.labeled_features,
            mc_probs=take(self.mc_probs, 1),
            traj_logits=take(self.traj_logits, 1),
            traj_tangents={k: np.compress(mask, v, axis=1) for k, v in self.traj_tangents.items()},
            traj_dir_norms=dict(self.traj_dir_norms),
            traj_lrs=self.traj_lrs,
            multi_label=self.multi_label,
            head_fn=self.head_fn,
            head_inputs=take(self.head_inputs),
        )


@dataclass
class Selection:
    """A strategy's answer: scores for every item (aligned with item_ids) and the chosen batch.

    `selected` lists item ids in priority order (first = label first). `rank` maps every item id to
    its position in the full priority order, which is what a labeling queue needs.
    """

    strategy: str
    item_ids: np.ndarray
    scores: np.ndarray
    selected: np.ndarray
    order: np.ndarray  # every item id, in priority order (selected first)

    def scores_by_id(self) -> dict:
        return {_py(i): float(s) for i, s in zip(self.item_ids, self.scores)}

    def rank_by_id(self) -> dict:
        return {_py(i): r for r, i in enumerate(self.order)}


def _py(x):
    return x.item() if hasattr(x, "item") else x


def tiebreak_keys(ids: np.ndarray, seed: int) -> np.ndarray:
    """A pseudo-random key in [0, 1) per item id, fixed by (id, seed) and independent of list position.

    Integer ids go through splitmix64; other ids through SHA-1. So a pool read back in another order
    (Label Studio pages, a restart) ranks tied items exactly the same way.
    """
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":
        with np.errstate(over="ignore"):
            x = ids.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            x = x ^ (x >> np.uint64(31))
        return (x >> np.uint64(11)).astype(np.float64) / float(2**53)
    import hashlib

    return np.array([int.from_bytes(hashlib.sha1(f"{seed}:{i}".encode()).digest()[:7], "big") / 2**56 for i in ids])


def seeded_order(scores: np.ndarray, seed: int, ids: np.ndarray | None = None) -> np.ndarray:
    """Indices sorted by descending score; ties broken by a random key drawn from `seed` (and the id)."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        bad = int(np.isnan(scores).sum())
        raise ValueError(f"{bad} scores are NaN: refusing to rank (a NaN queue would be silently random)")
    keys = tiebreak_keys(np.arange(len(scores)) if ids is None else ids, seed)
    return np.lexsort((keys, -scores))


def top_k(ids: np.ndarray, scores: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The ids of the k highest scores, ties broken with `seed`; all ids if k >= len(ids)."""
    if len(ids) == 0:
        raise EmptyPoolError("cannot select from an empty pool")
    if k < 0:
        raise ValueError(f"batch size must be >= 0, got {k}")
    order = seeded_order(scores, seed, ids)
    return np.asarray(ids)[order[: min(k, len(ids))]]


def check_selection_args(name: str, inputs: ScoringInputs, batch_size: int) -> None:
    if len(inputs) == 0:
        raise EmptyPoolError(f"{name}: cannot select from an empty pool")
    if batch_size < 0:
        raise ValueError(f"{name}: batch size must be >= 0, got {batch_size}")


ScoreFn = Callable[[ScoringInputs], np.ndarray]


class Strategy:
    """A named acquisition strategy: `score` gives one number per item, `select` the top-b batch.

    Subclasses implement `score` as a call to a pure function over arrays. Batch-aware strategies
    (CoreSet, BADGE) override `select` and report a score that is consistent with their order.
    """

    name: str = "strategy"

    def score(self, inputs: ScoringInputs) -> np.ndarray:
        raise NotImplementedError

    def select(self, inputs: ScoringInputs, batch_size: int, seed: int = 0) -> Selection:
        check_selection_args(self.name, inputs, batch_size)
        scores = np.asarray(self.score(inputs), dtype=np.float64)
        order = seeded_order(scores, seed, inputs.ids)
        ordered_ids = inputs.ids[order]
        return Selection(self.name, inputs.ids, scores, ordered_ids[: max(0, min(batch_size, len(order)))], ordered_ids)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
