"""The scoring-cost benchmark runs end to end on a tiny BERT and writes a well-formed result."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

WORDS = ("the football match team goal election vote minister party market shares profit bank film music award "
         "star phone software computer internet game").split()


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 14)))) for _ in range(n)]


def test_scoring_cost_structure(tiny_model_dir, tmp_path):
    from disal.bench.scoring_cost import run, table

    labeled = (_texts(12, 1), np.arange(12) % 3, 3)
    res = run(pool=30, all_pool=10, ks=(1, 3), jvp_params=("all", "last-1"), linearity_pool=5,
              model=str(tiny_model_dir), max_length=16, texts=_texts(30, 0), labeled_data=labeled)
    json.loads(json.dumps(res))  # JSON-serialisable
    rows = res["rows"]
    assert {(r["params"], r["K"]) for r in rows} == {(p, k) for p in ("head", "mlp", "all", "last-1") for k in (1, 3)}
    for r in rows:
        assert r["pool"] == (30 if r["params"] in ("head", "mlp") else 10)
        if r["params"] == "mlp":  # the trained part's cost in MLP passes, beside the 2K + 1 target
            assert r["passes"] > 1 and r["target_passes"] == 2 * r["K"] + 1
        for key in ("plain_s", "disal_s", "ratio", "plain_items_per_s", "disal_items_per_s"):
            assert math.isfinite(r[key]) and r[key] > 0, (r, key)
        assert r["ratio"] == pytest.approx(r["disal_s"] / r["plain_s"])
    for p in ("head", "all", "last-1"):
        t = res["trajectory_bytes"][p]
        assert t["K"] == 3 and t["bytes"] > 0 and t["bytes_per_checkpoint"] == pytest.approx(t["bytes"] / 4)
    # a trajectory of every parameter is bigger than the head's or the top block's
    tb = res["trajectory_bytes"]
    assert tb["all"]["bytes"] > tb["last-1"]["bytes"] > tb["head"]["bytes"]
    assert [lin["pools"] for lin in res["linearity"]] == [[5, 10], [5, 10]]
    assert "| head | 1 | 30 |" in table(res)


def test_sub_trajectory_matches_the_recorder_schedule():
    import torch

    from disal.bench.scoring_cost import sub_trajectory
    from disal.trajectory import Trajectory, checkpoint_schedule

    cps = [{"w": torch.full((2,), float(s))} for s in range(11)]
    traj = Trajectory(["w"], cps, list(range(11)), [0.0] + [1.0 - s / 10 for s in range(10)])
    sub = sub_trajectory(traj, 3)
    assert sub.steps == [0] + checkpoint_schedule(10, 3)
    assert [float(c["w"][0]) for c in sub.checkpoints] == [float(s) for s in sub.steps]
    assert sub.lrs[1] == pytest.approx(np.mean(traj.lrs[1 : sub.steps[1] + 1]))
