"""/webhook latency while a round runs, now that rounds run in a job worker process.

A real Label Studio, the backend as `make serve` runs it (gunicorn + its embedded job worker), a
project of N real texts (BBC News, cycled). From connecting the backend until the first round has
served its queue (encoding the whole pool: the longest round there is), one client sends
ANNOTATION_UPDATED webhooks back to back on one kept-alive connection, and then as many again
during the retrain that those events ask for. Reports p50/p99/max per phase.
Before training moved off the web process, docs/benchmarks.md measured p99 243.7 ms (1k) and
28.8 ms (10k) for /webhook while a round ran.

Usage: .venv/bin/python bench/webhook_during_round.py --tasks 1000 --out bench/out/webhook_during_round.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.local_services import BackendServer, LabelStudioServer, free_port  # noqa: E402


def stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 2),
            "p99": round(float(np.percentile(a, 99)), 2), "max": round(float(a.max()), 2)}


def hammer_until(client: httpx.Client, pid: int, tid: int, done) -> list[float]:
    ev = {"action": "ANNOTATION_UPDATED", "project": {"id": pid}, "task": {"id": tid},
          "annotation": {"id": 1, "task": tid, "result": []}}
    out = []
    while not done():
        t0 = time.perf_counter()
        r = client.post("/webhook", json=ev)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 201, r.text
        time.sleep(0.02)  # ~50 events/s: a busy team, not a load test
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "webhook_during_round")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "webhook_during_round.json")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from disal.data import load_bbc

    ds = load_bbc()
    texts = [{"text": ds.train_texts[i % len(ds.train_texts)] + ("" if i < len(ds.train_texts) else f" #{i}")}
             for i in range(args.tasks)]
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    ls = LabelStudioServer(args.work / "labelstudio", free_port()).start()
    backend = BackendServer(args.work / "model_dir", free_port(), ls,
                            extra_env={"BASIC_AUTH_USER": "", "BASIC_AUTH_PASS": "", "FIRST_QUEUE_SECONDS": "100000"},
                            log=args.work / "backend.log").start()
    out: dict = {"tasks": args.tasks}
    try:
        cfg = ('<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
               '<Choice value="a"/><Choice value="b"/></Choices></View>')
        with ls.client() as c:
            pid = c.post("/api/projects/", json={"title": "webhook latency", "label_config": cfg,
                                                 "start_training_on_annotation_update": True}).json()["id"]
            assert c.post(f"/api/projects/{pid}/import", json=texts).status_code == 201
            tid = c.get("/api/tasks/", params={"project": pid, "page_size": 1}).json()["tasks"][0]["id"]
            assert c.post("/api/ml/", json={"url": backend.url, "project": pid, "title": "DISAL"}).status_code == 201

        def health() -> dict:
            return httpx.get(backend.url + "/health", timeout=10).json()["projects"].get(str(pid), {})

        with httpx.Client(base_url=backend.url, timeout=10) as client:
            t0 = time.time()
            first = hammer_until(client, pid, tid, lambda: bool(health().get("model_version")))
            out["first_round_s"] = round(time.time() - t0, 1)
            out["during_first_round_ms"] = stats(first)
            v = health()["model_version"]
            # a retrain needs a label: one annotation, then the hammer's events until its version serves
            with ls.client() as c:
                r = c.post(f"/api/tasks/{tid}/annotations/", json={"result": [
                    {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["a"]}}]})
                assert r.status_code == 201, r.text
            retrain = hammer_until(client, pid, tid, lambda: health().get("model_version") != v)
            out["during_a_retrain_ms"] = stats(retrain)
        print(json.dumps(out, indent=1))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
    finally:
        backend.stop()
        ls.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
