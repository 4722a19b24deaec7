"""`python -m disal.bench --train-mode top-N` end to end on a tiny BERT: rows, cache figures, warm start, bad modes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from disal.bench.__main__ import build_parser, main

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from test_simulator import write_split  # noqa: E402


@pytest.mark.parametrize("warm", [False, True], ids=["fresh", "warm"])
def test_top_mode_runs_and_reports_its_cache(tmp_path, tiny_model_dir, warm):
    tr, te = tmp_path / "train.csv", tmp_path / "test.csv"
    write_split(tr, 30, 2, "csv")
    write_split(te, 9, 3, "csv")
    out = tmp_path / "top"
    argv = ["--train", str(tr), "--test", str(te), "--text-column", "body", "--label-column", "topic",
            "--model", str(tiny_model_dir), "--strategies", "disal,margin", "--seeds", "1", "--initial", "6",
            "--batch", "4", "--rounds", "2", "--train-mode", "top-1", "--epochs", "1", "--checkpoints", "2",
            "--min-steps", "3", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv + (["--warm-start"] if warm else [])) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["n_labeled"] for r in rows if r["strategy"] == "disal"] == [6, 10, 14]
    assert all(r["train_mode"] == "top-1" and r["params"] == "last-1" and r["train_seconds"] > 0 for r in rows)
    assert all(r["score_seconds"] > 0 and r["scored"] == 30 - r["n_labeled"] for r in rows if r["round"] < 2)
    top = json.loads((out / "meta.json").read_text())["top_regime"]
    assert top["top_blocks"] == 1 and top["first_trained_block"] == 1 and top["cache_tasks"] == 39
    assert top["warm_start"] is warm
    # fp16 (length x 32) per task; on disk the same plus the .npy header
    assert top["cache_bytes_per_task"] > 0 and top["cache_bytes_per_task"] % 64 == 0
    assert top["cache_disk_bytes"] > top["cache_bytes"]
    # a rerun finds every task in the disk cache
    assert main(argv + ["--strategies", "random", "--rounds", "1"]) == 0
    assert json.loads((out / "meta.json").read_text())["top_regime"]["cache_encoded_now"] == 0


@pytest.mark.parametrize("mode", ["top-0", "top-x", "top", "last-2"])
def test_bad_top_modes_are_refused_by_the_parser(mode, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--train-mode", mode])
    assert e.value.code == 2 and "top-N" in capsys.readouterr().err


def test_help_documents_top_n():
    text = build_parser().format_help()
    assert "top-N" in text and "--hidden-cache-max-mb" in text


def test_top_scoring_cost_rows_on_a_tiny_bert(tiny_model_dir):
    """The cost benchmark's bookkeeping (the figures themselves are measured on MiniLM, never asserted)."""
    import numpy as np

    from disal.bench.top_scoring_cost import measure
    from disal.training.adapter import HFTextAdapter

    ad = HFTextAdapter(str(tiny_model_dir), num_labels=3, max_length=16)
    texts = ["the football match was good", "bank profit and market shares", "new phone", "music award"]
    lab = ["sports team game", "vote minister party", "market bank profit", "goal star match"]
    res = measure(ad, texts, lab, np.array([0, 1, 2, 0]), top_blocks=1, ks=[1, 2], repeats=1, steps=4)
    assert [r["K"] for r in res["rows"]] == [1, 2]
    assert [r["target_passes"] for r in res["rows"]] == [3, 5]
    assert all(r["passes"] == r["disal_cpu_s"] / r["plain_cpu_s"] for r in res["rows"])
    tokens = sum(int(ad.tokenize([t])["attention_mask"].sum()) for t in texts + lab)
    assert res["cache_bytes_per_task"] == tokens * 32 * 2 / len(texts + lab)  # fp16, hidden 32
