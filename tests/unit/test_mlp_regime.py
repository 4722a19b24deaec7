"""The `mlp` regime: DISAL by jvp equals per-sample autograd, the head trains, warm start round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from disal.scoring import mlp_scoring_inputs
from disal.strategies import make_strategy
from disal.strategies.influence import DisalOptions, disal_scores
from disal.training.head import HeadConfig, resolve_device, train_head
from disal.training.mlp import MLPHead, init_from_trajectory, mlp_trajectory_arrays, train_mlp
from disal.trajectory import Trajectory
from test_influence_exact import OPTION_GRID, per_sample_loss


def _mlp_and_trajectory(d: int = 5, hidden: int = 6, C: int = 4, K: int = 3, seed: int = 0,
                        activation: str = "gelu") -> tuple[MLPHead, Trajectory]:
    """A float64 MLP and a random walk of all its parameters (K checkpoints after theta_0)."""
    torch.manual_seed(seed)
    model = MLPHead(d, C, hidden, dropout=0.3, activation=activation).double()
    names = [n for n, _ in model.named_parameters()]
    g = torch.Generator().manual_seed(seed + 1)
    cps = [{n: p.detach().clone() for n, p in model.named_parameters()}]
    for _ in range(K):
        cps.append({n: t + 0.4 * torch.randn(t.shape, generator=g, dtype=t.dtype) for n, t in cps[-1].items()})
    with torch.no_grad():  # the model sits at theta_K, as after training
        for n, p in model.named_parameters():
            p.copy_(cps[-1][n])
    return model, Trajectory(names, cps, list(range(K + 1)), [0.0] + [0.5 ** k for k in range(K)])


def brute_force_mlp(model: MLPHead, traj: Trajectory, h: torch.Tensor, opts: DisalOptions, multi_label: bool,
                    lrs=None) -> np.ndarray:
    """sum_k w_k * sign * <grad_theta l~_k(x; theta_k), d_k> / ||d_k|| with per-sample torch.autograd.grad."""
    model.eval()  # no dropout: the scores are defined at the checkpoint's deterministic function
    params = dict(model.named_parameters())
    names = traj.param_names
    k1 = len(traj.checkpoints)
    act = torch.sigmoid if multi_label else (lambda z: torch.softmax(z, -1))
    probs = []
    with torch.no_grad():
        for k in range(k1):
            for n in names:
                params[n].copy_(traj.checkpoints[k][n])
            probs.append(act(model(h)))
    lam, sign = opts.effective_lam, (-1.0 if opts.sign == "descent" else 1.0)
    scores = np.zeros(len(h))
    for k in range(k1):
        if opts.last_checkpoint_only and k != k1 - 1:
            continue
        d = traj.direction(opts.direction, k)
        norm = torch.sqrt(sum((v**2).sum() for v in d.values()))
        if norm == 0:
            continue
        if opts.dynamic == "previous":
            q = probs[k - 1] if k > 0 else probs[0]
        else:
            q = torch.stack(probs[1 : k + 1]).mean(0) if k > 0 else probs[0]
        w = 1.0 if opts.weights == "uniform" else lrs[k]
        with torch.no_grad():
            for n in names:
                params[n].copy_(traj.checkpoints[k][n])
        for i in range(len(h)):
            p = probs[k][i]
            y = (p > 0.5).double() if multi_label else torch.nn.functional.one_hot(p.argmax(), p.shape[-1]).double()
            loss = per_sample_loss(model(h[i : i + 1])[0], y, q[i], lam, multi_label)
            grads = torch.autograd.grad(loss, [params[n] for n in names])
            dot = sum((gr * d[n]).sum() for gr, n in zip(grads, names))
            scores[i] += w * sign * float(dot / norm)
    with torch.no_grad():
        for n in names:
            params[n].copy_(traj.checkpoints[-1][n])
    return scores


@pytest.mark.parametrize("multi_label", [False, True], ids=["softmax", "sigmoid"])
@pytest.mark.parametrize("opts", OPTION_GRID, ids=lambda o: f"{o.direction}-{o.dynamic}-{o.sign}")
def test_mlp_jvp_equals_per_sample_autograd(opts, multi_label):
    model, traj = _mlp_and_trajectory(seed=3)
    h = torch.randn(7, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    logits, tangents, norms, _ = mlp_trajectory_arrays(model, traj, h.numpy(), [opts.direction], batch_size=3)
    fast = disal_scores(logits, tangents[opts.direction], norms[opts.direction], opts, multi_label=multi_label)
    slow = brute_force_mlp(model, traj, h, opts, multi_label)
    np.testing.assert_allclose(fast, slow, rtol=1e-6, atol=1e-8)
    assert np.abs(slow).max() > 1e-3  # not two zero vectors


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_mlp_lr_weights_and_static_influence_equal_autograd(activation):
    model, traj = _mlp_and_trajectory(seed=5, activation=activation)
    h = torch.randn(6, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    lrs = np.asarray(traj.lrs)
    for opts in (DisalOptions(weights="lr", direction="segment"),
                 DisalOptions(dynamic="none", lam=0.0, last_checkpoint_only=True)):
        z, t, nrm, _ = mlp_trajectory_arrays(model, traj, h.numpy(), [opts.direction])
        fast = disal_scores(z, t[opts.direction], nrm[opts.direction], opts, lrs=lrs)
        np.testing.assert_allclose(fast, brute_force_mlp(model, traj, h, opts, False, lrs), rtol=1e-6, atol=1e-8)


def test_mlp_arrays_match_the_model_and_leave_it_unchanged():
    model, traj = _mlp_and_trajectory(seed=7)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    h = np.random.default_rng(0).normal(size=(9, 5))
    z, _, _, a = mlp_trajectory_arrays(model, traj, h, ["accumulated"], batch_size=4)
    model.eval()
    with torch.no_grad():
        ref_z, ref_a = model(torch.as_tensor(h), with_features=True)
    np.testing.assert_allclose(z[-1], ref_z.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a, ref_a.numpy(), rtol=1e-5, atol=1e-6)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def _blobs(n: int = 120, C: int = 3, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(C, d)) * 2.5
    y = rng.integers(0, C, n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


def test_train_mlp_records_every_parameter_and_learns():
    x, y = _blobs()
    cfg = HeadConfig(steps=60, num_checkpoints=4)
    model, traj = train_mlp(x[:90], y[:90], 3, config=cfg, seed=1, hidden=16)
    assert traj.param_names == [n for n, _ in model.named_parameters()]
    assert traj.num_checkpoints == 4 and traj.meta["kind"] == "mlp"
    for n, p in model.named_parameters():
        assert torch.equal(traj.last()[n], p.detach())  # theta_K is the trained model
        assert not torch.equal(traj.checkpoints[0][n], traj.last()[n])  # every layer moved
    model.eval()
    with torch.no_grad():
        acc = (model(torch.as_tensor(x[90:])).argmax(1).numpy() == y[90:]).mean()
    assert acc > 0.8
    again, _ = train_mlp(x[:90], y[:90], 3, config=cfg, seed=1, hidden=16)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))  # seeded


@pytest.mark.parametrize("regime", ["head", "mlp"])
def test_warm_start_round_trips_through_saved_state(tmp_path, regime):
    """Round 2's theta_0 is round 1's theta_K, whether passed in memory or read back from a saved trajectory."""
    x, y = _blobs(seed=2)
    cfg = HeadConfig(steps=40, num_checkpoints=3)
    train = (lambda *a, **k: train_mlp(*a, hidden=12, **k)) if regime == "mlp" else train_head
    first, traj1 = train(x[:40], y[:40], 3, config=cfg, seed=0)
    traj1.save(tmp_path / "round1")
    loaded = Trajectory.load(tmp_path / "round1")
    assert loaded.param_names == traj1.param_names
    init = init_from_trajectory(loaded)
    from_disk, traj2 = train(x[:70], y[:70], 3, config=cfg, seed=1, init=init)
    in_memory, traj2b = train(x[:70], y[:70], 3, config=cfg, seed=1, init=first.state_dict())
    for n in traj1.param_names:
        assert torch.equal(traj2.checkpoints[0][n], traj1.last()[n])
        assert torch.equal(traj2.last()[n], traj2b.last()[n])
    cold, traj_cold = train(x[:70], y[:70], 3, config=cfg, seed=1)
    assert not torch.equal(traj_cold.checkpoints[0][traj1.param_names[0]], traj1.last()[traj1.param_names[0]])
    # the warm round's accumulated direction is what the new labels changed: shorter than a cold start's
    warm_norm = sum(float(((traj2.last()[n] - traj2.checkpoints[0][n]) ** 2).sum()) for n in traj1.param_names)
    cold_norm = sum(float(((traj_cold.last()[n] - traj_cold.checkpoints[0][n]) ** 2).sum()) for n in traj1.param_names)
    assert warm_norm < cold_norm


def test_mlp_scoring_inputs_feed_every_kind_of_strategy():
    x, y = _blobs(n=150, seed=3)
    model, traj = train_mlp(x[:30], y[:30], 3, config=HeadConfig(steps=30), seed=0, hidden=10)
    pool = np.arange(30, 150)
    for spec in ("disal", "disal:direction=segment", "disal-batch", "badge", "coreset", "bald", "margin"):
        strat = make_strategy(spec)
        inputs = mlp_scoring_inputs(pool, x[pool], model, traj, labeled_features=x[:30], strategy=strat,
                                    mc_samples=4)
        assert inputs.features.shape == (len(pool), 10)  # the hidden layer is the penultimate one
        if inputs.labeled_features is not None:
            assert inputs.labeled_features.shape == (30, 10)
        sel = strat.select(inputs, 5, seed=0)
        assert len(set(sel.selected.tolist())) == 5 and set(sel.selected.tolist()) <= set(pool.tolist())


def test_device_auto_is_cpu_without_cuda_and_absent_cuda_is_refused():
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("warm_start", [False, True], ids=["cold", "warm"])
def test_simulator_runs_the_mlp_regime_and_warm_starts_it(warm_start):
    from disal.bench.simulator import HeadSimulation, SimulationConfig

    x, y = _blobs(n=200, seed=4)
    cfg = SimulationConfig(strategies=["disal"], seeds=1, initial=10, batch=5, rounds=2, train_mode="mlp",
                           head=HeadConfig(steps=25, num_checkpoints=3), warm_start=warm_start, mlp_hidden=12,
                           device="cpu")
    sim = HeadSimulation(x[:150], y[:150], x[150:], y[150:], 3, cfg)
    seen: list[tuple] = []
    real_train = sim.train

    def spy(X, yy, config, seed, init=None):
        model, traj = real_train(X, yy, config, seed, init=init)
        seen.append((init, traj, model))
        return model, traj

    sim.train = spy
    rows = list(sim.run("disal", 0))
    assert [r["n_labeled"] for r in rows] == [10, 15, 20]
    assert all(isinstance(m, MLPHead) for _, _, m in seen)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    for (init, traj, _), (_, prev, _) in zip(seen[1:], seen[:-1]):
        same = all(torch.equal(traj.checkpoints[0][n], prev.last()[n]) for n in traj.param_names)
        assert same == warm_start and (init is not None) == warm_start


def test_cli_offers_mlp_and_device_and_refuses_an_absent_cuda(capsys):
    from disal.bench.__main__ import build_parser, main

    args = build_parser().parse_args(["--train-mode", "mlp", "--device", "cpu", "--warm-start"])
    got = (args.train_mode, args.device, args.warm_start, args.mlp_hidden, args.mlp_lr)
    assert got == ("mlp", "cpu", True, 256, 0.003)
    assert build_parser().parse_args([]).device == "auto"
    if not torch.cuda.is_available():
        assert main(["--device", "cuda", "--dataset", "digits"]) == 2
        assert "no CUDA" in capsys.readouterr().err


def test_finetune_mode_still_runs_with_a_device(tiny_model_dir):
    """The third regime, unchanged by the mlp one: a tiny BERT fine-tuned per round, DISAL by jvp, on `device`."""
    from disal.bench.simulator import FinetuneSimulation, SimulationConfig
    from disal.data import TextDataset
    from disal.training.adapter import HFTextAdapter

    words = [["football", "match", "team"], ["bank", "market", "profit"], ["film", "music", "star"]]
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    texts = [" ".join(rng.choice(words[c], 3)) for c in y]
    ds = TextDataset("tiny", ["a", "b", "c"], texts[:30], y[:30], texts[30:], y[30:])
    cfg = SimulationConfig(strategies=["disal"], seeds=1, initial=6, batch=3, rounds=1, train_mode="finetune",
                           params="last-1", finetune_epochs=1, finetune_min_steps=2,
                           head=HeadConfig(num_checkpoints=2), device="cpu")
    ad = HFTextAdapter(str(tiny_model_dir), num_labels=3, max_length=16, device=cfg.device)
    for spec in ("disal", "margin"):
        rows = list(FinetuneSimulation(ad, ds, cfg).run(spec, 0))
        assert [r["n_labeled"] for r in rows] == [6, 9]
        assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
