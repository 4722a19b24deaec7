"""TRAIN_MODE=top-N in the backend: a round fine-tunes a private copy of the text encoder's top
blocks from the project's hidden-state cache, scores and pushes through the same job as the head,
serves /predict with the fine-tuned model (equal to a full forward pass of it), survives a restart,
warm-starts from the saved blocks, and says plainly where it does not apply."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_labelstudio import LABELS, make_backend, setup_payload  # noqa: E402

from disal.config import ConfigError, Settings  # noqa: E402
from disal.strategies.influence import probabilities  # noqa: E402
from disal.training.regimes import TopModel, make_regime  # noqa: E402
from test_task_modules import image_fake  # noqa: E402
from test_train_modes import assert_warm_started_from, label_some, retrain  # noqa: E402

N_TASKS = 24


def tiny_adapter_factory(model_dir: Path):
    from disal.training.adapter import HFTextAdapter

    return lambda: HFTextAdapter(str(model_dir), num_labels=2, max_length=32, batch_size=8)


def top_backend(tmp_path, fake, tiny_model_dir, **settings):
    base = dict(train_mode="top-1", encoder_runtime="torch")
    base.update(settings)
    return make_backend(tmp_path, fake, adapter_factory=tiny_adapter_factory(tiny_model_dir), **base)


def full_forward_probs(tiny_model_dir: Path, version, texts: list[str]) -> np.ndarray:
    """The reference: the whole tiny BERT with the version's trained blocks and head loaded, one text at a time."""
    from disal.training.adapter import HFTextAdapter

    ad = HFTextAdapter(str(tiny_model_dir), num_labels=len(LABELS), max_length=32)
    missing, unexpected = ad.model.load_state_dict(version.head.state_dict(), strict=False)
    assert not unexpected and not any(k.startswith(("classifier.", "encoder.encoder.layer.1.")) for k in missing)
    return np.concatenate([probabilities(ad.logits([t]).astype(np.float64), False) for t in texts])


def test_train_mode_top_n_settings():
    assert Settings.from_env({"TRAIN_MODE": "top-2"}).train_mode == "top-2"
    with pytest.raises(ConfigError, match=r"TRAIN_MODE='top-0'.*head, mlp, top-N"):
        Settings.from_env({"TRAIN_MODE": "top-0"})
    with pytest.raises(ConfigError, match="BADGE and CoreSet place"):
        Settings.from_env({"TRAIN_MODE": "top-1", "STRATEGY": "badge"})
    assert make_regime("top-3").name == "top-3" and make_regime("top-3").reads_states


@pytest.mark.parametrize("strategy", [None, "disal", "margin"])
def test_top_n_trains_scores_pushes_and_serves_the_fine_tuned_model(tmp_path, fake, tiny_model_dir, strategy):
    client, model, _ = top_backend(tmp_path, fake, tiny_model_dir, **({"strategy": strategy} if strategy else {}))
    try:
        assert client.post("/setup", json=setup_payload(fake)).status_code == 200
        assert model.jobs.wait_idle(1, 60)
        label_some(fake)
        retrain(client, model)
        v = model.store(1).current()
        assert v.kind == "head" and isinstance(v.head, TopModel) and v.meta["regime"] == "top-1", v.meta
        names = set(v.trajectory.param_names)
        assert any(n.startswith("encoder.encoder.layer.1.") for n in names) and "classifier.head.weight" in names
        assert not any(n.startswith("encoder.encoder.layer.0.") for n in names), "the block below the cache is frozen"
        pushed = fake.predictions_of(v.name)
        assert len(pushed) == len(fake.tasks) - 6 and len(set(v.priority.values())) > 1
        h = client.get("/health").get_json()
        assert h["train_mode"] == "top-1" and h["projects"]["1"]["regime"] == "top-1"
        assert h["projects"]["1"]["hidden_cache"]["tasks"] == len(fake.tasks)
        assert len(list((model.store(1).dir / "hidden-top-1").glob("*.npy"))) == len(fake.tasks)
        page = client.get("/").get_data(as_text=True)  # the status page a person reads
        assert "text encoder&#x27;s last 1 block(s) + linear head, fine-tuned" in page
        assert f"<th>hidden-state cache</th><td>{len(fake.tasks)} tasks," in page
        # the shared encoder never moved: its features equal a fresh copy's
        from disal.training.adapter import HFTextAdapter

        texts = ["football match goal", "bank profit market"]
        shared = model.encoders.for_type("text_classification").adapter
        np.testing.assert_allclose(shared.encode(texts), HFTextAdapter(str(tiny_model_dir)).encode(texts), atol=1e-6)
        # /predict for a task the version never ranked: the fine-tuned model's probabilities, through the cache
        r = client.post("/predict", json={"tasks": [{"id": 999, "data": {"text": texts[0]}}], "project": "1.1"})
        assert r.status_code == 200, r.get_json()
        feats = model.encoders.for_type("text_classification").features([None, None], texts, save=False)
        _, probs = model.job.place(v, [None, None], feats, inputs=texts)
        np.testing.assert_allclose(probs, full_forward_probs(tiny_model_dir, v, texts), atol=5e-3)
    finally:
        model.close()


def test_a_top_n_version_survives_a_restart_and_warm_starts_the_next_round(tmp_path, fake, tiny_model_dir):
    client, model, _ = top_backend(tmp_path, fake, tiny_model_dir, warm_start=True)
    try:
        assert client.post("/setup", json=setup_payload(fake)).status_code == 200
        assert model.jobs.wait_idle(1, 60)
        label_some(fake, 1)
        retrain(client, model)
        first = model.store(1).current()
        assert first.meta["warm_start"] is False
        texts = ["the team won the game", "election vote minister party"]
        feats = model.encoders.for_type("text_classification").features([None, None], texts, save=False)
        before = model.job.place(first, [None, None], feats, inputs=texts)
    finally:
        model.close()
    client, model, _ = top_backend(tmp_path, fake, tiny_model_dir, warm_start=True)
    try:
        loaded = model.store(1).current()
        assert loaded.name == first.name and isinstance(loaded.head, TopModel)
        for name, t in loaded.head.state_dict().items():
            torch.testing.assert_close(t, first.head.state_dict()[name])
        after = model.job.place(loaded, [None, None], feats, inputs=texts)
        np.testing.assert_allclose(after[1], before[1], atol=1e-6)
        np.testing.assert_allclose(after[0], before[0], atol=1e-9)
        label_some(fake, 2)
        retrain(client, model)
        second = model.store(1).current()
        assert_warm_started_from(second, first)
        # new tasks are placed with the fine-tuned model and cached under their ids for the next round
        new_id = max(fake.tasks) + 1
        fake.add_tasks(["music award for the film star"], start_id=new_id)
        r = client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 1},
                                          "tasks": [fake.tasks[new_id]]})
        assert r.status_code in (200, 201), r.get_json()
        assert model.jobs.wait_idle(1, 60)
        assert new_id in fake.predictions_of(second.name)
        assert len(model.job.hidden_cache(model.store(1), make_regime("top-1"))) == len(fake.tasks)
    finally:
        model.close()


def test_more_blocks_than_the_encoder_has_fails_the_round_naming_why(tmp_path, fake, tiny_model_dir):
    client, model, _ = top_backend(tmp_path, fake, tiny_model_dir, train_mode="top-5")
    try:
        assert client.post("/setup", json=setup_payload(fake)).status_code == 200
        assert model.jobs.wait_idle(1, 60)
        cold = model.store(1).current()
        label_some(fake)
        client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
        model.jobs.wait_idle(1, 60)
        job = client.get("/health").get_json()["projects"]["1"]["job"]
        assert "top_blocks=5" in str(job) and "2 blocks" in str(job), job
        assert model.store(1).current().name == cold.name, "the cold-start queue keeps serving"
    finally:
        model.close()


def test_an_image_project_under_top_n_trains_the_head_and_says_so(tmp_path, tiny_model_dir):
    fake = image_fake(12)  # 12 good images (and the module's unreadable ones, skipped with their reason)
    client, model, _ = top_backend(tmp_path, fake, tiny_model_dir, image_size=16)
    try:
        assert client.post("/setup", json=setup_payload(fake)).status_code == 200
        assert model.jobs.wait_idle(1, 60)
        for tid in sorted(fake.tasks)[:6]:
            fake.annotate(tid, [LABELS[(tid - 1) % 3]])
        retrain(client, model)
        v = model.store(1).current()
        assert v.kind == "head" and v.meta["regime"] == "head"
        entry = client.get("/health").get_json()["projects"]["1"]
        assert "TRAIN_MODE=top-1 fine-tunes a Hugging Face text encoder" in entry["regime_note"]
        assert entry["regime_note"] in entry["job"]["last_job"]["warnings"]
        assert "<th>regime note</th>" in client.get("/").get_data(as_text=True)
    finally:
        model.close()


def test_top_warm_start_is_refused_across_regimes_label_sets_and_widths():
    top = make_regime("top-1")
    saved = TopModel(1, state={"classifier.head.weight": torch.zeros(3, 32), "classifier.head.bias": torch.zeros(3),
                               "encoder.encoder.layer.1.output.dense.bias": torch.ones(32)})
    init = top.warm_start(saved, "top-1", 32, 3)
    assert init is not None and set(init) == set(saved.state_dict())
    assert top.warm_start(saved, "top-2", 32, 3) is None, "another N"
    assert top.warm_start(saved, "mlp", 32, 3) is None, "another regime"
    assert top.warm_start(saved, "top-1", 32, 4) is None, "another label set"
    assert top.warm_start(saved, "top-1", 48, 3) is None, "another encoder width"
