"""Property tests over random logits and features (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from disal.strategies import ScoringInputs, make_strategy
from disal.strategies.diversity import coreset_greedy
from disal.strategies.influence import DisalOptions, disal_scores, head_logit_tangents, probabilities
from disal.strategies.uncertainty import bald_scores, entropy_scores, least_confidence_scores, margin_scores

finite = st.floats(-20, 20, allow_nan=False, allow_infinity=False)


@st.composite
def logits_arrays(draw, max_n=30, max_c=6):
    n = draw(st.integers(1, max_n))
    c = draw(st.integers(2, max_c))
    return draw(arrays(np.float64, (n, c), elements=finite))


@settings(max_examples=60, deadline=None)
@given(logits_arrays())
def test_uncertainty_scores_are_bounded_and_finite(z):
    p = probabilities(z, False)
    c = z.shape[1]
    lc, mg, en = least_confidence_scores(p), margin_scores(p), entropy_scores(p)
    assert np.all((lc >= -1e-12) & (lc <= 1 - 1 / c + 1e-9))
    assert np.all((mg <= 1e-12) & (mg >= -1 - 1e-12))
    assert np.all((en >= -1e-9) & (en <= np.log(c) + 1e-9))


@settings(max_examples=40, deadline=None)
@given(logits_arrays(max_n=10), st.integers(2, 6), st.integers(0, 1000))
def test_bald_is_nonnegative_and_zero_without_disagreement(z, t, seed):
    p = probabilities(z, False)
    same = np.repeat(p[None], t, axis=0)
    assert np.allclose(bald_scores(same), 0.0, atol=1e-9)
    noisy = probabilities(z[None] + np.random.default_rng(seed).normal(size=(t,) + z.shape), False)
    assert np.all(bald_scores(noisy) >= 0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 25), st.integers(2, 5), st.integers(1, 8), st.integers(1, 5), st.integers(0, 10_000),
       st.sampled_from(["accumulated", "segment", "remaining"]), st.floats(0, 3), st.booleans())
def test_disal_scores_finite_and_sign_flips(n, c, d, k, seed, direction, lam, multi_label):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, d)) * 3
    W = np.cumsum(rng.normal(size=(k + 1, c, d)), axis=0)
    b = np.cumsum(rng.normal(size=(k + 1, c)), axis=0)
    logits, tangents, norms = head_logit_tangents(h, W, b, direction)
    asc = disal_scores(logits, tangents, norms, DisalOptions(direction=direction, lam=lam, sign="ascent"),
                       multi_label=multi_label)
    desc = disal_scores(logits, tangents, norms, DisalOptions(direction=direction, lam=lam, sign="descent"),
                        multi_label=multi_label)
    assert np.isfinite(asc).all()
    np.testing.assert_allclose(asc, -desc)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 20), st.integers(1, 5), st.integers(0, 10_000), st.floats(0.1, 10))
def test_disal_is_invariant_to_direction_scale(n, k, seed, scale):
    """Dividing by ||d_k|| makes the score independent of how far training moved, only where."""
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, 4))
    W = np.cumsum(rng.normal(size=(k + 1, 3, 4)), axis=0)
    b = np.cumsum(rng.normal(size=(k + 1, 3)), axis=0)
    z, t, nrm = head_logit_tangents(h, W, b, "accumulated")
    opts = DisalOptions(dynamic="none", lam=0)
    np.testing.assert_allclose(disal_scores(z, t * scale, nrm * scale, opts), disal_scores(z, t, nrm, opts),
                               rtol=1e-9, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 40), st.integers(1, 6), st.integers(0, 10_000))
def test_coreset_first_pick_is_the_farthest_point(n, k, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    L = rng.normal(size=(4, 3))
    picks, _ = coreset_greedy(X, L, k, seed)
    d = ((X[:, None] - L[None]) ** 2).sum(-1).min(1)
    assert np.isclose(d[picks[0]], d.max())
    assert len(set(picks.tolist())) == min(k, n)


@settings(max_examples=30, deadline=None)
@given(logits_arrays(max_n=25), st.integers(0, 100), st.integers(0, 30))
def test_every_probability_strategy_is_a_permutation_of_the_pool(z, seed, b):
    n = len(z)
    p = probabilities(z, False)
    inputs = ScoringInputs(ids=np.arange(n) + 100, probs=p, features=z.copy(), labeled_features=z[:1])
    for name in ("least_confidence", "margin", "entropy", "badge", "coreset", "random"):
        sel = make_strategy(name).select(inputs, b, seed)
        assert sorted(sel.order.tolist()) == list(range(100, 100 + n))
        assert len(sel.selected) == min(b, n)


def _trajectory_inputs(n: int, c: int, d: int, k: int, seed: int, direction: str = "accumulated") -> ScoringInputs:
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, d)) * 2
    W = np.cumsum(rng.normal(size=(k + 1, c, d)), axis=0)
    b = np.cumsum(rng.normal(size=(k + 1, c)), axis=0)
    logits, tangents, norms = head_logit_tangents(h, W, b, direction)
    return ScoringInputs(ids=rng.permutation(n) * 3 + 7, probs=probabilities(logits[-1], False), features=h,
                         traj_logits=logits, traj_tangents={direction: tangents}, traj_dir_norms={direction: norms},
                         traj_lrs=np.array([0.0] + [0.1] * k))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(2, 5), st.integers(1, 6), st.integers(1, 4), st.integers(0, 10_000),
       st.integers(0, 45), st.floats(1.0, 6.0), st.sampled_from(["accumulated", "segment", "remaining"]))
def test_disal_batch_picks_within_disal_candidates_then_ranks_by_disal(n, c, d, k, seed, b, beta, direction):
    """The batch: DISAL's top item first, every pick among DISAL's top ceil(beta*b); the rest in DISAL order."""
    inputs = _trajectory_inputs(n, c, d, k, seed, direction)
    disal = make_strategy(f"disal:direction={direction}").select(inputs, n, seed)
    sel = make_strategy(f"disal-batch:beta={beta}:direction={direction}").select(inputs, b, seed)
    m = min(n, max(min(b, n), int(np.ceil(beta * min(b, n)))))
    assert len(sel.selected) == len(set(sel.selected.tolist())) == min(b, n)
    assert set(sel.selected.tolist()) <= set(disal.order[:m].tolist())
    if b > 0:
        assert sel.selected[0] == disal.order[0]
    rest = [i for i in disal.order.tolist() if i not in set(sel.selected.tolist())]
    assert sel.order[len(sel.selected):].tolist() == rest


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(2, 5), st.integers(1, 6), st.integers(1, 4), st.integers(0, 10_000),
       st.integers(0, 45), st.floats(1.0, 6.0), st.sampled_from(["centroid", "cluster-top"]),
       st.sampled_from(["trajectory", "last", "features"]))
def test_disal_batch_cluster_picks_are_distinct_disal_candidates_in_disal_order(n, c, d, k, seed, b, beta, pick,
                                                                                 embedding):
    """pick=centroid|cluster-top: b distinct picks among DISAL's top ceil(beta*b), listed in DISAL's order,
    then every other item in DISAL order."""
    inputs = _trajectory_inputs(n, c, d, k, seed)
    disal = make_strategy("disal").select(inputs, n, seed)
    sel = make_strategy(f"disal-batch:beta={beta}:pick={pick}:embedding={embedding}").select(inputs, b, seed)
    m = min(n, max(min(b, n), int(np.ceil(beta * min(b, n)))))
    rank = {int(i): r for r, i in enumerate(disal.order.tolist())}
    assert len(sel.selected) == len(set(sel.selected.tolist())) == min(b, n)
    assert all(rank[int(i)] < m for i in sel.selected)
    assert [rank[int(i)] for i in sel.selected] == sorted(rank[int(i)] for i in sel.selected)
    rest = [i for i in disal.order.tolist() if i not in set(sel.selected.tolist())]
    assert sel.order[len(sel.selected):].tolist() == rest


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 30), st.integers(2, 5), st.integers(1, 4), st.integers(0, 10_000), st.integers(0, 30))
def test_disal_batch_with_beta_one_is_disal_top_b(n, c, k, seed, b):
    """beta = 1 leaves exactly b candidates: the batch is DISAL's top-b set (diversity only reorders it)."""
    inputs = _trajectory_inputs(n, c, 4, k, seed)
    top = make_strategy("disal").select(inputs, b, seed).selected
    got = make_strategy("disal-batch:beta=1").select(inputs, b, seed).selected
    assert set(got.tolist()) == set(top.tolist())
