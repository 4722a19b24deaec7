"""python -m disal.bench on an image dataset: frozen EfficientNet-Lite0 + linear head, end to end."""

from __future__ import annotations

import json

import pytest

from disal.bench.__main__ import main
from disal.bench.simulator import SimulationConfig, simulate
from disal.data import load_digits


@pytest.mark.slow
def test_digits_end_to_end(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["--dataset", "digits", "--max-train", "300", "--max-test", "100", "--strategies", "disal,random",
            "--seeds", "1", "--initial", "20", "--batch", "20", "--rounds", "2", "--image-size", "64",
            "--out", str(out), "--cache-dir", str(cache)]
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3
    assert {r["strategy"] for r in rows} == {"disal", "random"}
    assert sorted({r["n_labeled"] for r in rows}) == [20, 40, 60]
    assert all(r["dataset"] == "digits" for r in rows)
    # 10 classes: chance is 0.1; 60 labels on frozen ImageNet features do far better
    assert max(r["accuracy"] for r in rows if r["round"] == 2) > 0.3
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model"] == "efficientnet-lite0" and meta["image_size"] == 64 and meta["modality"] == "image"
    assert meta["full_data_accuracy"] > 0.5
    summary = (out / "summary.md").read_text()
    assert "efficientnet-lite0` at 64x64 px" in summary and "300 train / 100 test images" in summary
    assert "full-data accuracy" in capsys.readouterr().out
    assert len(list((cache / "features").glob("*.npy"))) == 2
    # a second run reads the cached features (no encoding line printed)
    assert main(args[:-4] + ["--out", str(tmp_path / "again"), "--cache-dir", str(cache)]) == 0
    assert "encoding" not in capsys.readouterr().out


def test_finetune_mode_is_refused_for_images(tmp_path, capsys):
    rc = main(["--dataset", "digits", "--train-mode", "finetune", "--out", str(tmp_path / "o"), "--cache-dir", ""])
    assert rc == 2
    assert "--train-mode finetune is for text models" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="finetune is for text models"):
        simulate(load_digits().subsample(20, 10), SimulationConfig(strategies=["random"], train_mode="finetune"),
                 None, tmp_path / "o2")
    assert main(["--dataset", "mnist", "--model", "x", "--out", str(tmp_path / "o3"), "--cache-dir", ""]) == 2
