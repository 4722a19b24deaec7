"""DISAL's fast paths equal the definition computed the slow way, with per-sample autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from disal.strategies.influence import DisalOptions, disal_scores, head_logit_tangents
from disal.trajectory import Trajectory


def make_head_trajectory(n_ckpt: int, C: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = [torch.randn(C, d, generator=g, dtype=torch.float64) * 0.5]
    b = [torch.randn(C, generator=g, dtype=torch.float64) * 0.1]
    for _ in range(n_ckpt):
        W.append(W[-1] + 0.3 * torch.randn(C, d, generator=g, dtype=torch.float64))
        b.append(b[-1] + 0.1 * torch.randn(C, generator=g, dtype=torch.float64))
    return torch.stack(W), torch.stack(b)


def per_sample_loss(z: torch.Tensor, y: torch.Tensor, q: torch.Tensor, lam: float, multi_label: bool):
    """l~ = CE(p, y) + lam * KL(q || p) written from scratch (softmax) or with Bernoulli terms (sigmoid)."""
    if multi_label:
        logp, log1mp = torch.nn.functional.logsigmoid(z), torch.nn.functional.logsigmoid(-z)
        ce = -(y * logp + (1 - y) * log1mp).sum()
        kl = (q * (torch.log(q.clamp_min(1e-300)) - logp) + (1 - q) * (torch.log((1 - q).clamp_min(1e-300)) - log1mp)).sum()
    else:
        logp = torch.log_softmax(z, dim=-1)
        ce = -(y * logp).sum()
        kl = (q * (torch.log(q.clamp_min(1e-300)) - logp)).sum()
    return ce + lam * kl


def brute_force_head(h, W, b, opts: DisalOptions, multi_label: bool, lrs=None) -> np.ndarray:
    """sum_k w_k * sign * <grad_{W,b} l~_k(x; theta_k), d_k> / ||d_k|| with per-sample autograd."""
    K1 = W.shape[0]
    N = h.shape[0]
    act = torch.sigmoid if multi_label else (lambda z: torch.softmax(z, -1))
    probs = [act(h @ W[k].T + b[k]).detach() for k in range(K1)]
    lam = opts.effective_lam
    sign = -1.0 if opts.sign == "descent" else 1.0
    scores = np.zeros(N)
    for k in range(K1):
        if opts.last_checkpoint_only and k != K1 - 1:
            continue
        if opts.direction == "accumulated":
            dW, db = W[k] - W[0], b[k] - b[0]
        elif opts.direction == "segment":
            dW, db = (W[k] - W[k - 1], b[k] - b[k - 1]) if k > 0 else (W[0] * 0, b[0] * 0)
        else:
            dW, db = W[-1] - W[k], b[-1] - b[k]
        norm = torch.sqrt((dW**2).sum() + (db**2).sum())
        if norm == 0:
            continue
        if opts.dynamic == "previous":
            q_all = probs[k - 1] if k > 0 else probs[0]
        else:
            q_all = torch.stack(probs[1 : k + 1]).mean(0) if k > 0 else probs[0]
        w = 1.0 if opts.weights == "uniform" else lrs[k]
        for i in range(N):
            Wk = W[k].clone().requires_grad_(True)
            bk = b[k].clone().requires_grad_(True)
            p = probs[k][i]
            y = (p > 0.5).double() if multi_label else torch.nn.functional.one_hot(p.argmax(), p.shape[-1]).double()
            loss = per_sample_loss(h[i] @ Wk.T + bk, y, q_all[i], lam, multi_label)
            gW, gb = torch.autograd.grad(loss, (Wk, bk))
            scores[i] += w * sign * float(((gW * dW).sum() + (gb * db).sum()) / norm)
    return scores


OPTION_GRID = [
    DisalOptions(direction=d, dynamic=dyn, lam=lam, sign=s)
    for d in ("accumulated", "segment", "remaining")
    for dyn, lam in (("none", 0.0), ("mean-prediction", 0.7), ("previous", 1.3))
    for s in ("descent", "ascent")
]


@pytest.mark.parametrize("multi_label", [False, True], ids=["softmax", "sigmoid"])
@pytest.mark.parametrize("opts", OPTION_GRID, ids=lambda o: f"{o.direction}-{o.dynamic}-{o.sign}")
def test_head_closed_form_equals_per_sample_autograd(opts, multi_label):
    N, C, d, K = 7, 4, 5, 3
    W, b = make_head_trajectory(K, C, d, seed=1)
    h = torch.randn(N, d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    logits, tangents, norms = head_logit_tangents(h.numpy(), W.numpy(), b.numpy(), opts.direction)
    fast = disal_scores(logits, tangents, norms, opts, multi_label=multi_label)
    slow = brute_force_head(h, W, b, opts, multi_label)
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-9)
    assert np.abs(slow).max() > 1e-3  # the comparison is not between two zero vectors


def test_lr_weighting_matches_brute_force():
    W, b = make_head_trajectory(4, 3, 6, seed=3)
    h = torch.randn(5, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    lrs = np.array([0.0, 0.5, 0.25, 0.125, 0.0625])
    opts = DisalOptions(weights="lr", direction="segment")
    logits, tangents, norms = head_logit_tangents(h.numpy(), W.numpy(), b.numpy(), "segment")
    np.testing.assert_allclose(disal_scores(logits, tangents, norms, opts, lrs=lrs),
                               brute_force_head(h, W, b, opts, False, lrs), rtol=1e-9, atol=1e-12)


def test_static_influence_equals_plain_definition():
    """K = 1, lambda = 0: S(x) = sign * <grad CE(f(x; theta_K), argmax), theta_K - theta_0> / ||.||."""
    W, b = make_head_trajectory(1, 3, 4, seed=5)
    h = torch.randn(9, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    for sign in ("descent", "ascent"):
        opts = DisalOptions(dynamic="none", lam=0.0, sign=sign)
        logits, tangents, norms = head_logit_tangents(h.numpy(), W.numpy(), b.numpy(), "accumulated")
        fast = disal_scores(logits, tangents, norms, opts)
        plain = []
        dW, db = W[1] - W[0], b[1] - b[0]
        norm = torch.sqrt((dW**2).sum() + (db**2).sum())
        for i in range(len(h)):
            Wk, bk = W[1].clone().requires_grad_(True), b[1].clone().requires_grad_(True)
            z = Wk @ h[i] + bk
            loss = torch.nn.functional.cross_entropy(z[None], z.argmax()[None])
            gW, gb = torch.autograd.grad(loss, (Wk, bk))
            plain.append((-1 if sign == "descent" else 1) * float(((gW * dW).sum() + (gb * db).sum()) / norm))
        np.testing.assert_allclose(fast, plain, rtol=1e-9, atol=1e-12)
        # and the registered static_influence strategy (last checkpoint only) agrees on a K = 1 trajectory
        from disal.strategies import ScoringInputs, make_strategy

        inp = ScoringInputs(np.arange(len(h)), traj_logits=logits, traj_tangents={"accumulated": tangents},
                            traj_dir_norms={"accumulated": norms})
        np.testing.assert_allclose(make_strategy("static_influence", sign=sign).score(inp), plain, rtol=1e-9, atol=1e-12)


def test_jvp_all_params_equals_per_sample_autograd(tiny_model_dir):
    """params=all on a tiny BERT: one jvp per checkpoint equals per-sample <grad, d> by autograd."""
    from disal.training.adapter import HFTextAdapter
    from disal.training.jvp import logit_tangents_jvp

    torch.manual_seed(0)
    ad = HFTextAdapter(str(tiny_model_dir), num_labels=3, max_length=16)
    ad.model.double()
    names = ad.param_names("all")
    params = dict(ad.model.named_parameters())
    g = torch.Generator().manual_seed(7)
    cps = [{n: params[n].detach().clone() for n in names}]
    for _ in range(2):
        cps.append({n: t + 0.02 * torch.randn(t.shape, generator=g, dtype=t.dtype) for n, t in cps[-1].items()})
    traj = Trajectory(names, cps, [0, 1, 2], [0.0, 1.0, 1.0])
    texts = ["the football match was good", "bank profit and market shares", "new phone software", "music award"]
    batch = ad.tokenize(texts)
    opts = DisalOptions(direction="accumulated", dynamic="mean-prediction", lam=0.5, sign="descent")
    logits, tangents, norms = logit_tangents_jvp(ad.model, traj, batch, ["accumulated"])
    fast = disal_scores(logits, tangents["accumulated"], norms["accumulated"], opts)

    ad.model.eval()
    probs = torch.softmax(torch.as_tensor(logits), -1)
    slow = np.zeros(len(texts))
    for k in (1, 2):
        d = traj.direction("accumulated", k)
        norm = torch.sqrt(sum((t**2).sum() for t in d.values()))
        with torch.no_grad():
            for n in names:
                params[n].copy_(cps[k][n])
        q = probs[1 : k + 1].mean(0)
        for i in range(len(texts)):
            one = {key: v[i : i + 1] for key, v in batch.items()}
            z = ad.model(**one)[0]
            y = torch.nn.functional.one_hot(probs[k][i].argmax(), 3).double()
            loss = per_sample_loss(z, y, q[i], 0.5, False)
            grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
            dot = sum((gr * d[n]).sum() for gr, n in zip(grads, names) if gr is not None)
            slow[i] += -float(dot / norm)
    np.testing.assert_allclose(fast, slow, rtol=1e-6, atol=1e-8)
    assert np.abs(slow).max() > 1e-4


def test_jvp_head_only_equals_closed_form(tiny_model_dir):
    """The forward-mode path over the full model agrees with the closed form when only the head moves."""
    from disal.training.adapter import HFTextAdapter
    from disal.training.jvp import logit_tangents_jvp

    ad = HFTextAdapter(str(tiny_model_dir), num_labels=4, max_length=16)
    ad.model.double()
    texts = ["the team won the match", "minister and party vote", "film star music", "software internet game",
             "bank market"]
    feats = torch.as_tensor(ad.encode(texts), dtype=torch.float64)
    Wt, bt = make_head_trajectory(3, 4, feats.shape[1], seed=9)
    names = ["classifier.head.weight", "classifier.head.bias"]
    traj = Trajectory(names, [{names[0]: Wt[k], names[1]: bt[k]} for k in range(4)], [0, 1, 2, 3], [0, 1, 1, 1])
    opts = DisalOptions(direction="segment", dynamic="previous", lam=0.3)
    z, t, nrm = logit_tangents_jvp(ad.model, traj, ad.tokenize(texts), ["segment"])
    lz, lt, ln = head_logit_tangents(feats.numpy(), Wt.numpy(), bt.numpy(), "segment")
    np.testing.assert_allclose(z, lz, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(disal_scores(z, t["segment"], nrm["segment"], opts),
                               disal_scores(lz, lt, ln, opts), rtol=1e-5, atol=1e-6)


def _random_trajectory(ad, params: str, k: int, seed: int, scale: float = 0.02) -> Trajectory:
    names = ad.param_names(params)
    current = dict(ad.model.named_parameters())
    g = torch.Generator().manual_seed(seed)
    cps = [{n: current[n].detach().clone() for n in names}]
    for _ in range(k):
        cps.append({n: t + scale * torch.randn(t.shape, generator=g, dtype=t.dtype) for n, t in cps[-1].items()})
    return Trajectory(names, cps, list(range(k + 1)), [0.0] + [1.0] * k)


TEXTS = ["the football match was good", "bank profit and market shares rose again this year", "new phone",
         "music award for the film star", "election vote minister party", "software"]


@pytest.mark.parametrize("params", ["last-1", "last-2"])
def test_jvp_last_n_cached_prefix_equals_full_jvp(tiny_model_dir, params):
    """last-N: frozen lower blocks run once per batch and are fed to the top blocks; same numbers as the full jvp."""
    from disal.training.adapter import HFTextAdapter
    from disal.training.jvp import block_input, frozen_prefix, logit_tangents_jvp

    ad = HFTextAdapter(str(tiny_model_dir), num_labels=3, max_length=16)
    ad.model.double()
    traj = _random_trajectory(ad, params, 3, seed=11)
    batch = ad.tokenize(TEXTS)  # padded: the mask matters in the cached blocks too
    dirs = ["accumulated", "segment", "remaining"]
    prefix = frozen_prefix(ad.model, traj.param_names)
    if params == "last-2":  # the tiny BERT has 2 blocks: last-2 = every block, nothing below to cache
        assert prefix is None
    else:
        assert prefix is not None and prefix[1] == 1 and block_input(ad.model, *prefix, batch) is not None
    z1, t1, n1, h1 = logit_tangents_jvp(ad.model, traj, batch, dirs, cache_frozen=True, return_features=True)
    z0, t0, n0, h0 = logit_tangents_jvp(ad.model, traj, batch, dirs, cache_frozen=False, return_features=True)
    np.testing.assert_allclose(z1, z0, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(h1, h0, rtol=1e-6, atol=1e-6)
    for d in dirs:
        np.testing.assert_allclose(t1[d], t0[d], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(n1[d], n0[d])
    assert np.abs(t0["accumulated"]).max() > 1e-4
    # the model is restored: its blocks are the real ones again and a plain forward is unchanged
    assert all(type(b).__name__ != "_Skip" for b in ad.model.encoder.encoder.layer)
    ad.load_checkpoint(traj, -1)
    with torch.no_grad():
        np.testing.assert_allclose(ad.model(**batch).numpy(), z0[-1], rtol=1e-6, atol=1e-8)


def test_jvp_cached_prefix_on_a_deeper_model(tmp_path):
    """4 blocks, last-2: blocks 0-1 cached, and the DISAL scores equal per-sample autograd (not just the full jvp)."""
    import importlib.util
    from pathlib import Path

    from disal.training.adapter import HFTextAdapter
    from disal.training.jvp import frozen_prefix, logit_tangents_jvp

    spec = importlib.util.spec_from_file_location("tests_root_conftest", Path(__file__).parents[1] / "conftest.py")
    root = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root)
    build_tiny_bert = root.build_tiny_bert

    ad = HFTextAdapter(str(build_tiny_bert(tmp_path / "bert4", seed=3, layers=4)), num_labels=3, max_length=16)
    ad.model.double()
    traj = _random_trajectory(ad, "last-2", 2, seed=12)
    assert frozen_prefix(ad.model, traj.param_names)[1] == 2
    batch = ad.tokenize(TEXTS)
    opts = DisalOptions(direction="accumulated", dynamic="mean-prediction", lam=0.5, sign="descent")
    z, t, nrm = logit_tangents_jvp(ad.model, traj, batch, ["accumulated"])
    fast = disal_scores(z, t["accumulated"], nrm["accumulated"], opts)
    z0, t0, _ = logit_tangents_jvp(ad.model, traj, batch, ["accumulated"], cache_frozen=False)
    np.testing.assert_allclose(t["accumulated"], t0["accumulated"], rtol=1e-6, atol=1e-8)

    params = dict(ad.model.named_parameters())
    names = traj.param_names
    ad.model.eval()
    probs = torch.softmax(torch.as_tensor(z), -1)
    slow = np.zeros(len(TEXTS))
    for k in (1, 2):
        d = traj.direction("accumulated", k)
        norm = torch.sqrt(sum((v**2).sum() for v in d.values()))
        with torch.no_grad():
            for n in names:
                params[n].copy_(traj.checkpoints[k][n])
        q = probs[1 : k + 1].mean(0)
        for i in range(len(TEXTS)):
            one = {key: v[i : i + 1] for key, v in batch.items()}
            zi = ad.model(**one)[0]
            y = torch.nn.functional.one_hot(probs[k][i].argmax(), 3).double()
            grads = torch.autograd.grad(per_sample_loss(zi, y, q[i], 0.5, False), [params[n] for n in names])
            slow[i] += -float(sum((gr * d[n]).sum() for gr, n in zip(grads, names)) / norm)
    np.testing.assert_allclose(fast, slow, rtol=1e-6, atol=1e-8)
    assert np.abs(slow).max() > 1e-4


def test_batches_sort_by_length_and_results_come_back_in_input_order(tiny_model_dir):
    """adapter.batches sorts by token count; encode, logits and jvp_scoring_inputs return rows in INPUT order."""
    from disal.scoring import jvp_scoring_inputs
    from disal.strategies.influence import DISAL
    from disal.training.adapter import HFTextAdapter

    ad = HFTextAdapter(str(tiny_model_dir), num_labels=3, max_length=16, batch_size=2)
    ad.model.double()
    texts = ["a b c d e f g h i j k l m n o p q r", "the", "bank profit market", "one two", "sports",
             "film music award star phone software internet", "the team"]
    seen, widths = [], []
    for idx, batch in ad.batches(texts):
        seen.extend(int(i) for i in idx)
        widths.append(batch["input_ids"].shape[1])
        # each row equals the text tokenized on its own, then right-padded
        for row, i in enumerate(idx):
            alone = ad.tokenize([texts[i]])["input_ids"][0]
            assert batch["input_ids"][row, : len(alone)].tolist() == alone.tolist()
            assert int(batch["attention_mask"][row].sum()) == len(alone)
    assert sorted(seen) == list(range(len(texts))) and widths == sorted(widths)
    # one text at a time (no padding, no sorting) is the reference for each row
    one_by_one = np.concatenate([ad.encode([t]) for t in texts])
    np.testing.assert_allclose(ad.encode(texts), one_by_one, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ad.logits(texts), np.concatenate([ad.logits([t]) for t in texts]), rtol=1e-6, atol=1e-6)
    traj = _random_trajectory(ad, "all", 2, seed=5)
    ids = np.arange(100, 100 + len(texts))
    inp = jvp_scoring_inputs(ad, ids, texts, traj, strategy=DISAL())
    assert inp.ids.tolist() == ids.tolist()
    for i, t in enumerate(texts):
        alone = jvp_scoring_inputs(ad, ids[i : i + 1], [t], traj, strategy=DISAL())
        np.testing.assert_allclose(inp.traj_logits[:, i], alone.traj_logits[:, 0], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(inp.traj_tangents["accumulated"][:, i], alone.traj_tangents["accumulated"][:, 0],
                                   rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(inp.features[i], alone.features[0], rtol=1e-5, atol=1e-6)
    # the features are the last checkpoint's encode, as before the shortcut
    np.testing.assert_allclose(inp.features, ad.encode(texts), rtol=1e-5, atol=1e-6)
