"""Trajectory recording, bounds and the save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from disal.trajectory import Trajectory, TrajectoryRecorder, TrajectoryTooLargeError, checkpoint_schedule
from disal.training.head import train_head


def test_schedule_is_evenly_spaced_and_ends_at_the_last_step():
    assert checkpoint_schedule(100, 5) == [20, 40, 60, 80, 100]
    assert checkpoint_schedule(3, 10) == [1, 2, 3]
    with pytest.raises(ValueError):
        checkpoint_schedule(0, 3)


def test_recorder_snapshots_theta0_and_each_scheduled_step():
    p = torch.nn.Parameter(torch.zeros(3))
    rec = TrajectoryRecorder({"w": p}, total_steps=6, num_checkpoints=3)
    for step in range(1, 7):
        with torch.no_grad():
            p += 1
        rec.on_step(step, lr=0.1 * step)
    traj = rec.finish()
    assert traj.steps == [0, 2, 4, 6]
    assert [float(cp["w"][0]) for cp in traj.checkpoints] == [0.0, 2.0, 4.0, 6.0]
    assert traj.lrs[1] == pytest.approx(0.15) and traj.lrs[3] == pytest.approx(0.55)
    assert traj.nbytes == 4 * 3 * 4 == rec.expected_bytes


def test_memory_bound_is_checked_before_training():
    big = {"w": torch.zeros(1000, 1000)}
    with pytest.raises(TrajectoryTooLargeError, match="exceeds the bound"):
        TrajectoryRecorder(big, total_steps=10, num_checkpoints=10, max_bytes=10_000_000)


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    head, traj = train_head(rng.normal(size=(30, 8)).astype(np.float32), rng.integers(0, 3, 30), 3, seed=1)
    folder = traj.save(tmp_path / "traj")
    back = Trajectory.load(folder)
    assert back.param_names == traj.param_names and back.steps == traj.steps and back.lrs == traj.lrs
    assert back.meta == traj.meta
    for a, b in zip(traj.checkpoints, back.checkpoints):
        for n in traj.param_names:
            assert torch.equal(a[n], b[n])
    # the last checkpoint is the trained head
    assert torch.equal(back.last()["head.weight"], head.head.weight.detach())
    # saving again over an existing folder replaces it atomically
    traj.meta["round"] = 2
    traj.save(folder)
    assert Trajectory.load(folder).meta["round"] == 2
    assert not list(tmp_path.glob(".traj*")) and not (tmp_path / "traj.old").exists()
    # disk size is known: the tensors plus a small safetensors header
    size = (folder / "trajectory.safetensors").stat().st_size
    assert traj.nbytes <= size <= traj.nbytes + 4096


def test_directions():
    cps = [{"w": torch.tensor([float(k), 0.0])} for k in (0, 1, 3)]
    t = Trajectory(["w"], cps, [0, 1, 2], [0.0, 1.0, 1.0])
    assert t.direction("accumulated", 2)["w"].tolist() == [3.0, 0.0]
    assert t.direction("segment", 2)["w"].tolist() == [2.0, 0.0]
    assert t.direction("remaining", 1)["w"].tolist() == [2.0, 0.0]
