"""The cost section of docs/benchmarks.md from bench/out/perf.json and the JSONs it points to."""

from __future__ import annotations

import json
from pathlib import Path

PHASES = ("fetch", "encode", "train", "score", "push", "tidy")


def _load(root: Path, rel: str | None) -> dict | None:
    if not rel:
        return None
    p = root / rel
    return json.loads(p.read_text()) if p.exists() else None


def _pool(info) -> str:
    if not isinstance(info, dict):
        return str(info)
    return (f"{info.get('distinct')} distinct texts from {info.get('sources')}"
            + (" (cycled to size)" if info.get("cycled") else ""))


def scoring_lines(scoring: dict) -> list[str]:
    meta = scoring.get("meta", {})
    lines = ["### Scoring: DISAL over plain inference", "",
             "Plain inference = encode the pool once and apply the final head (what an uncertainty baseline "
             "needs). DISAL `head` = the backend's path: the same single encoder pass, then the closed form "
             "over the head's K checkpoints. DISAL `all` = every encoder parameter fine-tuned: one "
             "forward-mode JVP through the whole encoder per checkpoint (`disal/training/jvp.py`). "
             f"Encoder `{meta.get('model')}`, max length {meta.get('max_length')}, {meta.get('threads')} torch "
             f"threads. Pool: {_pool(meta.get('pool'))}.", "",
             "| params | K | pool | plain s | DISAL s | DISAL / plain | DISAL items/s |", "|---|---|---|---|---|---|---|"]
    for r in scoring.get("rows", []):
        lines.append(f"| {r['params']} | {r['K']} | {r['pool']} | {r['plain_s']:.1f} | {r['disal_s']:.1f} | "
                     f"**{r['ratio']:.2f}** | {r['disal_items_per_s']:.1f} |")
    for lin in scoring.get("linearity", []):
        lines.append("")
        lines.append(f"Per-item DISAL cost of `{lin['params']}` (K={lin['K']}) at two pool sizes (it should not grow "
                     f"with the pool): {lin['disal_s_per_item'][0]:.3f} s/item at {lin['pools'][0]} texts, "
                     f"{lin['disal_s_per_item'][1]:.3f} at {lin['pools'][1]}.")
    tb = scoring.get("trajectory_bytes", {})
    if tb:
        lines += ["", "| trajectory | K | bytes on disk (K+1 checkpoints) | bytes per stored checkpoint |",
                  "|---|---|---|---|"]
        for p, t in tb.items():
            lines.append(f"| {p} | {t['K']} | {t['bytes']:,} | {t['bytes_per_checkpoint']:,.0f} |")
    return lines + [""]


def service_lines(service: dict) -> list[str]:
    pools = sorted(service.get("pools", []), key=lambda p: p["pool"])
    if not pools:
        return []
    lines = ["### A round against a real Label Studio 1.23.2", "",
             "`bench/service_cost.py`: one Label Studio (its own venv, 127.0.0.1) and a fresh backend per pool "
             "(gunicorn, one worker, as `make serve`), a project of real texts (R8, then BBC, cycled), connected "
             "through the UI's API with basic auth. A round = an annotation POSTed to Label Studio -> its "
             "webhook -> our background job -> predictions imported and `model_version` switched (*queue live*); "
             "*job done* adds deleting the previous version's predictions. Phases are the backend's own "
             "`disal_job_phase_seconds` (median over rounds).", "",
             "| pool | cold start s (encode s) | queue live s | job done s | " + " | ".join(PHASES)
             + " | pushed per round | push/s | peak RSS MB |",
             "|---|---|---|---|" + "---|" * len(PHASES) + "---|---|---|"]
    for p in pools:
        ph = p.get("phase_seconds_median", {})
        cs = p.get("cold_start_phases", {})
        pushed = [r["pushed"] for r in p.get("rounds", [])]
        lines.append(f"| {p['pool']:,} | {p.get('cold_start_seconds', 0):.0f} ({cs.get('encode', 0):.0f}) | "
                     f"{p.get('queue_live_seconds_median', float('nan')):.1f} | {p['round_seconds_median']:.1f} | "
                     + " | ".join(f"{ph.get(k, 0):.2f}" for k in PHASES)
                     + f" | {(sum(pushed) / len(pushed)) if pushed else 0:.0f} | {p.get('push_per_second') or 0:.0f} | "
                     f"{p.get('memory', {}).get('peak_rss_mb', 0):.0f} |")
    lat_rows = [(p["pool"], p.get("latency_during_training_ms")) for p in pools if p.get("latency_during_training_ms")]
    if lat_rows:
        lines += ["", "Latency while a training round runs (sequential requests on one connection, ms):", "",
                  "| pool | route | n | p50 | p99 | max |", "|---|---|---|---|---|---|"]
        names = {"webhook": "/webhook (ANNOTATION_UPDATED)", "predict_1": "/predict, 1 task in the queue",
                 "predict_1_new": "/predict, 1 task never scored (encodes it)",
                 "predict_100": "/predict, 100 tasks in the queue"}
        for pool, lat in lat_rows:
            for k, label in names.items():
                v = lat.get(k) or {}
                if v.get("n"):
                    lines.append(f"| {pool:,} | {label} | {v['n']} | {v['p50']:.1f} | {v['p99']:.1f} | {v['max']:.1f} |")
    return lines + [""]


def cost_section(perf_path: Path) -> list[str]:
    perf = json.loads(perf_path.read_text())
    root = perf_path.resolve().parents[2] if perf_path.resolve().parent.name == "out" else Path.cwd()
    details = perf.get("details", {})
    lines = ["`bench/out/perf.json` (`make bench`, preset " + str(perf.get("preset")) + "):", "", "```json",
             json.dumps({k: v for k, v in perf.items() if k != "details"}, indent=1), "```", ""]
    scoring = _load(root, details.get("scoring"))
    if scoring:
        lines += scoring_lines(scoring)
    service = _load(root, details.get("service"))
    if service:
        lines += service_lines(service)
    return lines
