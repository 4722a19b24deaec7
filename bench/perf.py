"""`make bench`'s cost half: scoring cost and a real Label Studio round, summarized in bench/out/perf.json.

Runs bench/scoring_cost.py (DISAL over plain inference, head and all, K = 1, 3, 5, 10) and
bench/service_cost.py (rounds, latencies, push rate and memory against a real Label Studio for pools
of 1,000 and 10,000 tasks), then writes perf.json with the headline numbers:

  scoring_ratio_head, scoring_ratio_all       DISAL / plain inference at the default K = 5 (scoring_K)
  scoring_ratio_mlp, scoring_passes_mlp       the same for TRAIN_MODE=mlp, and its trained part's cost in
                                              forward passes of the MLP (target 2K + 1)
  scoring_ratio_top2, scoring_passes_top2     the top-2 regime (simulator and TRAIN_MODE=top-2), from
                                              bench/out/top_scoring_cost.json when it was run
  webhook_ms_p99_during_training              /webhook answer time while a round runs (largest pool)
  predict_one_ms_p50                          /predict, one task the backend has not scored yet
  round_seconds_10k                           annotation -> queue live in Label Studio, 10k tasks
  push_per_second                             predictions imported per second (10k pool)

Usage: .venv/bin/python bench/perf.py [--preset quick|full] [--skip-scoring] [--skip-service]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
PY = sys.executable

PRESETS = {
    # quick: `all` on a small pool (its per-item cost is linear: bench/scoring_cost.py checks it)
    "quick": {"scoring": ["--quick"], "service": ["--pools", "1000,10000", "--rounds", "3"]},
    "full": {"scoring": ["--pool", "10000", "--all-pool", "500", "--ks", "1,3,5,10"],
             "service": ["--pools", "1000,10000", "--rounds", "5"]},
}


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    print(f"  done in {time.time() - t0:.0f}s", flush=True)


def scoring_k(scoring: dict, want: int = 5) -> int | None:
    """K = 5 (the default) when measured, else the largest K both `head` and `all` were measured at."""
    ks = [{int(r["K"]) for r in scoring.get("rows", []) if r.get("params") == p} for p in ("head", "all")]
    common = ks[0] & ks[1]
    if not common:
        return None
    return want if want in common else max(common)


def ratio_at(scoring: dict, params: str, k: int | None) -> float | None:
    for row in scoring.get("rows", []):
        if row.get("params") == params and int(row.get("K", -1)) == k:
            return row.get("ratio")
    return None


def _round(x: float | None, nd: int) -> float | None:
    return None if x is None else round(float(x), nd)


def headline(scoring: dict | None, service: dict | None, top: dict | None = None) -> dict:
    """perf.json's headline from the detailed results (`top`: disal.bench.top_scoring_cost's, if run)."""
    out: dict = {}
    if scoring:
        k = scoring_k(scoring)
        out["scoring_ratio_head"] = _round(ratio_at(scoring, "head", k), 4)
        out["scoring_ratio_all"] = _round(ratio_at(scoring, "all", k), 2)
        out["scoring_K"] = k
        mlp = next((r for r in scoring.get("rows", []) if r.get("params") == "mlp" and int(r.get("K", -1)) == k), None)
        if mlp:
            out["scoring_ratio_mlp"] = _round(mlp["ratio"], 4)
            out["scoring_passes_mlp"] = _round(mlp.get("passes"), 2)
    if top:
        rows = top.get("rows", [])
        row = next((r for r in rows if int(r.get("K", -1)) == 5), rows[-1] if rows else None)
        if row:
            out["scoring_passes_top2"] = _round(row.get("passes"), 2)
            if row.get("plain_s"):
                out["scoring_ratio_top2"] = _round(row["disal_s"] / row["plain_s"], 2)
    if service and service.get("pools"):
        pools = sorted(service["pools"], key=lambda p: p["pool"])
        big = pools[-1]
        lat = big.get("latency_during_training_ms", {})
        out["webhook_ms_p99_during_training"] = lat.get("webhook", {}).get("p99")
        out["predict_one_ms_p50"] = lat.get("predict_1_new", {}).get("p50")
        ten_k = next((p for p in pools if p["pool"] == 10000), None)
        out["round_seconds_10k"] = ten_k["queue_live_seconds_median"] if ten_k else None
        out["round_done_seconds_10k"] = ten_k["round_seconds_median"] if ten_k else None
        out["push_per_second"] = (ten_k or big).get("push_per_second")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--skip-scoring", action="store_true", help="reuse bench/out/scoring_cost.json")
    ap.add_argument("--skip-service", action="store_true", help="reuse bench/out/service_cost.json")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    p = PRESETS[args.preset]
    scoring_json, service_json = OUT / "scoring_cost.json", OUT / "service_cost.json"
    if not args.skip_scoring:
        run([PY, "bench/scoring_cost.py", *p["scoring"], "--out", str(scoring_json)])
    if not args.skip_service:
        run([PY, "bench/service_cost.py", *p["service"], "--out", str(service_json)])
    scoring = json.loads(scoring_json.read_text()) if scoring_json.exists() else None
    service = json.loads(service_json.read_text()) if service_json.exists() else None
    top_json = OUT / "top_scoring_cost.json"  # python -m disal.bench.top_scoring_cost (minutes; not in make bench)
    top = json.loads(top_json.read_text()) if top_json.exists() else None
    perf = {**headline(scoring, service, top), "preset": args.preset,
            "details": {"scoring": str(scoring_json.relative_to(ROOT)), "service": str(service_json.relative_to(ROOT))}}
    missing = [k for k in ("scoring_ratio_head", "scoring_ratio_all", "webhook_ms_p99_during_training",
                           "predict_one_ms_p50", "round_seconds_10k", "push_per_second") if perf.get(k) is None]
    (OUT / "perf.json").write_text(json.dumps(perf, indent=1))
    print(json.dumps(perf, indent=1))
    if missing:
        print(f"perf.json is missing {', '.join(missing)}: see the runs above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
