"""disal.state (MODEL_DIR, atomic, keyed by task id) and disal.labelconfig (what counts as a label)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from disal.labelconfig import LabelSpec, TaskTextError, parse_label_config, task_label, task_text
from disal.state import FeatureCache, ModelVersion, ProjectStore, atomic_write_json, text_hash
from disal.training.head import HeadConfig, train_head

SPEC = LabelSpec("label", "text", "text", ("a", "b"), multi_label=False)


def head_version(store: ProjectStore, round_: int) -> ModelVersion:
    rng = np.random.default_rng(round_)
    x = rng.normal(size=(8, 4)).astype(np.float32)
    head, traj = train_head(x, np.array([0, 1] * 4), 2, config=HeadConfig(steps=10, num_checkpoints=2))
    return ModelVersion(name=store.version_name(round_, "head"), round=round_, kind="head", spec=SPEC,
                        labels={11: {"labels": ["a"], "round": round_, "annotation": 1}},
                        priority={21: 0.0, 22: 1.0}, raw={21: 2.0, 22: 1.0}, head=head, trajectory=traj,
                        meta={"strategy": "disal"})


def test_version_round_trip_and_current_pointer(tmp_path):
    store = ProjectStore(tmp_path, 5)
    v = head_version(store, store.next_round())
    store.save_version(v)
    assert store.current() is None  # saved is not serving: only a pushed version becomes current
    store.set_current(v)
    fresh = ProjectStore(tmp_path, 5).current()
    assert fresh.name == v.name and fresh.kind == "head" and fresh.spec == SPEC
    assert fresh.labels == {11: {"labels": ["a"], "round": 1, "annotation": 1}}
    assert fresh.priority == {21: 0.0, 22: 1.0} and fresh.reference_scores().tolist() == [1.0, 2.0]
    assert fresh.trajectory.num_checkpoints == 2
    x = np.ones((1, 4), dtype=np.float32)
    import torch

    with torch.no_grad():
        assert torch.allclose(fresh.head(torch.as_tensor(x)), v.head.eval()(torch.as_tensor(x)))
    assert store.next_round() == 2


def test_a_version_whose_push_failed_is_never_served_even_after_a_restart(tmp_path, caplog):
    store = ProjectStore(tmp_path, 5)
    good, unpushed = head_version(store, 1), head_version(store, 2)
    store.save_version(good)
    store.set_current(good)
    store.save_version(unpushed)  # the job died during the push
    assert ProjectStore(tmp_path, 5).current().name == good.name
    (store.dir / "current.json").unlink()  # even without the pointer
    assert ProjectStore(tmp_path, 5).current().name == good.name
    assert any("missing or unreadable" in r.getMessage() for r in caplog.records)


def test_an_incomplete_version_folder_is_never_listed(tmp_path):
    store = ProjectStore(tmp_path, 5)
    v = head_version(store, 1)
    store.save_version(v)
    (store.versions_dir / ".disal-0002-crashed.tmp").mkdir()
    (store.versions_dir / "disal-0003-halfway").mkdir()  # no meta.json: a crash before the rename
    assert store.list_versions() == [v.name]
    assert store.next_round() == 2


def test_prune_keeps_the_newest_and_the_current(tmp_path):
    store = ProjectStore(tmp_path, 5)
    versions = [head_version(store, r) for r in range(1, 6)]
    for v in versions:
        store.save_version(v)
    store.set_current(versions[0])
    store.prune_versions(keep=2)
    assert store.list_versions() == [versions[0].name, versions[3].name, versions[4].name]


def test_scored_map_is_keyed_by_task_id(tmp_path):
    store = ProjectStore(tmp_path, 5)
    store.record_scored([3, 1], "v1")
    store.record_scored([2], "v2")
    assert store.load_scored() == {1: "v1", 2: "v2", 3: "v1"}
    store.record_scored([9], "v3", replace=True)
    assert store.load_scored() == {9: "v3"}


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    atomic_write_json(tmp_path / "x.json", {"a": 2})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_feature_cache_is_keyed_by_task_id_and_text_hash(tmp_path):
    cache = FeatureCache(tmp_path, "enc/model-len128")
    cache.put([1, 2], [text_hash("one"), text_hash("two")], np.eye(2, dtype=np.float32))
    cache.save()
    again = FeatureCache(tmp_path, "enc/model-len128")
    found, missing = again.lookup([1, 2, 3], [text_hash("one"), text_hash("TWO edited"), text_hash("x")])
    assert list(found) == [1] and missing == [1, 2]  # an edited text is encoded again
    assert again.path.name == "enc_model-len128.npz"


def test_a_corrupt_feature_cache_starts_empty(tmp_path, caplog):
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "m.npz").write_bytes(b"not a zip")
    assert len(FeatureCache(tmp_path, "m")) == 0
    assert any("unreadable" in r.getMessage() for r in caplog.records)


# -- label config and labels ------------------------------------------------------------------
CONFIG = ('<View><Text name="body" value="$article"/><Choices name="topic" toName="body" choice="single-radio">'
          '<Choice value="a"/><Choice value="b"/><Choice value="a"/></Choices></View>')


def test_parse_choices_over_text():
    spec = parse_label_config(CONFIG)
    assert spec == LabelSpec("topic", "body", "article", ("a", "b"), False)


def ann(choices, i, cancelled=False, from_name="label", at="2026-01-01T00:00:00Z"):
    return {"id": i, "was_cancelled": cancelled, "updated_at": at,
            "result": [{"from_name": from_name, "to_name": "text", "type": "choices", "value": {"choices": choices}}]}


@pytest.mark.parametrize("annotations, expected", [
    ([ann(["a"], 1)], ("a",)),
    ([ann(["a"], 1, at="2026-01-01T00:00:00Z"), ann(["b"], 2, at="2026-01-02T00:00:00Z")], ("b",)),  # latest wins
    ([ann(["b"], 1), ann(["a"], 2, cancelled=True)], ("b",)),  # a skip never overrides a label
    ([ann(["a"], 1, cancelled=True)], None),
    ([{"id": 1, "result": [], "was_cancelled": False}], None),
    ([ann(["a"], 1, from_name="other")], None),  # another control's result
    ([ann(["zzz"], 1)], None),  # label not in the config
    ([ann(["a", "zzz"], 1)], ("a",)),  # the unknown one is dropped, the known one kept
    ([ann(["a", "b"], 1)], None),  # two choices on a single-choice control
])
def test_task_label_rules(annotations, expected):
    label, reason = task_label({"id": 4, "annotations": annotations}, SPEC)
    if expected is None:
        assert label is None and reason
    else:
        assert label.labels == expected and label.task_id == 4


def test_task_text_errors_name_the_task():
    with pytest.raises(TaskTextError, match="task 9: has no text field 'text'"):
        task_text({"id": 9, "data": {"title": "x"}}, SPEC, 100)
    assert task_text({"id": 9, "data": {"text": "abcdef"}}, SPEC, 3) == "abc"


def test_encoder_sorts_the_pool_by_length_but_returns_features_in_task_order(tmp_path):
    """Encoding shortest-first (less padding) must never misalign a feature with its task."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fake_labelstudio import HashingAdapter

    from disal.config import Settings
    from disal.training_job import Encoder

    seen: list[list[str]] = []

    class Recording(HashingAdapter):
        def encode(self, texts, progress=None):
            seen.append(list(texts))
            return super().encode(texts, progress)

    texts = ["a much longer text about football and goals", "short", "medium length politics text", "tiny x",
             "the longest text of them all, about markets, shares, banks and the economy"]
    ids = [50, 10, 40, 30, 20]
    enc = Encoder(Settings(model_dir=tmp_path / "m", encode_batch_size=2), adapter_factory=Recording)
    feats = enc.features(ids, texts)
    expected = HashingAdapter().encode(texts)
    np.testing.assert_allclose(feats, expected)
    assert [len(t) for chunk in seen for t in chunk] == sorted(len(t) for t in texts)
    # and the cache, keyed by task id, hands the same rows back in a different order
    again = enc.features(ids[::-1], texts[::-1])
    np.testing.assert_allclose(again, expected[::-1])
