"""Sharded pool encoding (disal.pool_shards) with real parts: a real Label Studio, the backend under
gunicorn with its embedded worker plus two more worker processes, the packaged MiniLM encoder on
real BBC News texts, and (redis mode) a real redis-server.

What each case does and observes:
- a first round over 480 uncached texts with SHARD_MIN_TASKS=100, SHARD_SIZE=40: the job posts a
  board, at least two worker processes encode shards of it, the queue covers the whole pool, every
  cached feature equals a plain single-process encoding of its text, and /metrics and /health count
  the shards the helpers encoded;
- kill -9 of a helper worker while it holds a shard: the job reopens the dead worker's shard
  (its heartbeat stopped), and the first queue still covers the whole pool.
"""

from __future__ import annotations

import os
import re
import signal
import time

import numpy as np
import pytest

from e2e.helpers import wait_for
from reliability.test_durable_jobs import LABELS, Deployment, _env, first_queue, mode, new_project, redis_or_none

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
__all__ = ["mode", "redis_or_none"]  # fixtures shared with the durable-jobs suite

N = 480


def sharded_env(tiny_model_dir, mode, redis_or_none) -> dict:
    return _env(tiny_model_dir, mode, redis_or_none, MODEL_NAME="", TORCH_THREADS="1", SHARD_MIN_TASKS="100",
                SHARD_SIZE="40")


def bbc_texts(n: int) -> list[dict]:
    from disal.data import load_bbc

    ds = load_bbc()
    return [{"text": t, "gold": LABELS[i % 3]} for i, t in enumerate(ds.train_texts[:n])]


def all_alive(dep: Deployment, n: int) -> None:
    wait_for(lambda: sum(w["alive"] for w in dep.health()["job_queue"]["workers"].values()) == n, 120,
             f"{n} live workers")


def helper_lines(dep: Deployment) -> dict[str, int]:
    """Shards each process's log says it encoded for another worker's job."""
    out = {}
    for p in [dep.backend.log] + [w.log for w in dep.extra]:
        text = p.read_text(errors="replace") if p.exists() else ""
        out[p.name] = len(re.findall(r"shard board \S+ \(project \d+\): shard \d+/\d+ encoded here", text))
    return out


def test_a_first_round_is_encoded_by_every_live_worker_and_equals_one_workers(tmp_path, label_studio, mode,
                                                                              redis_or_none, tiny_model_dir):
    dep = Deployment(tmp_path, label_studio, sharded_env(tiny_model_dir, mode, redis_or_none), extra=2).start()
    try:
        all_alive(dep, 3)
        texts = bbc_texts(N)
        t0 = time.time()
        pid, _ = new_project(label_studio, dep, 0, f"sharded {mode}", texts=texts)
        h = first_queue(dep, pid, timeout=300)
        took = time.time() - t0
        assert h["queue_length"] == N and not h.get("partial")
        logs = dep.logs()
        assert re.search(rf"project {pid}: pool encoding sharded: 12 shards of up to 40 on board", logs), logs[-3000:]
        m = re.search(rf"project {pid}: sharded pool encoding done in \S+: (\d+) of 12 shards encoded by this worker",
                      logs)
        assert m, logs[-3000:]
        # a helper logs its shard just after handing it in: the job may have ended its round first
        wait_for(lambda: sum(helper_lines(dep).values()) + int(m.group(1)) == 12, 10, "every helper's shard log line")
        helped = helper_lines(dep)
        assert sum(1 for v in helped.values() if v) >= 1 and int(m.group(1)) >= 1, helped  # 2+ processes encoded
        assert dep.metric("disal_pool_shards_total") == sum(helped.values())
        workers = dep.health()["job_queue"]["workers"]
        assert sum(w.get("shards_encoded", 0) for w in workers.values()) == sum(helped.values()), workers
        assert not list((dep.backend.model_dir / "shards").glob("*")), "the board's files are removed"

        # the features the round used are exactly a plain encoding of each text, whoever encoded it
        from disal.training.adapter import HFTextAdapter

        [path] = (dep.backend.model_dir / "features").glob("*.npz")
        with np.load(path) as z:
            cached = dict(zip(z["ids"].tolist(), z["feats"]))
        with label_studio.client() as c:
            tasks = c.get("/api/tasks/", params={"project": pid, "fields": "all", "page_size": 1000}).json()["tasks"]
        assert len(tasks) == N and all(t["id"] in cached for t in tasks)
        direct = HFTextAdapter(None).encode([t["data"]["text"] for t in tasks])
        got = np.stack([cached[t["id"]] for t in tasks])
        assert np.abs(got - direct).max() < 1e-4
        print(f"\n{mode}: {N} texts, first queue after {took:.1f}s; shards: {m.group(1)} by the job's worker, "
              f"helpers {helped}")
    finally:
        dep.stop()


def test_kill_9_of_a_helper_holding_a_shard_is_taken_over(tmp_path, label_studio, tiny_model_dir):
    env = {**sharded_env(tiny_model_dir, "sqlite", None), "SHARD_SIZE": "20"}  # 24 shards: the kill lands mid-board
    dep = Deployment(tmp_path, label_studio, env, extra=2).start()
    try:
        all_alive(dep, 3)
        pid, _ = new_project(label_studio, dep, 0, "sharded kill", texts=bbc_texts(N))

        def a_helper():
            """A worker that has encoded a shard for the job and is not the job's (it claims the next at once)."""
            q = dep.health()["job_queue"]["workers"]
            job_worker = (dep.project(pid).get("job") or {}).get("worker") or ""
            return next((w for wid, w in q.items() if w["alive"] and w.get("shards_encoded", 0) >= 1
                         and not job_worker.startswith(wid)), None)

        victim = wait_for(a_helper, 240, "a helper's first shard")
        os.kill(int(victim["pid"]), signal.SIGKILL)
        h = first_queue(dep, pid, timeout=300)
        assert h["queue_length"] == N and not h.get("partial")
        logs = dep.logs()
        assert re.search(r"shard \d+ was held by \S+, which stopped: reopened", logs), logs[-3000:]
        assert re.search(rf"project {pid}: sharded pool encoding done in", logs)
        print(f"\nkilled helper pid {victim['pid']} after {victim['shards_encoded']} shard(s); its claim was reopened")
    finally:
        dep.stop()
