"""scikit-activeml 1.0.1's DropQuery, FALCUN, TypiClust and ProbCover through their own code, on tiny arrays.

The shared contract (b distinct pool ids, same seed same batch, keyed by id, clear errors) runs for
them in test_peer_strategies.py; here each one is checked on a problem whose answer is known.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skactiveml", reason="benchmark extras: make install-bench")

from disal.bench.peers import make_bench_strategy  # noqa: E402
from disal.strategies import ScoringInputs, make_strategy  # noqa: E402

SPECS = ["skactiveml:dropquery", "skactiveml:falcun", "skactiveml:typiclust", "skactiveml:probcover"]


def blobs(per: int = 15, d: int = 8, spread: float = 0.05, seed: int = 0):
    """Four tight clusters on orthogonal unit directions; a linear head that tells them apart."""
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[:4]
    y = np.repeat(np.arange(4), per)
    X = centres[y] + spread * rng.normal(size=(len(y), d))
    W = 3.0 * centres + 0.3 * rng.normal(size=(4, d))
    return X, y, W


def inputs_for(X: np.ndarray, W: np.ndarray, labeled: np.ndarray, ids: np.ndarray | None = None) -> ScoringInputs:
    pool = np.setdiff1d(np.arange(len(X)), labeled)
    z = X[pool] @ W.T
    p = np.exp(z - z.max(1, keepdims=True))
    return ScoringInputs(ids=pool * 5 + 3 if ids is None else ids, probs=p / p.sum(1, keepdims=True),
                         features=X[pool], labeled_features=X[labeled], head_fn=lambda x: np.asarray(x) @ W.T)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("b", [1, 4, 9])
def test_returns_b_distinct_pool_ids_deterministically(spec, b):
    X, _, W = blobs()
    inputs = inputs_for(X, W, labeled=np.array([0, 15]))
    s = make_bench_strategy(spec)
    a, again = s.select(inputs, b, seed=3), s.select(inputs, b, seed=3)
    assert len(a.selected) == len(set(a.selected.tolist())) == b
    assert set(a.selected.tolist()) <= set(inputs.ids.tolist())
    assert a.selected.tolist() == again.selected.tolist() and a.order.tolist() == again.order.tolist()
    assert np.isfinite(a.scores).all()


@pytest.mark.parametrize("spec", ["skactiveml:falcun", "skactiveml:dropquery"])
def test_sampling_peers_follow_the_seed(spec):
    X, _, W = blobs(per=25, spread=0.3, seed=1)
    inputs = inputs_for(X, W, labeled=np.array([0]))
    s = make_bench_strategy(spec)
    assert len({tuple(s.select(inputs, 6, seed=k).selected.tolist()) for k in range(6)}) > 1


def test_falcun_scores_follow_our_margin():
    """FALCUN's first step ranks by margin uncertainty: its scores are a monotone map of our margin's."""
    X, _, W = blobs(per=30, spread=0.4, seed=2)
    inputs = inputs_for(X, W, labeled=np.array([0]))
    falcun = make_bench_strategy("skactiveml:falcun").select(inputs, 3, seed=0).scores
    ours = make_strategy("margin").score(inputs)
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert np.corrcoef(rank(falcun), rank(ours))[0, 1] > 0.999


def test_typiclust_picks_one_item_in_each_uncovered_cluster():
    X, y, W = blobs(seed=3)
    labeled = np.array([0, 15])  # one item of clusters 0 and 1: those are covered
    inputs = inputs_for(X, W, labeled)
    pool = np.setdiff1d(np.arange(len(X)), labeled)
    sel = make_bench_strategy("skactiveml:typiclust").select(inputs, 2, seed=0)
    picked = y[pool][[list(inputs.ids).index(i) for i in sel.selected]]
    assert sorted(picked.tolist()) == [2, 3]


def test_probcover_scores_zero_in_covered_clusters_and_picks_elsewhere():
    X, y, W = blobs(seed=4)
    labeled = np.array([0, 15])
    inputs = inputs_for(X, W, labeled)
    pool_y = y[np.setdiff1d(np.arange(len(X)), labeled)]
    sel = make_bench_strategy("skactiveml:probcover").select(inputs, 2, seed=0)
    covered = np.isin(pool_y, [0, 1])
    assert (sel.scores[covered] == 0).all()  # nothing left to cover near a labeled item
    assert (sel.scores[~covered] > 0).all()
    picked = pool_y[[list(inputs.ids).index(i) for i in sel.selected]]
    assert sorted(picked.tolist()) == [2, 3]


def test_dropquery_predicts_with_our_head_on_dropped_features():
    """DropQuery's disagreement comes from OUR head run on its feature-dropped copies of the pool."""
    X, _, W = blobs(per=20, spread=0.3, seed=5)
    calls: list[np.ndarray] = []
    inputs = inputs_for(X, W, labeled=np.array([0]))
    real = inputs.head_fn

    def spy(x):
        calls.append(np.asarray(x).copy())
        return real(x)

    inputs.head_fn = spy
    make_bench_strategy("skactiveml:dropquery").select(inputs, 4, seed=0)
    dropped = [c for c in calls if len(c) == len(inputs)]
    assert len(dropped) >= 5  # the clean pass and the library's 5 dropout passes
    zero_share = [(c == 0).mean() for c in dropped]
    assert min(zero_share) < 0.05 and max(zero_share) > 0.6  # clean rows, and rows with ~75% dropped


def test_peers_refuse_missing_head_and_labeled_inputs():
    X, _, W = blobs()
    inputs = inputs_for(X, W, labeled=np.array([0]))
    inputs.head_fn = None
    from disal.strategies import MissingInputError

    with pytest.raises(MissingInputError, match="head_fn"):
        make_bench_strategy("skactiveml:dropquery").select(inputs, 2, seed=0)


@pytest.fixture
def one_torch_thread():
    """As simulate() does: tiny matrices on a shared CPU run far faster on one thread than on two."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("mode", ["head", "mlp"])
def test_simulator_runs_the_skactiveml_peers_beside_disal_batch(mode, one_torch_thread):
    from disal.bench.simulator import HeadSimulation, SimulationConfig
    from disal.training.head import HeadConfig

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 12)) * 2
    ytr, yte = rng.integers(0, 3, 150), rng.integers(0, 3, 60)
    Xtr = (centres[ytr] + rng.normal(size=(150, 12))).astype(np.float32)
    Xte = (centres[yte] + rng.normal(size=(60, 12))).astype(np.float32)
    specs = SPECS + ["disal-batch"]
    cfg = SimulationConfig(strategies=specs, seeds=1, initial=10, batch=5, rounds=1, train_mode=mode,
                           head=HeadConfig(steps=25), mlp_hidden=16, device="cpu", mc_samples=4)
    sim = HeadSimulation(Xtr, ytr, Xte, yte, 3, cfg)
    for spec in specs:
        rows = list(sim.run(spec, 0))
        assert [r["n_labeled"] for r in rows] == [10, 15], spec
        assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
