"""Diversity baselines: CoreSet (greedy k-center) and BADGE (k-means++ on gradient embeddings).

Both choose a batch jointly, so they override `select`. Their per-item score is consistent with
their priority order: the picked batch first (in pick order), then the rest by the distance that
the criterion would use for the next pick.
"""

from __future__ import annotations

import numpy as np

from .base import ScoringInputs, Selection, Strategy, check_selection_args, seeded_order


def sq_dists_to_nearest(points: np.ndarray, centres: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Squared Euclidean distance of each point to its nearest centre (chunked, O(N) memory)."""
    if len(centres) == 0:
        return np.full(len(points), np.inf)
    out = np.empty(len(points))
    c_sq = (centres**2).sum(axis=1)
    for s in range(0, len(points), chunk):
        p = points[s : s + chunk]
        d = (p**2).sum(axis=1)[:, None] + c_sq[None, :] - 2.0 * p @ centres.T
        out[s : s + chunk] = np.maximum(d.min(axis=1), 0.0)
    return out


def coreset_greedy(
    features: np.ndarray, labeled_features: np.ndarray | None, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center (Sener & Savarese 2018): repeatedly take the point farthest from all centres.

    Returns (picked indices in order, squared distance of every point to its nearest centre after
    the picks). With no labeled centres the first pick is drawn at random from the seed.
    """
    features = np.asarray(features, dtype=np.float64)
    n = len(features)
    k = min(k, n)
    centres = np.zeros((0, features.shape[1])) if labeled_features is None else np.asarray(labeled_features, np.float64)
    dist = sq_dists_to_nearest(features, centres)
    tiebreak = np.random.default_rng(seed).random(n)
    picks: list[int] = []
    for _ in range(k):
        if np.isinf(dist).all():
            i = int(np.argmax(tiebreak))
        else:
            cand = np.flatnonzero(dist == dist.max())
            i = int(cand[np.argmax(tiebreak[cand])])
        picks.append(i)
        dist = np.minimum(dist, ((features - features[i]) ** 2).sum(axis=1))
        dist[i] = -1.0  # never pick twice
    return np.asarray(picks, dtype=np.int64), dist


def badge_embedding_norms_and_gram_factors(probs: np.ndarray, features: np.ndarray, multi_label: bool = False):
    """BADGE's gradient embedding g = r (x) h, r = p - onehot(argmax p), kept factored.

    <g_i, g_j> = <r_i, r_j> <h_i, h_j>, so distances need only r and h: no N x (C*d) matrix.
    """
    if multi_label:
        r = probs - (probs > 0.5)
    else:
        r = probs.copy()
        r[np.arange(len(r)), probs.argmax(axis=1)] -= 1.0
    return r.astype(np.float64), np.asarray(features, dtype=np.float64)


def badge_sq_dists(r: np.ndarray, h: np.ndarray, rc: np.ndarray, hc: np.ndarray) -> np.ndarray:
    """(N, M) squared distances between gradient embeddings r (x) h and centres rc (x) hc, never formed."""
    sq = (r**2).sum(1) * (h**2).sum(1)
    sqc = (rc**2).sum(1) * (hc**2).sum(1)
    return np.maximum(sq[:, None] + sqc[None, :] - 2.0 * (r @ rc.T) * (h @ hc.T), 0.0)


def badge_kmeanspp(probs: np.ndarray, features: np.ndarray, k: int, seed: int, multi_label: bool = False):
    """k-means++ seeding over gradient embeddings (Ash et al. 2020).

    First pick: the largest gradient norm; then D^2 sampling with a seeded generator. Returns (picked
    indices in order, squared distance of every point to its nearest pick).
    """
    r, h = badge_embedding_norms_and_gram_factors(probs, features, multi_label)
    n = len(r)
    k = min(k, n)
    sq_norm = (r**2).sum(1) * (h**2).sum(1)
    rng = np.random.default_rng(seed)
    tiebreak = rng.random(n)
    picks: list[int] = []
    dist = np.full(n, np.inf)
    for step in range(k):
        if step == 0:
            cand = np.flatnonzero(sq_norm == sq_norm.max())
            i = int(cand[np.argmax(tiebreak[cand])])
        else:
            w = np.where(dist > 0, dist, 0.0)
            total = w.sum()
            if total <= 0:  # every remaining point coincides with a centre: fall back to seeded order
                remaining = np.flatnonzero(dist >= 0)
                i = int(remaining[np.argmax(tiebreak[remaining])])
            else:
                i = int(rng.choice(n, p=w / total))
        picks.append(i)
        dist = np.minimum(dist, badge_sq_dists(r, h, r[i : i + 1], h[i : i + 1])[:, 0])
        dist[picks] = -1.0
    return np.asarray(picks, dtype=np.int64), dist


def _uncanon(values: np.ndarray, canon: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    out[canon] = values
    return out


def _selection_from_picks(name: str, inputs: ScoringInputs, picks: np.ndarray, rest_score: np.ndarray,
                          batch_size: int, seed: int) -> Selection:
    n = len(inputs)
    scores = np.asarray(rest_score, dtype=np.float64).copy()
    finite = scores[np.isfinite(scores)]
    top = (finite.max() if len(finite) else 0.0) + 1.0
    scores[~np.isfinite(scores)] = top - 0.5  # never happens after one pick; kept for safety of ordering
    scores[picks] = top + np.arange(len(picks), 0, -1)
    order = seeded_order(scores, seed, inputs.ids)
    ordered = inputs.ids[order]
    return Selection(name, inputs.ids, scores, ordered[: min(batch_size, n)], ordered)


class CoreSet(Strategy):
    """Greedy k-center over penultimate features, with the labeled set as initial centres."""

    name = "coreset"

    def score(self, inputs: ScoringInputs) -> np.ndarray:
        inputs.require("features", strategy=self.name)
        lab = inputs.labeled_features
        return sq_dists_to_nearest(np.asarray(inputs.features, np.float64),
                            np.zeros((0, inputs.features.shape[1])) if lab is None else np.asarray(lab, np.float64))

    def select(self, inputs: ScoringInputs, batch_size: int, seed: int = 0) -> Selection:
        check_selection_args(self.name, inputs, batch_size)
        inputs.require("features", strategy=self.name)
        canon = np.argsort(inputs.ids, kind="stable")  # position-independent: run in id order
        picks, dist = coreset_greedy(inputs.features[canon], inputs.labeled_features, batch_size, seed)
        return _selection_from_picks(self.name, inputs, canon[picks], _uncanon(dist, canon), batch_size, seed)


class BADGE(Strategy):
    """k-means++ over last-layer gradient embeddings with pseudo-labels (uncertainty x diversity)."""

    name = "badge"

    def score(self, inputs: ScoringInputs) -> np.ndarray:
        inputs.require("probs", "features", strategy=self.name)
        r, h = badge_embedding_norms_and_gram_factors(inputs.probs, inputs.features, inputs.multi_label)
        return (r**2).sum(1) * (h**2).sum(1)

    def select(self, inputs: ScoringInputs, batch_size: int, seed: int = 0) -> Selection:
        check_selection_args(self.name, inputs, batch_size)
        inputs.require("probs", "features", strategy=self.name)
        canon = np.argsort(inputs.ids, kind="stable")  # position-independent: run in id order
        picks, dist = badge_kmeanspp(inputs.probs[canon], inputs.features[canon], batch_size, seed, inputs.multi_label)
        return _selection_from_picks(self.name, inputs, canon[picks], _uncanon(dist, canon), batch_size, seed)
