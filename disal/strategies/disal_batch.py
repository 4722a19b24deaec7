"""DISAL-batch: a diverse batch out of DISAL's top candidates, by weighted k-means++ on trajectory gradients.

Why: top-b by a per-item score picks near-duplicates (b copies of one confusing article all score
alike), and the leaders that beat plain DISAL on our benchmarks (BADGE, PowerBALD) are batch-aware.

How (pure numpy, seeded, keyed by id):
1. S(x) = the DISAL score (same options as `disal`).
2. Candidates: the top m = ceil(beta * b) items by S (ties by the seeded id key).
3. Embedding: the trajectory-projected gradient embedding of each candidate,
       e(x) = concat_k sqrt(a_k) * r~_k(x) (x) [h(x), 1]
   over the checkpoints k that DISAL sums (c_k != 0), with a_k = |c_k * ||d_k||| / sum (the
   checkpoint weights w_k, normalised). For a linear head on frozen features h, r~_k (x) [h, 1] is
   exactly the gradient of the DISAL loss l~_k w.r.t. (W, b) at checkpoint k, so e(x) stacks the
   sample's gradients along the whole trajectory. For other regimes it is the last layer's gradient
   with the final penultimate features (MLP: hidden activations). `embedding=last` keeps only k = K.
   Distances are computed factored (<r_i, r_j><h_i, h_j>, as BADGE's badge_sq_dists): never N x C*d.
   `embedding=features` uses the penultimate features h(x) alone (the space DropQuery and TypiClust
   cluster in: representativeness rather than gradient diversity).
4. Selection (`pick`):
   - `kmeanspp` (default): the first pick is the top of S; each next pick is drawn with probability
     proportional to w(x) * D(x)^2, D the embedding distance to the nearest pick,
     w(x) = ((m - rank) / m)^gamma the candidate's DISAL rank weight (gamma = 0: plain k-means++).
   - `centroid`: k-means with b clusters over the candidates (scipy's kmeans2, k-means++ init, seeded);
     the candidate nearest each centre (DropQuery's rule, on DISAL's candidates instead of its
     dropout-inconsistent ones).
   - `cluster-top`: the same clusters; the candidate with the best DISAL rank in each.
   Both clustering picks come in DISAL-rank order; an empty or shared cluster is filled by the
   best-ranked candidate not yet picked, so the batch always has b distinct items.

Score reported per item: the picks first (in pick order), then every other item by S, so the
priority order a queue gets is the batch, then DISAL's ranking.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.cluster.vq import kmeans2

from .base import ScoringInputs, Selection, check_selection_args, seeded_order
from .diversity import _selection_from_picks
from .influence import DISAL, DisalOptions, disal_residuals

EMBEDDINGS = ("trajectory", "last", "features")
PICKS = ("kmeanspp", "centroid", "cluster-top")


def trajectory_gradient_factors(
    inputs: ScoringInputs, options: DisalOptions, embedding: str = "trajectory"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R, a, H): residuals R (K', N, C) of the checkpoints used, their weights a (K',) summing to 1,
    and the features with a bias column H (N, d + 1); e(x) = concat_k sqrt(a_k) R_k(x) (x) H(x)."""
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {embedding!r}")
    h = np.asarray(inputs.features, dtype=np.float64)
    if embedding == "features":  # R = 1, a = 1: e(x) = [h(x), 1], distances are feature distances
        return np.ones((1, len(h), 1)), np.ones(1), np.concatenate([h, np.ones((len(h), 1))], axis=1)
    d = options.direction
    resid, scale = disal_residuals(inputs.traj_logits, inputs.traj_dir_norms[d], options, inputs.traj_lrs,
                                   inputs.multi_label)
    norms = np.asarray(inputs.traj_dir_norms[d], dtype=np.float64)
    used = np.flatnonzero(scale != 0)
    if embedding == "last" or len(used) == 0:
        used = np.array([resid.shape[0] - 1])
        a = np.ones(1)
    else:
        a = np.abs(scale[used] * norms[used])  # |w_k|: the checkpoint weight without the 1/||d_k||
        a = a / a.sum() if a.sum() > 0 else np.full(len(used), 1.0 / len(used))
    H = np.concatenate([h, np.ones((len(h), 1))], axis=1)
    return resid[used], a, H


def _sq_dists_to(R: np.ndarray, a: np.ndarray, H: np.ndarray, sq: np.ndarray, j: int) -> np.ndarray:
    """||e_i - e_j||^2 for every i, from the factors (no embedding is formed)."""
    rr = np.einsum("k,knc,kc->n", a, R, R[:, j])  # sum_k a_k <r_ik, r_jk>
    return np.maximum(sq + sq[j] - 2.0 * rr * (H @ H[j]), 0.0)


def weighted_kmeanspp(R: np.ndarray, a: np.ndarray, H: np.ndarray, weights: np.ndarray, k: int,
                      rng: np.random.Generator) -> np.ndarray:
    """k picks: index 0 first (the caller orders by score), then D^2 * weight sampling.

    When every remaining item coincides with a pick (D = 0), the next pick is the best-weighted one
    left, so the batch still has k distinct items.
    """
    n = R.shape[1]
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    sq = np.einsum("k,knc,knc->n", a, R, R) * (H**2).sum(1)
    picks = [0]
    dist = _sq_dists_to(R, a, H, sq, 0)
    dist[0] = -1.0
    while len(picks) < k:
        p = np.where(dist > 0, dist, 0.0) * weights
        total = p.sum()
        if total > 0 and np.isfinite(total):
            i = int(rng.choice(n, p=p / total))
        else:
            left = np.flatnonzero(dist >= 0)
            i = int(left[np.argmax(weights[left])])
        picks.append(i)
        dist = np.minimum(dist, _sq_dists_to(R, a, H, sq, i))
        dist[picks] = -1.0
    return np.asarray(picks, dtype=np.int64)


def explicit_embedding(R: np.ndarray, a: np.ndarray, H: np.ndarray) -> np.ndarray:
    """e(x) = concat_k sqrt(a_k) R_k(x) (x) H(x), formed (N, K' * C * (d + 1)) in float32: for clustering
    the candidates only (m = beta * b rows), never the pool."""
    parts = [np.sqrt(a[k]) * np.einsum("nc,nd->ncd", R[k], H).reshape(H.shape[0], R.shape[2] * H.shape[1]) for k in range(len(a))]
    return np.concatenate(parts, axis=1).astype(np.float32)


def cluster_picks(E: np.ndarray, k: int, rng: np.random.Generator, rule: str) -> np.ndarray:
    """k distinct rows of E (rows in rank order, best first): one per k-means cluster, by `rule`
    (`centroid`: nearest the centre; `cluster-top`: the best-ranked member), returned in rank order."""
    n = len(E)
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k == n:
        return np.arange(n, dtype=np.int64)
    # k-means++ cannot seed more centres than there are distinct points (its D^2 draw becomes 0/0):
    # cluster into that many, and the fill below completes the batch from DISAL's order
    n_distinct = len(np.unique(E, axis=0))
    if n_distinct <= 1:  # every candidate coincides: no clusters to find; DISAL's order decides
        return np.arange(k, dtype=np.int64)
    with warnings.catch_warnings():  # an empty cluster is handled below (filled), not worth a warning per round
        warnings.filterwarnings("ignore", message="One of the clusters is empty")
        centres, labels = kmeans2(E.astype(np.float64), min(k, n_distinct), iter=20, minit="++", seed=rng,
                                  missing="warn")
    chosen: list[int] = []
    taken = np.zeros(n, dtype=bool)
    for c in range(len(centres)):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        if rule == "centroid":
            d2 = ((E[members] - centres[c]) ** 2).sum(1)
            i = int(members[np.lexsort((members, d2))[0]])  # nearest; ties by rank
        else:
            i = int(members[0])
        if not taken[i]:
            chosen.append(i)
            taken[i] = True
    for i in range(n):  # empty clusters: the best-ranked candidates left
        if len(chosen) >= k:
            break
        if not taken[i]:
            chosen.append(i)
            taken[i] = True
    return np.sort(np.asarray(chosen, dtype=np.int64))


class DisalBatch(DISAL):
    """DISAL's score, with the batch drawn diverse: weighted k-means++ over trajectory gradient embeddings."""

    needs = frozenset({"trajectory", "probs", "features"})

    def __init__(self, options: DisalOptions | None = None, beta: float = 10.0, gamma: float = 1.0,
                 embedding: str = "trajectory", pick: str = "kmeanspp", name: str = "disal-batch") -> None:
        super().__init__(options, name=name)
        if not (beta >= 1.0):
            raise ValueError(f"disal-batch option beta must be >= 1 (candidates = beta x batch), got {beta}")
        if not (gamma >= 0.0):
            raise ValueError(f"disal-batch option gamma must be >= 0, got {gamma}")
        if embedding not in EMBEDDINGS:
            raise ValueError(f"disal-batch option embedding must be one of {', '.join(EMBEDDINGS)}, got {embedding!r}")
        if pick not in PICKS:
            raise ValueError(f"disal-batch option pick must be one of {', '.join(PICKS)}, got {pick!r}")
        self.beta, self.gamma, self.embedding, self.pick = float(beta), float(gamma), embedding, pick

    def select(self, inputs: ScoringInputs, batch_size: int, seed: int = 0) -> Selection:
        check_selection_args(self.name, inputs, batch_size)
        inputs.require("traj_logits", "features", strategy=self.name)
        scores = np.asarray(self.score(inputs), dtype=np.float64)
        n = len(inputs)
        k = min(batch_size, n)
        order = seeded_order(scores, seed, inputs.ids)  # DISAL's ranking, ties keyed by (id, seed)
        m = min(n, max(k, math.ceil(self.beta * k)))
        cand = order[:m]
        R, a, H = trajectory_gradient_factors(inputs, self.options, self.embedding)
        # the draw runs over candidates in rank order, which depends on ids and seed only: position-free
        rng = np.random.default_rng(seed)
        if self.pick == "kmeanspp":
            weights = ((m - np.arange(m)) / m) ** self.gamma
            picks = cand[weighted_kmeanspp(R[:, cand], a, H[cand], weights, k, rng)]
        else:
            E = H[cand] if self.embedding == "features" else explicit_embedding(R[:, cand], a, H[cand])
            picks = cand[cluster_picks(E, k, rng, self.pick)]
        return _selection_from_picks(self.name, inputs, picks, scores, batch_size, seed)

    def __repr__(self) -> str:
        return f"DisalBatch({self.options}, beta={self.beta}, gamma={self.gamma}, embedding={self.embedding!r}, pick={self.pick!r})"
