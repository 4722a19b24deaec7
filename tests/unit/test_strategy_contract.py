"""One contract, every strategy: b unique pool ids, seeded determinism, clear errors, b > pool."""

from __future__ import annotations

import numpy as np
import pytest

from disal.strategies import (
    STRATEGY_NAMES, EmptyPoolError, MissingInputError, ScoringInputs, make_strategy, select_with_candidates,
)
from disal.strategies.influence import DIRECTIONS, head_logit_tangents

ALL = list(STRATEGY_NAMES) + ["disal:sign=descent:direction=segment:dynamic=previous",
                              "disal:direction=remaining:dynamic=none:lam=0", "disal:weights=lr",
                              "disal-batch:embedding=last:gamma=0", "disal-batch:beta=2:direction=segment:weights=lr",
                              "disal-batch:pick=centroid:embedding=features", "disal-batch:pick=cluster-top",
                              "disal-batch:pick=centroid:embedding=last"]


def random_inputs(n: int = 40, C: int = 4, d: int = 6, K: int = 3, seed: int = 0, multi_label: bool = False,
                  ids_offset: int = 1000) -> ScoringInputs:
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, d))
    W = np.cumsum(rng.normal(size=(K + 1, C, d)) * 0.3, axis=0)
    b = np.cumsum(rng.normal(size=(K + 1, C)) * 0.1, axis=0)
    tangents, norms = {}, {}
    for dkind in DIRECTIONS:
        logits, tangents[dkind], norms[dkind] = head_logit_tangents(feats, W, b, dkind)
    z = logits[-1]
    if multi_label:
        probs = 1 / (1 + np.exp(-z))
        mc = 1 / (1 + np.exp(-(z[None] + rng.normal(size=(8, n, C)) * 0.3)))
    else:
        e = np.exp(z - z.max(1, keepdims=True))
        probs = e / e.sum(1, keepdims=True)
        mz = z[None] + rng.normal(size=(8, n, C)) * 0.3
        mc = np.exp(mz - mz.max(2, keepdims=True))
        mc /= mc.sum(2, keepdims=True)
    # task ids that are not list positions: shuffled and offset
    ids = rng.permutation(n) * 7 + ids_offset
    return ScoringInputs(ids=ids, probs=probs, features=feats, labeled_features=rng.normal(size=(5, d)),
                         mc_probs=mc, traj_logits=logits, traj_tangents=tangents, traj_dir_norms=norms,
                         traj_lrs=np.array([0.0] + [0.01] * K), multi_label=multi_label,
                         head_fn=lambda x: np.asarray(x) @ W[-1].T + b[-1])  # the head behind probs


@pytest.fixture(params=ALL)
def strategy(request):
    return make_strategy(request.param)


@pytest.mark.parametrize("multi_label", [False, True], ids=["softmax", "sigmoid"])
def test_selects_b_unique_ids_from_the_pool(strategy, multi_label):
    inputs = random_inputs(multi_label=multi_label)
    sel = strategy.select(inputs, 7, seed=3)
    assert len(sel.selected) == 7
    assert len(set(sel.selected.tolist())) == 7
    assert set(sel.selected.tolist()) <= set(inputs.ids.tolist())
    # scores are per item, finite, aligned with ids; the order covers the whole pool once
    assert sel.scores.shape == (len(inputs),) and np.isfinite(sel.scores).all()
    assert sorted(sel.order.tolist()) == sorted(inputs.ids.tolist())
    assert sel.order[:7].tolist() == sel.selected.tolist()
    assert set(sel.scores_by_id()) == set(inputs.ids.tolist())


def test_same_seed_same_batch(strategy):
    a = strategy.select(random_inputs(seed=1), 5, seed=11)
    b = strategy.select(random_inputs(seed=1), 5, seed=11)
    assert a.selected.tolist() == b.selected.tolist()
    assert a.order.tolist() == b.order.tolist()


def test_empty_pool_raises_clear_error(strategy):
    empty = ScoringInputs(
        ids=np.array([], dtype=int), probs=np.zeros((0, 3)), features=np.zeros((0, 4)),
        labeled_features=np.zeros((1, 4)), mc_probs=np.zeros((5, 0, 3)), traj_logits=np.zeros((3, 0, 3)),
        traj_tangents={d: np.zeros((3, 0, 3)) for d in DIRECTIONS},
        traj_dir_norms={d: np.ones(3) for d in DIRECTIONS}, traj_lrs=np.zeros(3))
    with pytest.raises(EmptyPoolError, match="empty pool"):
        strategy.select(empty, 3, seed=0)


def test_batch_larger_than_pool_returns_the_pool(strategy):
    inputs = random_inputs(n=6)
    sel = strategy.select(inputs, 50, seed=0)
    assert sorted(sel.selected.tolist()) == sorted(inputs.ids.tolist())


def test_selection_is_keyed_by_id_not_position(strategy):
    """Permuting the pool rows changes nothing: ties and random draws are keyed by id and seed."""
    inputs = random_inputs(seed=4)
    perm = np.random.default_rng(0).permutation(len(inputs))
    permuted = inputs.subset(np.ones(len(inputs), bool))
    for name in ("ids", "probs", "features"):
        setattr(permuted, name, getattr(inputs, name)[perm])
    permuted.mc_probs = inputs.mc_probs[:, perm]
    permuted.traj_logits = inputs.traj_logits[:, perm]
    permuted.traj_tangents = {k: v[:, perm] for k, v in inputs.traj_tangents.items()}
    a = strategy.select(inputs, 5, seed=2)
    b = strategy.select(permuted, 5, seed=2)
    assert a.selected.tolist() == b.selected.tolist() and a.order.tolist() == b.order.tolist()
    sa, sb = a.scores_by_id(), b.scores_by_id()
    np.testing.assert_allclose([sa[i] for i in sorted(sa)], [sb[i] for i in sorted(sb)], rtol=1e-9, atol=1e-12)


def test_missing_inputs_raise_clear_error():
    bare = ScoringInputs(ids=np.arange(5))
    for name in ("entropy", "bald", "coreset", "badge", "disal", "disal-batch"):
        with pytest.raises(MissingInputError, match=name):
            make_strategy(name).select(bare, 2, seed=0)


def test_negative_batch_and_bad_names_raise():
    with pytest.raises(ValueError, match="batch size"):
        make_strategy("entropy").select(random_inputs(), -1, seed=0)
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("nope")
    with pytest.raises(ValueError, match="direction"):
        make_strategy("disal:direction=sideways")
    with pytest.raises(ValueError, match="takes no options"):
        make_strategy("entropy:lam=1")


def test_nan_scores_are_refused_not_silently_ranked():
    inputs = random_inputs()
    inputs.probs[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make_strategy("entropy").select(inputs, 3, seed=0)


def test_ties_are_broken_by_seed_not_position():
    inputs = ScoringInputs(ids=np.arange(100), probs=np.full((100, 2), 0.5))
    firsts = {make_strategy("entropy").select(inputs, 1, seed=s).selected[0] for s in range(20)}
    assert len(firsts) > 5


def test_candidate_subset_scores_only_candidates_and_ranks_the_rest_last():
    inputs = random_inputs(n=50)
    strat = make_strategy("disal")
    sel = select_with_candidates(strat, inputs, 5, seed=1, max_candidates=20)
    assert np.isfinite(sel.scores).sum() == 20
    assert np.isinf(sel.scores).sum() == 30
    finite_ids = set(inputs.ids[np.isfinite(sel.scores)].tolist())
    assert set(sel.selected.tolist()) <= finite_ids
    assert set(sel.order[:20].tolist()) == finite_ids and len(sel.order) == 50
    full = select_with_candidates(strat, inputs, 5, seed=1, max_candidates=None)
    assert np.isfinite(full.scores).all()
