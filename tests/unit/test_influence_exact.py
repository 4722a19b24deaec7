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
