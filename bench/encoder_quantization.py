"""Is a cheaper frozen encoder worth adopting? all-MiniLM-L6-v2 as today (torch, fp32) against a
variant, on the same texts, in one run:
- `--variant int8`: torch's dynamic int8 quantization of every Linear of the encoder;
- `--variant onnx`: the same fp32 encoder + mean pooling exported with torch.onnx and run by ONNX
  Runtime (CPUExecutionProvider, all graph optimisations, the same threads);
- `--variant onnx-int8`: that ONNX graph with ONNX Runtime's dynamic int8 quantization.

1. Throughput: the same N texts (R8 + BBC) encoded by torch fp32 and by the variant, alternating,
   `--repeats` times each, in the same batches (the adapter's length-sorted batching); the best of
   each is kept (the machine is shared) and the ratio reported.
2. Agreement: the cosine similarity of each text's fp32 and variant features.
3. Selection quality: the simulator (frozen encoder + linear head) on BBC and R8 with each encoder's
   features, the same strategies and seeds; nAULC per strategy, and the paired difference
   variant - fp32 across seeds (t-test). Adopt a variant only if that difference is within noise and
   throughput rises.

The ONNX variants use the service's own onnxruntime and onnx (requirements.txt): the fp32 one is what
the backend runs by default since this measurement (disal/training/onnx_features.py).

Usage: HF_HUB_OFFLINE=1 .venv/bin/python bench/encoder_quantization.py --variant onnx --texts 1000 \\
           --seeds 5 --out bench/out/encoder_onnx.json
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


def onnx_encoder(adapter, folder: Path, threads: int, int8: bool = False):
    """A copy of the adapter whose `encode` is the service's ONNX Runtime path
    (disal.training.onnx_features: the same export and session), or that graph after ONNX Runtime's
    dynamic int8 quantization."""
    from disal.training.onnx_features import OnnxTextFeatures, export, graph_path

    t0 = time.perf_counter()
    path = graph_path(folder, adapter.model_id, adapter.model)
    if not path.exists():
        export(adapter.model, path)
    print(f"exported {path} in {time.perf_counter() - t0:.1f}s ({path.stat().st_size / 1e6:.1f} MB)", flush=True)
    graph = None
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        graph = path.with_name(path.stem + "-int8.onnx")
        quantize_dynamic(str(path), str(graph), weight_type=QuantType.QInt8)
    features = OnnxTextFeatures(adapter, folder, threads, graph=graph)
    out = copy.copy(adapter)
    out.model_id = f"{adapter.model_id}-onnxruntime{'-int8' if int8 else ''}"
    out.encode = lambda texts, progress=None: features.encode(texts)
    return out


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=("int8", "onnx", "onnx-int8"), default="int8")
    ap.add_argument("--texts", type=int, default=1000, help="texts timed by both encoders")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--datasets", default="bbc,r8")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--strategies", default="disal,margin,random")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the throughput part")
    ap.add_argument("--out", type=Path, default=None, help="default bench/out/encoder_<variant>.json")
    args = ap.parse_args(argv)

    from scipy.stats import ttest_rel

    from disal.bench.features import default_cache_dir
    from disal.bench.report import summarize
    from disal.bench.simulator import SimulationConfig, simulate
    from disal.data import load_dataset, text_pool
    from disal.training.adapter import HFTextAdapter

    torch.set_num_threads(args.threads)
    v = args.variant
    out_path = args.out or ROOT / "bench" / "out" / f"encoder_{v.replace('-', '_')}.json"
    fp32 = HFTextAdapter(None, num_labels=2)
    other = quantized(fp32) if v == "int8" else onnx_encoder(fp32, out_path.parent / "onnx", args.threads,
                                                               int8=v == "onnx-int8")
    texts = text_pool(("r8", "bbc"))[0][: args.texts]
    print(f"timing {len(texts)} texts, fp32 vs {v}, best of {args.repeats}, {args.threads} threads", flush=True)
    fp32.encode(texts[:64]), other.encode(texts[:64])  # warm both up
    t_fp32 = t_other = float("inf")
    for _ in range(args.repeats):  # alternate, so load on the shared machine hits both alike
        t_fp32 = min(t_fp32, best_of(lambda: fp32.encode(texts), 1))
        t_other = min(t_other, best_of(lambda: other.encode(texts), 1))
    a, b = fp32.encode(texts[:500]), other.encode(texts[:500])
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    out = {"variant": v, "texts": len(texts), "threads": args.threads,
           "fp32_texts_per_s": len(texts) / t_fp32, f"{v}_texts_per_s": len(texts) / t_other,
           "throughput_ratio": t_fp32 / t_other, f"throughput_ratio_{v}_over_fp32": t_fp32 / t_other,
           "cosine": {"mean": float(cos.mean()), "min": float(cos.min())},
           "max_abs_diff": float(np.abs(a - b).max()), "quality": {}}
    print(json.dumps({k: val for k, val in out.items() if k != "quality"}, indent=1), flush=True)

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        ds = load_dataset(name).subsample(3000, 1000, seed=0)
        res = {}
        for label, adapter in (("fp32", fp32), (v, other)):
            cfg = SimulationConfig(strategies=strategies, seeds=args.seeds)
            rows = simulate(ds, cfg, None, ROOT / "bench" / "out" / f"enc-{name}-{label}", cache_dir=default_cache_dir(),
                            adapter=adapter)
            res[label] = {e["strategy"]: e for e in summarize(rows)}
        q = {}
        for s in res["fp32"]:
            x, y = np.array(res[v][s]["aulc_per_seed"]), np.array(res["fp32"][s]["aulc_per_seed"])
            p = float(ttest_rel(x, y).pvalue) if np.any(x != y) else 1.0
            q[s] = {"fp32": float(y.mean()), v: float(x.mean()), "diff": float((x - y).mean()), "p": p}
        out["quality"][name] = q
        print(name, json.dumps(q, indent=1), flush=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=1))
    print(f"wrote {out_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
