"""What lagged deletion of old versions costs Label Studio's database, against a real Label Studio 1.23.

OLD_VERSIONS_GRACE_S keeps every version superseded within the grace (default 2 h) in Label Studio,
so a task open in the UI can still be submitted (its annotation names the prediction it started from).
This measures what that retention costs: a fresh headless Label Studio (own venv, SQLite, 127.0.0.1)
gets a project of N tasks, then R rounds each importing N predictions of a new model version, shaped
exactly as the backend pushes them (disal.queue.prediction_for: one choice with its probability,
score = queue priority). The SQLite file (+ WAL) is measured before and after, and every 10 rounds.

Reported per N: bytes per prediction and bytes per 100 rounds (= what 100 retained versions cost), plus
the time to delete one version afterwards (what the eventual clean-up costs; SQLite reuses the freed
pages, the file does not shrink).

Usage: .venv/bin/python bench/old_versions_growth.py --tasks 500,1000 --rounds 100 \
           --out bench/out/old_versions_growth.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from disal.labelconfig import parse_label_config  # noqa: E402
from disal.queue import prediction_for  # noqa: E402
from scripts.local_services import LabelStudioServer, free_port  # noqa: E402

CLASSES = ["business", "entertainment", "politics", "sport", "tech"]
CONFIG = ('<View><Text name="text" value="$text"/><Choices name="label" toName="text" choice="single">'
          + "".join(f'<Choice value="{c}"/>' for c in CLASSES) + "</Choices></View>")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def db_bytes(data_dir: Path) -> int:
    """The SQLite database with its WAL and shared-memory files: everything Label Studio's data costs."""
    return sum(p.stat().st_size for p in data_dir.glob("*.sqlite3*"))


def measure(ls: LabelStudioServer, n_tasks: int, rounds: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    spec = parse_label_config(CONFIG)
    with ls.client(timeout=300) as c:
        r = c.post("/api/projects/", json={"title": f"growth {n_tasks}", "label_config": CONFIG})
        r.raise_for_status()
        pid = r.json()["id"]
        texts = [{"text": f"task {i}: " + " ".join(rng.choice(["market", "goal", "vote", "film", "chip"], 40))}
                 for i in range(n_tasks)]
        c.post(f"/api/projects/{pid}/import", json=texts).raise_for_status()
        ids = sorted(t["id"] for t in c.get("/api/tasks/", params={"project": pid, "page_size": n_tasks,
                                                                   "fields": "task_only"}).json()["tasks"])
        assert len(ids) == n_tasks, len(ids)
        before = db_bytes(ls.data_dir)
        curve = [{"rounds": 0, "db_bytes": before}]
        t0 = time.time()
        for r_ in range(1, rounds + 1):
            version = f"disal-{r_:04d}-2026{r_ % 12 + 1:02d}01T{r_ % 24:02d}0000"  # the backend's name shape
            order = rng.permutation(n_tasks)
            preds = []
            for rank, tid in zip(order, ids):
                probs = rng.dirichlet(np.ones(len(CLASSES)))
                preds.append(prediction_for(tid, spec, float(rank) / max(n_tasks - 1, 1), version, probs))
            for s in range(0, n_tasks, 500):  # PUSH_CHUNK_SIZE
                c.post(f"/api/projects/{pid}/import/predictions", json=preds[s : s + 500]).raise_for_status()
            if r_ % 10 == 0:
                curve.append({"rounds": r_, "db_bytes": db_bytes(ls.data_dir)})
                log(f"N={n_tasks}: {r_}/{rounds} versions imported, DB {curve[-1]['db_bytes'] / 1e6:.1f} MB "
                    f"({time.time() - t0:.0f}s)")
        import_s = time.time() - t0
        after = db_bytes(ls.data_dir)
        listed = c.get(f"/api/projects/{pid}/model-versions/").json()
        t1 = time.time()
        c.request("DELETE", f"/api/projects/{pid}/model-versions/",
                  json={"model_version": next(iter(listed))}).raise_for_status()
        delete_one_s = time.time() - t1
        after_delete = db_bytes(ls.data_dir)
    n_preds = rounds * n_tasks
    growth = after - before
    return {"tasks": n_tasks, "rounds": rounds, "predictions": n_preds, "db_bytes_before": before,
            "db_bytes_after": after, "growth_bytes": growth, "bytes_per_prediction": round(growth / n_preds, 1),
            "bytes_per_100_rounds": round(growth / rounds * 100), "import_seconds": round(import_s, 1),
            "predictions_per_second": round(n_preds / import_s), "delete_one_version_seconds": round(delete_one_s, 2),
            "db_bytes_after_deleting_one_version": after_delete, "versions_listed": len(listed), "curve": curve}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="500,1000", help="comma-separated predictions per round (pool or PUSH_TOP_K)")
    p.add_argument("--rounds", type=int, default=100, help="versions imported per pool size")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "old_versions_growth.json")
    args = p.parse_args(argv)
    # SIGTERM (a timeout) exits through the finally blocks: Label Studio is stopped and its folder removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = []
    for n in [int(x) for x in args.tasks.split(",") if x.strip()]:
        data_dir = Path(tempfile.mkdtemp(prefix=f"disal-growth-{n}-"))
        try:
            with LabelStudioServer(data_dir, port=free_port()) as ls:  # a fresh database per pool size
                log(f"Label Studio up in {ls.started_in:.0f}s ({ls.url}); N={n}, {args.rounds} rounds")
                res = measure(ls, n, args.rounds)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
        log(f"N={n}: {res['bytes_per_prediction']:.0f} B/prediction, {res['bytes_per_100_rounds'] / 1e6:.1f} MB "
            f"per 100 rounds, import {res['predictions_per_second']}/s, deleting one version "
            f"{res['delete_one_version_seconds']}s")
        results.append(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"label_studio": "1.23.2", "results": results}, indent=1))
    print(json.dumps([{k: v for k, v in r.items() if k != "curve"} for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
