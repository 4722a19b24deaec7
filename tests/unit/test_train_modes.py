"""TRAIN_MODE in the backend (disal/training/regimes.py): the mlp regime trains, scores, saves and
serves through the same job as the linear head; warm start begins a round at the previous model and
survives a restart (the saved version is its theta_0)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_labelstudio import LABELS, make_backend, setup_payload, topic_texts  # noqa: E402

from disal.config import ConfigError, Settings  # noqa: E402
from disal.training.mlp import MLPHead  # noqa: E402
from disal.training.regimes import make_regime  # noqa: E402


def label_some(fake, n_per_class: int = 2) -> None:
    texts = topic_texts(len(fake.tasks))
    done = {c: 0 for c in LABELS}
    for tid, (_, label) in zip(sorted(fake.tasks), texts):
        if done[label] < n_per_class:
            fake.annotate(tid, [label])
            done[label] += 1


def assert_warm_started_from(second, first) -> None:
    """`second` is a later version than `first`, and its theta_0 is first's theta_K (the saved model)."""
    assert second.name != first.name and second.meta["warm_start"] is True
    theta0 = second.trajectory.checkpoints[0]
    for name, t in first.trajectory.last().items():
        torch.testing.assert_close(theta0[name], t, msg=f"theta_0 of the next round is theta_K of the last: {name}")


def retrain(client, model) -> None:
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert model.jobs.wait_idle(1, 60)


def test_an_unknown_train_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="TRAIN_MODE='finetune' .* head, mlp, top-N"):
        Settings.from_env({"TRAIN_MODE": "finetune"})
    s = Settings.from_env({"TRAIN_MODE": "mlp", "WARM_START": "true", "DEVICE": "cpu"})
    assert (s.train_mode, s.warm_start, s.device) == ("mlp", True, "cpu")


@pytest.mark.parametrize("strategy", ["disal", "disal-batch", "badge", "margin"])
def test_the_mlp_regime_trains_scores_pushes_and_serves(backend_with, fake, strategy):
    client, model = backend_with(train_mode="mlp", strategy=strategy)
    assert client.post("/setup", json=setup_payload(fake)).status_code == 200
    assert model.jobs.wait_idle(1, 30)
    label_some(fake)
    retrain(client, model)
    v = model.store(1).current()
    assert v.kind == "head" and isinstance(v.head, MLPHead) and v.meta["regime"] == "mlp"
    assert any(n.startswith("hidden.") for n in v.trajectory.param_names), "the trajectory traces every layer"
    pushed = fake.predictions_of(v.name)
    assert len(pushed) == len(fake.tasks) - 6 and len(set(v.priority.values())) > 1
    h = client.get("/health").get_json()
    assert h["train_mode"] == "mlp" and h["projects"]["1"]["regime"] == "mlp"
    # /predict places a task the version never ranked through the same regime
    r = client.post("/predict", json={"tasks": [{"id": 999, "data": {"text": "football match goal"}}],
                                      "project": "1.1"})
    assert r.status_code == 200, r.get_json()
    (res,) = r.get_json()["results"]
    assert res["result"][0]["value"]["choices"] == ["sport"] and 0.0 <= res["score"] <= 1.0


def test_warm_start_begins_at_the_previous_model_and_round_trips_through_saved_state(tmp_path, fake):
    client, model, _ = make_backend(tmp_path, fake, train_mode="mlp", warm_start=True)
    try:
        assert client.post("/setup", json=setup_payload(fake)).status_code == 200
        assert model.jobs.wait_idle(1, 30)
        label_some(fake, 1)
        retrain(client, model)
        first = model.store(1).current()
        assert first.meta["warm_start"] is False, "no previous classifier: a seeded start"
    finally:
        model.close()
    # a restart: the next round starts from the version saved on disk
    client, model, _ = make_backend(tmp_path, fake, train_mode="mlp", warm_start=True)
    try:
        loaded = model.store(1).current()
        assert loaded.name == first.name and isinstance(loaded.head, MLPHead)
        for name, t in loaded.head.state_dict().items():
            torch.testing.assert_close(t, first.head.state_dict()[name])
        label_some(fake, 2)
        retrain(client, model)
        second = model.store(1).current()
        assert_warm_started_from(second, first)
    finally:
        model.close()


def test_warm_start_is_refused_across_regimes_label_sets_and_widths():
    mlp, head = make_regime("mlp", 8), make_regime("head")
    x, y = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32), np.arange(12) % 3
    from disal.training.head import HeadConfig

    m, _ = mlp.train(x, y, 3, False, HeadConfig(steps=5), seed=0)
    assert mlp.warm_start(m, "mlp", 5, 3) is not None
    assert mlp.warm_start(m, "head", 5, 3) is None, "another regime"
    assert mlp.warm_start(m, "mlp", 5, 4) is None, "another label set"
    assert mlp.warm_start(m, "mlp", 7, 3) is None, "another encoder width"
    assert head.warm_start(None, None, 5, 3) is None


def test_disal_batch_picks_the_queue_head_and_ranks_the_rest_by_disal(backend_with, fake):
    """STRATEGY=disal-batch: QUERY_BATCH diverse picks head the queue (not a k-means++ over the whole
    pool, which is O(N^2)); every other task follows, ranked."""
    client, model = backend_with(train_mode="mlp", strategy="disal-batch", query_batch=4)
    assert client.post("/setup", json=setup_payload(fake)).status_code == 200
    assert model.jobs.wait_idle(1, 30)
    label_some(fake)
    retrain(client, model)
    v = model.store(1).current()
    assert v.meta["strategy"] == "disal-batch" and v.centres == []
    ranked = sorted(v.priority, key=v.priority.get)
    assert len(ranked) == len(fake.tasks) - 6 and len(set(v.priority.values())) == len(ranked)


@pytest.mark.parametrize("regime_name", ["head", "mlp"])
def test_a_last_checkpoint_strategy_scores_the_same_from_theta_0_and_theta_k_alone(regime_name):
    """The job records K = 1 for a strategy that reads only checkpoint K (the default): its scores and
    seeded batch equal those from the full K = 5 trajectory of the same training run."""
    from disal.config import DEFAULT_STRATEGY
    from disal.strategies import make_strategy, reads_only_last_checkpoint
    from disal.training.head import HeadConfig

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 6)).astype(np.float32), np.arange(40) % 3
    pool = rng.normal(size=(60, 6)).astype(np.float32)
    regime, strategy = make_regime(regime_name, 8), make_strategy(DEFAULT_STRATEGY)
    assert reads_only_last_checkpoint(strategy) and not reads_only_last_checkpoint(make_strategy("disal"))
    runs = {}
    for k in (5, 1):
        model, traj = regime.train(x, y, 3, False, HeadConfig(steps=30, num_checkpoints=k), seed=0)
        assert len(traj.checkpoints) == k + 1
        inputs = regime.scoring_inputs(np.arange(60), pool, model, traj, x, strategy, False, 0)
        runs[k] = (traj, strategy.score(inputs), strategy.select(inputs, 5, seed=0).selected)
    for name, t in runs[5][0].last().items():
        torch.testing.assert_close(runs[1][0].last()[name], t)
    np.testing.assert_allclose(runs[1][1], runs[5][1], rtol=1e-9, atol=1e-12)
    assert list(runs[1][2]) == list(runs[5][2])


def test_the_job_records_theta_0_and_theta_k_for_the_default_strategy(backend_with, fake):
    client, model = backend_with()
    assert client.post("/setup", json=setup_payload(fake)).status_code == 200
    assert model.jobs.wait_idle(1, 30)
    label_some(fake)
    retrain(client, model)
    assert len(model.store(1).current().trajectory.checkpoints) == 2
