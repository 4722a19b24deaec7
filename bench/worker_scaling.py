"""Job throughput with 1, 2 and 4 worker processes on this machine, through a real Redis and a real
Label Studio.

The workload: P projects of M real BBC News texts each, connected at once, so P first rounds (cold
starts: the pool is encoded, a queue is built and pushed) wait in the queue together. For each
worker count, a fresh backend (gunicorn with WORKERS=0) and that many `python -m disal.worker`
processes share one Redis; the measure is the time from the first connection until every project
serves a version, and texts encoded per second over it. The workers use one torch thread each
(TORCH_THREADS=1), so on a machine with C cores, up to C workers can run encoders side by side.

What this measures is scaling ACROSS projects: one project's first round runs in one worker (issue
12's sharded pool encoding, which would split one large pool across workers, is not built).

Usage: .venv/bin/python bench/worker_scaling.py --workers 1,2,4 --projects 4 --texts 300
"""

from __future__ import annotations

import argparse
import json
import os
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


def run(ls: LabelStudioServer, redis: RedisServer, workers: int, projects: int, texts: list[dict], work: Path) -> dict:
    import redis as redis_client

    redis_client.Redis.from_url(redis.url).flushall()
    env = {"REDIS_URL": redis.url, "WORKERS": "0", "TORCH_THREADS": "1", "FIRST_QUEUE_SECONDS": "100000",
           "BASIC_AUTH_USER": "", "BASIC_AUTH_PASS": "", "LOG_LEVEL": "INFO"}
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
            t0 = time.time()
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
        return {"workers": workers, "projects": projects, "texts_per_project": len(texts),
                "seconds_to_all_served": round(total, 1), "per_project_s": sorted(round(v, 1) for v in done.values()),
                "texts_per_s": round(projects * len(texts) / total, 1)}
    finally:
        for w in procs:
            w.stop()
        backend.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--projects", type=int, default=4)
    ap.add_argument("--texts", type=int, default=300)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "worker_scaling")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "worker_scaling.json")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from disal.data import load_bbc

    ds = load_bbc()
    texts = [{"text": t} for t in ds.train_texts[: args.texts]]
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
            rows.append(run(ls, redis, n, args.projects, texts, args.work))
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
