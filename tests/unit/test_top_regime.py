"""The `top-N` regime: the hidden-state cache is exact, JVP = per-sample autograd, bounds hold, warm start round-trips."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from disal.strategies.influence import DisalOptions, disal_scores
from disal.trajectory import Trajectory
from test_influence_exact import per_sample_loss

TEXTS = ["the football match was good", "bank profit and market shares rose again this year", "new phone",
         "music award for the film star", "election vote minister party", "software",
         "the team won the game", "minister and party vote on the market"]


def _build_tiny_bert(folder: Path, layers: int) -> Path:
    spec = importlib.util.spec_from_file_location("tests_root_conftest", Path(__file__).parents[1] / "conftest.py")
    root = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root)
    return root.build_tiny_bert(folder, seed=3, layers=layers)


@pytest.fixture(scope="module")
def bert4(tmp_path_factory) -> Path:
    """A 4-block tiny BERT: top-2 leaves two blocks below the cache boundary."""
    return _build_tiny_bert(tmp_path_factory.mktemp("bert4"), layers=4)


def _adapter(path: Path, double: bool = False):
    from disal.training.adapter import HFTextAdapter

    ad = HFTextAdapter(str(path), num_labels=3, max_length=16, batch_size=3)
    if double:
        ad.model.double()
    return ad


def _one_by_one(ad, texts):
    """The full model on each text alone (no padding, no sorting): the reference the cache must reproduce."""
    z = np.concatenate([ad.logits([t]) for t in texts])
    h = np.concatenate([ad.encode([t]) for t in texts])
    return z, h


@pytest.mark.parametrize("n", [1, 2, 4])
def test_cached_top_forward_equals_full_model_fp32(bert4, n):
    """fp32 storage: top-N forward from the cache = the full model, logits and pooled features to 1e-6.

    n = 4 caches the embeddings' output (every block is trained).
    """
    from disal.training.hidden_cache import HiddenStateCache
    from disal.training.top import TopBlocks, top_outputs

    ad = _adapter(bert4)
    cache = HiddenStateCache(n, dtype=torch.float32)
    assert cache.fill(ad, list(range(len(TEXTS))), TEXTS) == len(TEXTS)
    top = TopBlocks(ad, n)
    assert [name for name, _ in top.named_parameters()] == ad.param_names(f"last-{n}")
    z, h = top_outputs(top, cache, list(range(len(TEXTS))), batch_size=3)  # padded batches in another order
    z0, h0 = _one_by_one(ad, TEXTS)
    np.testing.assert_allclose(z, z0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(h, h0, rtol=1e-6, atol=1e-6)
    # stored per task without padding: one row per token of the text alone
    assert cache.lengths(list(range(len(TEXTS)))).tolist() == [int(ad.tokenize([t])["attention_mask"].sum())
                                                                for t in TEXTS]


def test_cached_top_forward_fp16_within_stated_tolerance(bert4):
    """fp16 storage (the default): half the bytes; logits within 1e-2 of the full fp32 model (stated bound)."""
    from disal.training.hidden_cache import HiddenStateCache
    from disal.training.top import TopBlocks, top_outputs

    ad = _adapter(bert4)
    c16, c32 = HiddenStateCache(2), HiddenStateCache(2, dtype=torch.float32)
    ids = list(range(len(TEXTS)))
    c16.fill(ad, ids, TEXTS)
    c32.fill(ad, ids, TEXTS)
    assert c16.nbytes * 2 == c32.nbytes and c16.get(0).dtype == torch.float16
    z, h = top_outputs(TopBlocks(ad, 2), c16, ids)
    z0, h0 = _one_by_one(ad, TEXTS)
    np.testing.assert_allclose(z, z0, atol=1e-2)
    np.testing.assert_allclose(h, h0, atol=1e-2)
    assert not np.array_equal(z, z0)  # fp16 really was used: not bit-identical


def test_cache_keys_miss_on_changed_text_and_reload_from_disk(bert4, tmp_path):
    from disal.training.hidden_cache import HiddenStateCache, cache_key

    ad = _adapter(bert4)
    ids = list(range(4))
    cache = HiddenStateCache(2, tmp_path / "h")
    assert cache.fill(ad, ids, TEXTS[:4]) == 4
    assert cache.fill(ad, ids, TEXTS[:4]) == 0  # all hits
    assert len(list((tmp_path / "h").glob("*.npy"))) == 4
    # a changed text is a miss, and the task now maps to the new states
    before = cache.get(1).clone()
    assert cache.fill(ad, ids, [TEXTS[0], "completely different words here", TEXTS[2], TEXTS[3]]) == 1
    assert cache.get(1).shape != before.shape or not torch.equal(cache.get(1), before)
    assert len(cache._entries) == 4  # the stale entry was dropped from memory
    # the key separates model, N, max length, id and text
    keys = {cache_key("m", 2, 16, 1, "t"), cache_key("m2", 2, 16, 1, "t"), cache_key("m", 1, 16, 1, "t"),
            cache_key("m", 2, 32, 1, "t"), cache_key("m", 2, 16, 2, "t"), cache_key("m", 2, 16, 1, "u")}
    assert len(keys) == 6
    # a new process (new cache object, same folder) loads from disk without encoding, same values
    again = HiddenStateCache(2, tmp_path / "h")
    assert again.fill(ad, ids, TEXTS[:4]) == 0
    for i in (0, 2, 3):
        assert torch.equal(again.get(i), cache.get(i))


def test_memory_and_disk_bounds_fail_before_encoding(bert4, tmp_path, monkeypatch):
    from disal.training import hidden_cache
    from disal.training.hidden_cache import HiddenCacheTooLargeError, HiddenStateCache

    ad = _adapter(bert4)
    calls = []
    real = hidden_cache.boundary_states
    monkeypatch.setattr(hidden_cache, "boundary_states", lambda *a, **k: calls.append(1) or real(*a, **k))
    tokens = sum(int(ad.tokenize([t])["attention_mask"].sum()) for t in TEXTS)
    need = tokens * 32 * 2  # hidden 32, fp16
    with pytest.raises(HiddenCacheTooLargeError, match="max_bytes"):
        HiddenStateCache(2, max_bytes=need - 1).fill(ad, list(range(len(TEXTS))), TEXTS)
    with pytest.raises(HiddenCacheTooLargeError, match="max_disk_bytes"):
        HiddenStateCache(2, tmp_path / "d", max_disk_bytes=need).fill(ad, list(range(len(TEXTS))), TEXTS)
    assert calls == [] and not list((tmp_path / "d").glob("*.npy"))
    ok = HiddenStateCache(2, max_bytes=need)  # exactly at the bound fits
    ok.fill(ad, list(range(len(TEXTS))), TEXTS)
    assert ok.nbytes == need and calls


def _top2_over_texts(path: Path):
    """(adapter, ids, fp32 cache filled with TEXTS, TopBlocks over the top 2 blocks)."""
    from disal.training.hidden_cache import HiddenStateCache
    from disal.training.top import TopBlocks

    ad = _adapter(path)
    ids = list(range(len(TEXTS)))
    cache = HiddenStateCache(2, dtype=torch.float32)
    cache.fill(ad, ids, TEXTS)
    return ad, ids, cache, TopBlocks(ad, 2)


def _random_top_trajectory(top, k: int, seed: int, scale: float = 0.05) -> Trajectory:
    g = torch.Generator().manual_seed(seed)
    cps = [{n: p.detach().clone() for n, p in top.named_parameters()}]
    for _ in range(k):
        cps.append({n: t + scale * torch.randn(t.shape, generator=g, dtype=t.dtype) for n, t in cps[-1].items()})
    return Trajectory(list(cps[0]), cps, list(range(k + 1)), [0.0] + [1.0] * k)


@pytest.mark.parametrize("direction,dynamic", [("accumulated", "mean-prediction"), ("segment", "previous"),
                                               ("remaining", "none")])
def test_top_jvp_equals_per_sample_autograd_of_the_full_model(bert4, direction, dynamic):
    """DISAL by jvp through the top 2 blocks from the cache = per-sample autograd of the FULL model over the
    top-2 parameters (input ids in, so the cache itself is checked too), to 1e-5."""
    from disal.training.hidden_cache import HiddenStateCache
    from disal.training.top import TopBlocks, top_trajectory_arrays

    ad = _adapter(bert4, double=True)
    ids = list(range(len(TEXTS)))
    cache = HiddenStateCache(2, dtype=torch.float32)
    cache.fill(ad, ids, TEXTS)
    top = TopBlocks(ad, 2)
    traj = _random_top_trajectory(top, 3, seed=21)
    opts = DisalOptions(direction=direction, dynamic=dynamic, lam=0.0 if dynamic == "none" else 0.5)
    z, t, nrm, _ = top_trajectory_arrays(top, cache, ids, traj, [direction], batch_size=3)
    fast = disal_scores(z, t[direction], nrm[direction], opts)
    # the jvp swapped checkpoints in and back: the adapter's parameters are its own Parameters again
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in ad.model.parameters())

    params = dict(ad.model.named_parameters())
    names = traj.param_names
    ad.model.eval()
    probs = torch.softmax(torch.as_tensor(z), -1)
    slow = np.zeros(len(TEXTS))
    lam = opts.effective_lam
    for k in range(len(traj.checkpoints)):
        d = traj.direction(direction, k)
        norm = torch.sqrt(sum((v**2).sum() for v in d.values()))
        if norm == 0:
            continue
        with torch.no_grad():
            for n in names:
                params[n].copy_(traj.checkpoints[k][n])
        if k == 0:  # no history yet: q_0 = p_0 (docs/method.md)
            q = probs[0]
        else:
            q = probs[k - 1] if dynamic == "previous" else probs[1 : k + 1].mean(0)
        for i, text in enumerate(TEXTS):
            zi = ad.model(**ad.tokenize([text]))[0]
            y = torch.nn.functional.one_hot(probs[k][i].argmax(), 3).double()
            grads = torch.autograd.grad(per_sample_loss(zi, y, q[i], lam, False), [params[n] for n in names])
            slow[i] += -float(sum((gr * d[n]).sum() for gr, n in zip(grads, names)) / norm)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-7)
    assert np.abs(slow).max() > 1e-4
    # and the embeddings / lower blocks never entered the trajectory
    assert all(n.startswith(("encoder.encoder.layer.2.", "encoder.encoder.layer.3.", "classifier.")) for n in names)


def test_train_top_moves_only_the_top_blocks_and_head(bert4):
    from disal.training.hidden_cache import HiddenStateCache
    from disal.training.top import TopBlocks, TopConfig, top_outputs, train_top

    ad = _adapter(bert4)
    ids = list(range(len(TEXTS)))
    cache = HiddenStateCache(2)
    cache.fill(ad, ids, TEXTS)
    top = TopBlocks(ad, 2)
    before = {n: p.detach().clone() for n, p in ad.model.named_parameters()}
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    traj = train_top(top, cache, ids, y, config=TopConfig(min_steps=12, num_checkpoints=4, lr=1e-3,
                                                 head_init="random"), seed=1)
    assert traj.num_checkpoints == 4 and traj.param_names == ad.param_names("last-2")
    after = dict(ad.model.named_parameters())
    moved = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert moved and moved <= set(traj.param_names)
    assert all(torch.equal(before[n], after[n].detach()) for n in before if n.startswith("encoder.embeddings."))
    for n in traj.param_names:  # theta_0 is where training started, theta_K where it ended
        assert torch.equal(traj.checkpoints[0][n], before[n]) and torch.equal(traj.last()[n], after[n].detach())
    # the adapter shares the trained modules: its own full forward agrees with the cached top forward
    np.testing.assert_allclose(top_outputs(top, cache, ids)[0], _one_by_one(ad, TEXTS)[0], atol=1e-2)


def test_warm_start_round_trips_through_saved_trajectory(bert4, tmp_path):
    """theta_0 of round 2 = theta_K of round 1; from Trajectory.save/load the next round is identical."""
    from disal.training.top import TopConfig, train_top

    ad, ids, cache, top = _top2_over_texts(bert4)
    pretrained = top.state()
    cfg = TopConfig(min_steps=6, num_checkpoints=3, lr=1e-3)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    r1 = train_top(top, cache, ids[:5], y[:5], config=cfg, seed=1)
    r1.save(tmp_path / "r1")
    in_memory = train_top(top, cache, ids, y, config=cfg, seed=2, init=r1.last())
    top.load(pretrained)  # a fresh process: the model is wherever it was; the saved state alone must suffice
    loaded = Trajectory.load(tmp_path / "r1")
    from_disk = train_top(top, cache, ids, y, config=cfg, seed=2, init=loaded.last())
    for n in r1.param_names:
        assert torch.equal(in_memory.checkpoints[0][n], r1.last()[n])
        for a, b in zip(in_memory.checkpoints, from_disk.checkpoints):
            assert torch.equal(a[n], b[n])
    assert any(not torch.equal(in_memory.checkpoints[0][n], pretrained[n]) for n in r1.param_names)


def test_top_scoring_inputs_feed_every_kind_of_strategy(bert4):
    from disal.strategies import make_strategy
    from disal.training.top import top_outputs, top_scoring_inputs

    ad, ids, cache, top = _top2_over_texts(bert4)
    traj = _random_top_trajectory(top, 2, seed=4)
    pool, lab = ids[2:], ids[:2]
    for spec in ("disal", "margin", "badge", "coreset", "bald"):
        s = make_strategy(spec)
        inp = top_scoring_inputs(top, cache, pool, traj, labeled_ids=lab, strategy=s, mc_samples=4)
        sel = s.select(inp, 2, 0)
        assert len(sel.selected) == 2 and set(sel.selected) <= set(pool)
        assert inp.probs.shape == (len(pool), 3) and inp.features.shape == (len(pool), 32)
    # DISAL's features come from the jvp pass at theta_K, equal to a plain forward there
    inp = top_scoring_inputs(top, cache, pool, traj, strategy=make_strategy("disal"))
    top.load(traj.last())
    np.testing.assert_allclose(inp.features, top_outputs(top, cache, pool)[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec", ["static_influence", "default", "disal:last_checkpoint_only=true:dynamic=none:lam=0"])
def test_a_last_checkpoint_strategy_scores_the_same_from_the_last_checkpoint_alone(bert4, spec):
    """top-N computes only checkpoint K for a DISAL that reads nothing else (K+1 times fewer jvp passes):
    scores and the seeded selection equal those from the whole trajectory."""
    from disal.config import DEFAULT_STRATEGY
    from disal.strategies import make_strategy
    from disal.strategies import reads_only_last_checkpoint
    from disal.training.top import top_scoring_inputs, top_trajectory_arrays

    ad, ids, cache, top = _top2_over_texts(bert4)
    traj = _random_top_trajectory(top, 4, seed=5)
    s = make_strategy(DEFAULT_STRATEGY if spec == "default" else spec)
    assert reads_only_last_checkpoint(s)
    from disal.training.hidden_cache import PAD_MULTIPLE

    assert cache.batch(ids)["hidden_states"].shape[1] % PAD_MULTIPLE == 0, "few distinct shapes (the heap)"
    calls = []
    fast = top_scoring_inputs(top, cache, ids, traj, strategy=s, batch_size=3, progress=lambda d, n: calls.append((d, n)))
    assert fast.traj_logits.shape[0] == 1 and len(fast.traj_lrs) == 1
    assert calls == [(3, 8), (6, 8), (8, 8)], "the job's progress bar follows the jvp batches"
    full = top_scoring_inputs(top, cache, ids, traj, strategy=s, batch_size=3)
    logits, tangents, norms, feats = top_trajectory_arrays(top, cache, ids, traj, (s.options.direction,), batch_size=3)
    full.traj_logits, full.traj_tangents, full.traj_dir_norms = logits, tangents, norms
    full.traj_lrs, full.features = np.asarray(traj.lrs), feats
    assert full.traj_logits.shape[0] == len(traj.checkpoints)
    np.testing.assert_allclose(s.score(fast), s.score(full), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fast.features, full.features, atol=1e-6)
    assert list(s.select(fast, 3, seed=0).selected) == list(s.select(full, 3, seed=0).selected)
    assert not reads_only_last_checkpoint(make_strategy("disal"))


def test_the_probe_head_starts_the_round_at_the_linear_head_on_frozen_features(bert4):
    """head_init=probe (the default): theta_0's head is the linear head fitted on the pretrained blocks'
    pooled features, i.e. the head regime's model on the frozen encoder's features (LP-FT)."""
    from disal.training.head import HeadConfig, train_head
    from disal.training.hidden_cache import HiddenStateCache
    from disal.training.top import TopBlocks, TopConfig, train_top

    ad = _adapter(bert4)
    ids = list(range(len(TEXTS)))
    cache = HiddenStateCache(2, dtype=torch.float32)
    cache.fill(ad, ids, TEXTS)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    frozen = ad.encode(TEXTS)
    top = TopBlocks(ad, 2)
    traj = train_top(top, cache, ids, y, config=TopConfig(min_steps=4, num_checkpoints=2), seed=3)
    probe, _ = train_head(frozen, y, 3, False, HeadConfig(num_checkpoints=1), seed=3)
    theta0 = traj.checkpoints[0]
    torch.testing.assert_close(theta0["classifier.head.weight"], probe.head.weight.detach(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(theta0["classifier.head.bias"], probe.head.bias.detach(), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="head_init"):
        train_top(top, cache, ids, y, config=TopConfig(head_init="zeros"))
