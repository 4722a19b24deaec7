"""Is a cheaper frozen encoder worth adopting? Dynamic int8 quantization (torch) of all-MiniLM-L6-v2
against today's fp32 encoder, on the same texts, in one run.

1. Throughput: the same N texts (R8 + BBC) encoded by fp32 and by int8, alternating, `--repeats`
   times each; the best of each is kept (the machine is shared) and the ratio reported.
2. Agreement: the cosine similarity of each text's fp32 and int8 features.
3. Selection quality: the simulator (frozen encoder + linear head) on BBC and R8 with each encoder's
   features, the same strategies and seeds; nAULC per strategy, and DISAL's paired difference
   int8 - fp32 across seeds (t-test). Adopt int8 only if that difference is within noise and
   throughput rises.

ONNX Runtime is not measured here: `onnxruntime` is not in the service's requirements, and the
export needs `optimum` or a hand-written torch.onnx export of the mean-pooled encoder (a next step).

Usage: HF_HUB_OFFLINE=1 .venv/bin/python bench/encoder_quantization.py --texts 1000 --seeds 5 \\
           --out bench/out/encoder_int8.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def quantized(adapter):
    """A copy of the adapter whose encoder's Linear layers are dynamically quantized to int8."""
    q = copy.copy(adapter)
    q.model = copy.deepcopy(adapter.model)
    q.model.encoder = torch.ao.quantization.quantize_dynamic(q.model.encoder, {torch.nn.Linear}, dtype=torch.qint8)
    q.model_id = f"{adapter.model_id}-int8-dynamic"
    return q


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=1000, help="texts timed by both encoders")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--datasets", default="bbc,r8")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--strategies", default="disal,margin,random")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the throughput part")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "encoder_int8.json")
    args = ap.parse_args(argv)

    from scipy.stats import ttest_rel

    from disal.bench.features import default_cache_dir
    from disal.bench.report import summarize
    from disal.bench.simulator import SimulationConfig, simulate
    from disal.data import load_dataset, text_pool
    from disal.training.adapter import HFTextAdapter

    torch.set_num_threads(args.threads)
    fp32 = HFTextAdapter(None, num_labels=2)
    int8 = quantized(fp32)
    texts = text_pool(("r8", "bbc"))[0][: args.texts]
    print(f"timing {len(texts)} texts, fp32 vs int8, best of {args.repeats}, {args.threads} threads", flush=True)
    fp32.encode(texts[:64]), int8.encode(texts[:64])  # warm both up
    t_fp32 = t_int8 = float("inf")
    for _ in range(args.repeats):  # alternate, so load on the shared machine hits both alike
        t_fp32 = min(t_fp32, best_of(lambda: fp32.encode(texts), 1))
        t_int8 = min(t_int8, best_of(lambda: int8.encode(texts), 1))
    a, b = fp32.encode(texts[:500]), int8.encode(texts[:500])
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    out = {"texts": len(texts), "threads": args.threads,
           "fp32_texts_per_s": len(texts) / t_fp32, "int8_texts_per_s": len(texts) / t_int8,
           "throughput_ratio_int8_over_fp32": t_fp32 / t_int8,
           "cosine_fp32_int8": {"mean": float(cos.mean()), "min": float(cos.min())}, "quality": {}}
    print(json.dumps({k: v for k, v in out.items() if k != "quality"}, indent=1), flush=True)

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        ds = load_dataset(name).subsample(3000, 1000, seed=0)
        res = {}
        for label, adapter in (("fp32", fp32), ("int8", int8)):
            cfg = SimulationConfig(strategies=strategies, seeds=args.seeds)
            rows = simulate(ds, cfg, None, ROOT / "bench" / "out" / f"int8-{name}-{label}", cache_dir=default_cache_dir(),
                            adapter=adapter)
            res[label] = {e["strategy"]: e for e in summarize(rows)}
        q = {}
        for s in res["fp32"]:
            x, y = np.array(res["int8"][s]["aulc_per_seed"]), np.array(res["fp32"][s]["aulc_per_seed"])
            p = float(ttest_rel(x, y).pvalue) if np.any(x != y) else 1.0
            q[s] = {"fp32": float(y.mean()), "int8": float(x.mean()), "diff": float((x - y).mean()), "p": p}
        out["quality"][name] = q
        print(name, json.dumps(q, indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
