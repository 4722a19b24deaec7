"""Job throughput with 1, 2 and 4 worker processes on this machine, through a real Redis and a real
Label Studio.

The workload: P projects of M real BBC News texts each, connected at once, so P first rounds (cold
starts: the pool is encoded, a queue is built and pushed) wait in the queue together. For each
worker count, a fresh backend (gunicorn with WORKERS=0) and that many `python -m disal.worker`
processes share one Redis; the measure is the time from the first connection until every project
serves a version, and texts encoded per second over it. The workers use one torch thread each
(TORCH_THREADS=1), so on a machine with C cores, up to C workers can run encoders side by side.

Two workloads:
- `--projects 4` (default): scaling ACROSS projects, each first round in one worker;
- `--projects 1 --texts 3000 --shard`: ONE large first round, its pool's encoding sharded across
  every live worker (disal.pool_shards; SHARD_MIN_TASKS=1 so any pool shards, SHARD_SIZE from
  `--shard-size`). With 1 worker there is nobody to share with: the job encodes alone.
Redis's own byte counters (INFO stats) give the queue's traffic per run.

Usage: .venv/bin/python bench/worker_scaling.py --workers 1,2,4 --projects 4 --texts 300
       .venv/bin/python bench/worker_scaling.py --workers 1,2,4 --projects 1 --texts 3000 --shard \\
           --out bench/out/worker_scaling_sharded.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.local_services import (BackendServer, LabelStudioServer, RedisServer, WorkerProcess,  # noqa: E402
                                    free_port)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def redis_bytes(r) -> int:
    stats = r.info("stats")
    return int(stats["total_net_input_bytes"]) + int(stats["total_net_output_bytes"])


def run(ls: LabelStudioServer, redis: RedisServer, workers: int, projects: int, texts: list[dict], work: Path,
        shard_size: int | None = None) -> dict:
    import redis as redis_client

    rc = redis_client.Redis.from_url(redis.url)
    rc.flushall()
    env = {"REDIS_URL": redis.url, "WORKERS": "0", "TORCH_THREADS": "1", "FIRST_QUEUE_SECONDS": "100000",
           "BASIC_AUTH_USER": "", "BASIC_AUTH_PASS": "", "LOG_LEVEL": "INFO"}
    if shard_size:
        env.update({"SHARD_MIN_TASKS": "1", "SHARD_SIZE": str(shard_size)})
    else:
        env["SHARD_MIN_TASKS"] = str(10**9)  # scaling across projects only
    folder = work / f"w{workers}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    backend = BackendServer(folder / "model_dir", free_port(), ls, extra_env=env, log=folder / "backend.log")
    backend.start()
    procs = [WorkerProcess(backend, log=folder / f"worker{i}.log").start() for i in range(workers)]
    cfg = ('<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
           '<Choice value="a"/><Choice value="b"/></Choices></View>')
    try:
        # wait until every worker has loaded its encoder and says so with a heartbeat
        t0 = time.time()
        while time.time() - t0 < 180:
            alive = httpx.get(backend.url + "/health", timeout=10).json()["job_queue"]["workers"]
            if sum(w["alive"] for w in alive.values()) == workers:
                break
            time.sleep(1)
        pids = []
        with ls.client() as c:
            for p in range(projects):
                pid = c.post("/api/projects/", json={"title": f"scaling w{workers} p{p}", "label_config": cfg}).json()["id"]
                assert c.post(f"/api/projects/{pid}/import", json=texts).status_code == 201
                pids.append(pid)
            t0, bytes0 = time.time(), redis_bytes(rc)
            for pid in pids:
                r = c.post("/api/ml/", json={"url": backend.url, "project": pid, "title": "DISAL"})
                assert r.status_code == 201, r.text
        done: dict[int, float] = {}
        while len(done) < len(pids) and time.time() - t0 < 1800:
            health = httpx.get(backend.url + "/health", timeout=10).json()["projects"]
            for pid in pids:
                h = health.get(str(pid), {})
                if pid not in done and h.get("model_version") and h.get("state") == "idle":
                    done[pid] = time.time() - t0
                    log(f"{workers} worker(s): project {pid} served after {done[pid]:.1f}s")
            time.sleep(0.5)
        total = max(done.values())
        logs = "".join(p.read_text(errors="replace") for p in folder.glob("*.log"))
        shards = re.findall(r"sharded pool encoding done in \S+: (\d+) of (\d+) shards encoded by this worker", logs)
        return {"workers": workers, "projects": projects, "texts_per_project": len(texts),
                "seconds_to_all_served": round(total, 1), "per_project_s": sorted(round(v, 1) for v in done.values()),
                "texts_per_s": round(projects * len(texts) / total, 1),
                "redis_bytes": redis_bytes(rc) - bytes0, "shard_size": shard_size,
                "shards_by_the_jobs_worker": [f"{a}/{b}" for a, b in shards]}
    finally:
        for w in procs:
            w.stop()
        backend.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--projects", type=int, default=4)
    ap.add_argument("--texts", type=int, default=300)
    ap.add_argument("--shard", action="store_true", help="shard each pool's encoding across the workers")
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "worker_scaling")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "worker_scaling.json")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from disal.data import text_pool

    texts = [{"text": t} for t in text_pool(("bbc", "r8"))[0][: args.texts]]
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    ls = LabelStudioServer(args.work / "labelstudio", free_port())
    redis = RedisServer(args.work / "redis", free_port())
    log(f"starting Label Studio on {ls.url} and redis-server on {redis.url}")
    ls.start()
    redis.start()
    rows = []
    try:
        for n in [int(x) for x in args.workers.split(",")]:
            rows.append(run(ls, redis, n, args.projects, texts, args.work, args.shard_size if args.shard else None))
            log(json.dumps(rows[-1]))
    finally:
        redis.stop()
        ls.stop()
    base = rows[0]["seconds_to_all_served"]
    for r in rows:
        r["speedup_vs_first"] = round(base / r["seconds_to_all_served"], 2)
    out = {"machine": {"cpus": os.cpu_count()}, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
