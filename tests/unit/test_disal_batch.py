"""DISAL-batch: its embedding is the trajectory's per-sample gradient, and it does not pick duplicates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from disal.strategies import DisalBatch, DisalOptions, ScoringInputs, make_strategy, needs
from disal.strategies.disal_batch import _sq_dists_to, trajectory_gradient_factors
from disal.strategies.influence import head_logit_tangents, probabilities
from test_influence_exact import make_head_trajectory, per_sample_loss


def _inputs_from_head(h: np.ndarray, W: np.ndarray, b: np.ndarray, direction: str = "accumulated",
                      ids: np.ndarray | None = None) -> ScoringInputs:
    logits, tangents, norms = head_logit_tangents(h, W, b, direction)
    return ScoringInputs(ids=np.arange(len(h)) if ids is None else ids, probs=probabilities(logits[-1], False),
                         features=h, traj_logits=logits, traj_tangents={direction: tangents},
                         traj_dir_norms={direction: norms}, traj_lrs=np.array([0.0] + [0.2] * (len(W) - 1)))


@pytest.mark.parametrize("dynamic,lam", [("none", 0.0), ("mean-prediction", 0.7), ("previous", 1.3)])
def test_embedding_is_the_per_checkpoint_gradient_of_the_disal_loss(dynamic, lam):
    """For a linear head: sqrt(a_k) r~_k (x) [h, 1] per checkpoint = sqrt(a_k) * autograd of l~_k w.r.t. (W, b)."""
    W, b = make_head_trajectory(3, 4, 5, seed=2)
    h = torch.randn(6, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    opts = DisalOptions(dynamic=dynamic, lam=lam)
    inputs = _inputs_from_head(h.numpy(), W.numpy(), b.numpy())
    R, a, H = trajectory_gradient_factors(inputs, opts)
    assert len(a) == 3 and np.isclose(a.sum(), 1.0)  # checkpoints 1..3: accumulated d_0 = 0 is skipped
    probs = [torch.softmax(h @ W[k].T + b[k], -1) for k in range(4)]
    for j, k in enumerate((1, 2, 3)):
        q = probs[k - 1] if dynamic == "previous" else torch.stack(probs[1 : k + 1]).mean(0)
        for i in range(len(h)):
            Wk, bk = W[k].clone().requires_grad_(True), b[k].clone().requires_grad_(True)
            y = torch.nn.functional.one_hot(probs[k][i].argmax(), 4).double()
            gW, gb = torch.autograd.grad(per_sample_loss(h[i] @ Wk.T + bk, y, q[i].detach(), lam, False), (Wk, bk))
            grad = torch.cat([gW, gb[:, None]], dim=1).numpy()  # (C, d + 1)
            np.testing.assert_allclose(np.outer(R[j, i], H[i]), grad, rtol=1e-9, atol=1e-12)


def test_factored_distances_equal_the_explicit_embedding():
    W, b = make_head_trajectory(4, 3, 6, seed=4)
    h = np.random.default_rng(5).normal(size=(9, 6))
    R, a, H = trajectory_gradient_factors(_inputs_from_head(h, W.numpy(), b.numpy(), "segment"),
                                          DisalOptions(direction="segment", weights="lr"))
    E = np.concatenate([np.sqrt(a[k]) * np.einsum("nc,nd->ncd", R[k], H).reshape(len(h), -1) for k in range(len(a))],
                       axis=1)
    sq = (E**2).sum(1)
    for j in (0, 4, 8):
        np.testing.assert_allclose(_sq_dists_to(R, a, H, sq, j), ((E - E[j]) ** 2).sum(1), rtol=1e-9, atol=1e-9)


def test_duplicates_of_the_top_item_are_not_picked_twice():
    """Seven copies of DISAL's favourite: plain top-b takes them all, DISAL-batch takes one."""
    W, b = make_head_trajectory(3, 4, 5, seed=6)
    rng = np.random.default_rng(7)
    base = rng.normal(size=(40, 5)) * 2
    inputs = _inputs_from_head(base, W.numpy(), b.numpy())
    top = make_strategy("disal").select(inputs, 1, 0).selected[0]
    h = np.concatenate([base, np.repeat(base[top : top + 1], 6, axis=0)])
    dup = _inputs_from_head(h, W.numpy(), b.numpy(), ids=rng.permutation(len(h)) + 500)
    copies = set(dup.ids[[top] + list(range(40, 46))].tolist())
    plain = make_strategy("disal").select(dup, 7, seed=1)
    assert set(plain.selected.tolist()) == copies
    for seed in range(5):
        batch = make_strategy("disal-batch").select(dup, 7, seed=seed)
        assert len(set(batch.selected.tolist()) & copies) == 1
        assert batch.selected[0] in copies  # still led by DISAL's top item


@pytest.mark.parametrize("pick", ["centroid", "cluster-top"])
def test_cluster_picks_take_one_item_per_feature_blob(pick):
    """Four far-apart blobs among DISAL's candidates, a batch of 4: one pick in each blob, whatever DISAL's
    order inside them (DISAL's top-4 alone would take whichever blob it ranks highest)."""
    from disal.strategies.disal_batch import cluster_picks
    rng = np.random.default_rng(11)
    centres = np.array([[40.0, 0, 0], [0, 40.0, 0], [0, 0, 40.0], [-40.0, -40.0, 0]])
    blob = rng.permutation(np.repeat(np.arange(4), 10))
    E = centres[blob] + rng.normal(size=(40, 3))
    for seed in range(5):
        got = cluster_picks(E, 4, np.random.default_rng(seed), pick)
        assert sorted(blob[got].tolist()) == [0, 1, 2, 3]
        assert got.tolist() == sorted(got.tolist())  # in rank order
        if pick == "cluster-top":  # the best-ranked member of each blob
            assert got.tolist() == sorted(int(np.flatnonzero(blob == g)[0]) for g in range(4))
        else:  # the member nearest each blob's centre
            for i in got:
                members = np.flatnonzero(blob == blob[i])
                assert i == members[np.argmin(((E[members] - E[members].mean(0)) ** 2).sum(1))]


def test_cluster_picks_fill_a_batch_of_coinciding_candidates_in_rank_order():
    from disal.strategies.disal_batch import cluster_picks
    E = np.ones((12, 3))
    assert cluster_picks(E, 5, np.random.default_rng(0), "centroid").tolist() == [0, 1, 2, 3, 4]
    E[7] = 9.0  # two distinct points: k-means finds them; the rest of the batch is the best-ranked left
    got = cluster_picks(E, 5, np.random.default_rng(0), "centroid").tolist()
    assert len(set(got)) == 5 and 7 in got


def test_spec_options_are_typed_and_checked():
    s = make_strategy("disal-batch:beta=4:gamma=0.5:embedding=last:sign=ascent")
    assert isinstance(s, DisalBatch) and (s.beta, s.gamma, s.embedding) == (4.0, 0.5, "last")
    assert s.options.sign == "ascent" and s.name == "disal-batch:beta=4:gamma=0.5:embedding=last:sign=ascent"
    assert make_strategy("disal-batch:pick=centroid:embedding=features").pick == "centroid"
    assert make_strategy("disal-batch", lam=0.9).options.lam == 0.9  # the simulator's DISAL options apply
    assert needs(make_strategy("disal-batch")) == {"trajectory", "probs", "features"}
    for bad in ("disal-batch:beta=0.5", "disal-batch:gamma=-1", "disal-batch:embedding=full", "disal-batch:pick=top",
                "disal-batch:direction=up"):
        with pytest.raises(ValueError):
            make_strategy(bad)
