"""A real training job: tiny Hugging Face encoder (tiny_model_dir) + linear head + DISAL, against a
MockTransport Label Studio, through the backend's routes. Marked slow (seconds, not minutes)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from disal.config import Settings  # noqa: E402
from fake_labelstudio import (FakeLabelStudio, annotation_event, choices_config, make_backend,  # noqa: E402
                              setup_payload, topic_texts)

pytestmark = pytest.mark.slow

LABELS = ["business", "sport", "tech"]


@pytest.fixture
def fake() -> FakeLabelStudio:
    ls = FakeLabelStudio(choices_config(LABELS))
    ls.add_tasks([t for t, _ in topic_texts(60, seed=3)])
    return ls


def real_backend(tmp_path, fake, tiny_model_dir, **kw):
    from disal.training.adapter import HFTextAdapter

    def factory():
        return HFTextAdapter(str(tiny_model_dir), num_labels=2, max_length=32, batch_size=16)

    return make_backend(tmp_path, fake, adapter_factory=factory, model_name=str(tiny_model_dir), **kw)


def test_real_round_trains_scores_with_disal_and_pushes(tmp_path, fake, tiny_model_dir):
    client, model, _ = real_backend(tmp_path, fake, tiny_model_dir)
    try:
        assert client.post("/setup", json=setup_payload(fake)).status_code == 200
        assert model.jobs.wait_idle(1, 120)
        cold = fake.project["model_version"]
        assert "coldstart" in cold and len(fake.predictions_of(cold)) == 60
        assert len(model.encoder.cache) == 60  # every task encoded once, keyed by task id

        topics = dict(zip(range(1, 61), (t for _, t in topic_texts(60, seed=3))))
        for tid in range(1, 13):
            fake.annotate(tid, [topics[tid]])
        calls = []
        adapter = model.encoder.adapter
        original = adapter.encode
        adapter.encode = lambda texts, progress=None: calls.append(len(texts)) or original(texts, progress)
        t0 = time.perf_counter()
        r = client.post("/webhook", json=annotation_event(fake, 12))
        webhook_s = time.perf_counter() - t0
        # the webhook answers once the job is recorded, not trained (its time is printed below, not asserted)
        assert r.status_code == 201 and r.get_json()["status"] == "queued", r.get_json()
        assert model.jobs.wait_idle(1, 120)
        assert calls == []  # the feature cache served every text: nothing re-encoded

        version = fake.project["model_version"]
        v = model.store(1).current()
        assert v.name == version and v.kind == "head" and v.meta["strategy"] == Settings().strategy
        # the default strategy reads checkpoint K alone: the trajectory keeps theta_0 and theta_K
        assert v.trajectory.num_checkpoints == 1 and v.trajectory.meta["n_train"] == 12
        preds = fake.predictions_of(version)
        assert sorted(preds) == list(range(13, 61))
        assert fake.predictions_of(cold)  # kept for OLD_VERSIONS_GRACE_S (tests/unit/test_old_versions.py)
        scores = np.array(sorted(p["score"] for p in preds.values()))
        assert scores[0] == 0.0 and scores[-1] == 1.0 and len(np.unique(scores)) == 48

        # the pushed priorities are the default strategy's queue: recompute it on the saved version and compare
        # every task's priority (QUERY_BATCH centroid picks of the DISAL candidates first, then the DISAL score)
        from disal.queue import priorities_from_selection
        from disal.scoring import head_scoring_inputs
        from disal.strategies import make_strategy

        ids = sorted(preds)
        feats = np.stack([model.encoder.cache.get(i) for i in ids])
        lab = np.stack([model.encoder.cache.get(i) for i in range(1, 13)])
        s = model.settings
        strategy = make_strategy(s.strategy)
        inputs = head_scoring_inputs(np.asarray(ids), feats, v.head, v.trajectory, labeled_features=lab,
                                     strategy=strategy, multi_label=False, seed=s.seed)
        expected = priorities_from_selection(strategy.select(inputs, min(len(ids), s.query_batch), seed=s.seed))
        assert {t: round(p["score"], 6) for t, p in preds.items()} == {t: round(x, 6) for t, x in expected.items()}

        # /predict for one task, and for a batch
        t0 = time.perf_counter()
        r = client.post("/predict", json={"tasks": [fake.tasks[40]], "project": "1.1",
                                          "label_config": fake.label_config})
        one_s = time.perf_counter() - t0
        assert r.status_code == 200 and r.get_json()["results"][0]["score"] == pytest.approx(preds[40]["score"])
        fresh = [{"id": 1000 + i, "data": {"text": t}} for i, (t, _) in enumerate(topic_texts(100, seed=9))]
        t0 = time.perf_counter()
        r = client.post("/predict", json={"tasks": fresh, "project": "1.1", "label_config": fake.label_config})
        batch_s = time.perf_counter() - t0
        out = r.get_json()["results"]
        assert len(out) == 100 and all(0.0 <= x["score"] <= 1.0 for x in out)
        print(f"\nwebhook answer {webhook_s * 1000:.1f} ms; predict 1 task {one_s * 1000:.1f} ms; "
              f"predict 100 new tasks {batch_s * 1000:.0f} ms")
    finally:
        model.close()


def test_restart_with_the_real_encoder_serves_and_retrains(tmp_path, fake, tiny_model_dir):
    client, model, _ = real_backend(tmp_path, fake, tiny_model_dir)
    topics = dict(zip(range(1, 61), (t for _, t in topic_texts(60, seed=3))))
    try:
        client.post("/setup", json=setup_payload(fake))
        assert model.jobs.wait_idle(1, 120)
        for tid in range(1, 7):
            fake.annotate(tid, [topics[tid]])
        client.post("/webhook", json=annotation_event(fake, 6))
        assert model.jobs.wait_idle(1, 120)
        version = fake.project["model_version"]
    finally:
        model.close()
    client2, model2, _ = real_backend(tmp_path, fake, tiny_model_dir)
    try:
        assert len(model2.encoder.cache) == 60  # the feature cache survived the restart
        r = client2.post("/predict", json={"tasks": [fake.tasks[30]], "project": "1.1"})
        assert r.get_json()["model_version"] == version
        fake.annotate(7, [topics[7]])
        client2.post("/webhook", json=annotation_event(fake, 7))
        assert model2.jobs.wait_idle(1, 120)
        v = model2.store(1).current()
        assert v.name != version and 7 in v.labels and v.labels[1]["round"] == 2 and v.labels[7]["round"] == 3
    finally:
        model2.close()


def test_real_encoder_first_round_pushes_a_partial_queue_then_the_whole_pool(tmp_path, fake, tiny_model_dir):
    """FIRST_QUEUE_SECONDS=0 with 8-text batches: a first queue over the first 32 encoded tasks (a
    random sample of the pool), then the whole pool; both real CoreSet queues of the real encoder."""
    client, model, _ = real_backend(tmp_path, fake, tiny_model_dir, first_queue_seconds=0, encode_batch_size=8)
    try:
        assert client.post("/setup", json=setup_payload(fake)).status_code == 200
        assert model.jobs.wait_idle(1, 120)
        versions = [b["model_version"] for _, _, b in fake.calls("PATCH", r"/api/projects/1/")
                    if isinstance(b, dict) and "model_version" in b]
        store = model.store(1)
        first, last = store.load_version(versions[0]), store.load_version(versions[-1])
        assert len(versions) == 2 and first.meta["partial"] == {"encoded": 32, "total": 60}
        assert "partial" not in last.meta and set(last.priority) == set(fake.tasks)
        assert sorted(first.priority) != list(range(1, 33)), "the first queue samples the pool, not its first ids"
        imported = {}
        for _, _, body in fake.calls("POST", r"/api/projects/1/import/predictions"):
            for p in body:
                imported.setdefault(p["model_version"], {})[p["task"]] = p["score"]
        assert set(imported[first.name]) == set(first.priority)
        for v in (first, last):  # each a strict rank order over what it covers
            scores = sorted(imported[v.name].values())
            assert scores[0] == 0.0 and scores[-1] == 1.0 and len(set(scores)) == len(scores)
        assert set(first.centres) <= set(first.priority)  # CoreSet centres among the encoded tasks
        assert len(model.encoder.cache) == 60 and model.store(1).current().name == last.name
    finally:
        model.close()
