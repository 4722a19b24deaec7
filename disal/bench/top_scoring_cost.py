"""Scoring cost of the `top-N` regime's trained part, in forward-pass equivalents of the top N blocks.

The unit is one plain forward of the top N blocks + pooling + head over the pool from the cached
states (top_outputs): what an uncertainty baseline pays in this regime. DISAL pays
top_trajectory_arrays (one plain pass at theta_0 for the accumulated direction, whose d_0 = 0, and
one torch.func.jvp per checkpoint k = 1..K) plus the selection. The issue's target is at most
2K + 1 such passes. The trajectory comes from a real short train_top on labeled BBC texts, so the
directions have the real structure. Plain and DISAL are timed back to back, `repeats` times, and
the minimum of each is kept. Both wall seconds and the process's CPU seconds (time.process_time,
all its threads) are recorded; `passes` is the CPU-time ratio, because on a shared machine other
processes' load moves wall time by 3x between back-to-back runs and CPU time far less.

    HF_HUB_OFFLINE=1 .venv/bin/python -m disal.bench.top_scoring_cost --top-blocks 2 --pool 64 --ks 1,3,5 \
        --out bench/out/top_scoring_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch


def measure(adapter, texts: Sequence[str], lab_texts: Sequence[str], lab_y: np.ndarray, top_blocks: int,
            ks: Sequence[int], repeats: int = 3, steps: int = 10, batch_size: int = 32, seed: int = 0) -> dict:
    """Rows {K, plain_s, disal_s, passes, target} for one adapter; see the module docstring."""
    from ..strategies.influence import DISAL
    from ..training.hidden_cache import HiddenStateCache
    from ..training.top import TopBlocks, TopConfig, top_outputs, top_scoring_inputs, train_top
    from .scoring_cost import sub_trajectory

    cache = HiddenStateCache(top_blocks)
    pool_ids = list(range(len(texts)))
    lab_ids = [f"lab:{i}" for i in range(len(lab_texts))]
    t0 = time.perf_counter()
    cache.fill(adapter, pool_ids + lab_ids, list(texts) + list(lab_texts))
    fill_s = time.perf_counter() - t0
    top = TopBlocks(adapter, top_blocks)
    traj = train_top(top, cache, lab_ids, lab_y, config=TopConfig(min_steps=steps, epochs=1, num_checkpoints=steps,
                                                                  batch_size=8), seed=seed)
    rows = []
    for k in ks:
        sub = sub_trajectory(traj, k)
        top.load(sub.last())
        plain, disal, plain_cpu, disal_cpu = [], [], [], []
        for _ in range(repeats):
            t1, c1 = time.perf_counter(), time.process_time()
            top_outputs(top, cache, pool_ids, batch_size)
            plain.append(time.perf_counter() - t1)
            plain_cpu.append(time.process_time() - c1)
            strategy = DISAL()
            t2, c2 = time.perf_counter(), time.process_time()
            inputs = top_scoring_inputs(top, cache, pool_ids, sub, strategy=strategy, batch_size=batch_size)
            strategy.select(inputs, 10, seed)
            disal.append(time.perf_counter() - t2)
            disal_cpu.append(time.process_time() - c2)
        p, d, pc, dc = min(plain), min(disal), min(plain_cpu), min(disal_cpu)
        rows.append({"top_blocks": top_blocks, "K": sub.num_checkpoints, "pool": len(texts), "plain_s": p,
                     "disal_s": d, "plain_cpu_s": pc, "disal_cpu_s": dc, "passes": dc / pc, "passes_wall": d / p,
                     "target_passes": 2 * sub.num_checkpoints + 1, "plain_all_s": plain, "disal_all_s": disal,
                     "plain_all_cpu_s": plain_cpu, "disal_all_cpu_s": disal_cpu})
        print(f"[top-{top_blocks}] K={sub.num_checkpoints} on {len(texts)} texts: plain top pass {p:.2f}s wall / "
              f"{pc:.2f}s CPU, DISAL {d:.2f}s / {dc:.2f}s = {dc / pc:.2f} passes by CPU time ({d / p:.2f} by wall; "
              f"target <= {2 * sub.num_checkpoints + 1})", flush=True)
    return {"rows": rows, "cache_fill_s": fill_s, "cache_bytes_per_task": cache.bytes_per_task(),
            "trained_parameters": int(sum(p.numel() for p in top.parameters()))}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m disal.bench.top_scoring_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--top-blocks", type=int, default=2)
    p.add_argument("--pool", type=int, default=64, help="BBC texts scored")
    p.add_argument("--labeled", type=int, default=16, help="BBC texts of the short real fine-tune")
    p.add_argument("--ks", default="1,3,5")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default=None, help="encoder (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--out", default="bench/out/top_scoring_cost.json")
    a = p.parse_args(argv)
    from ..data import load_dataset
    from ..training.adapter import HFTextAdapter

    ds = load_dataset("bbc")
    texts = list(ds.train_texts[a.labeled : a.labeled + a.pool])
    ad = HFTextAdapter(a.model, num_labels=len(ds.classes), max_length=a.max_length)
    res = measure(ad, texts, list(ds.train_texts[: a.labeled]), np.asarray(ds.train_labels[: a.labeled]),
                  a.top_blocks, [int(k) for k in a.ks.split(",")], a.repeats)
    res["meta"] = {"model": ad.model_id, "max_length": a.max_length, "threads": torch.get_num_threads(),
                   "cpus": os.cpu_count(), "torch": torch.__version__, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                   "load_average": os.getloadavg()}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
