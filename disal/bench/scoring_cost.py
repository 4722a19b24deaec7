"""What DISAL scoring costs relative to plain inference, and how large a trajectory is on disk.

Plain inference = what an uncertainty baseline needs: encode the pool once and apply the final head
(one forward pass per text). DISAL:

- `head` (the backend's path): encode once with the frozen encoder, then the closed form over the K
  head checkpoints (head_scoring_inputs + DISAL select). The encode is shared with plain inference,
  so it is timed once and added to both sides; the extra work of each side is timed on its own.
- `all` / `last-N`: the fine-tuned parameters' JVP at each of the K checkpoints
  (jvp_scoring_inputs + DISAL select) on a trajectory recorded by a short real fine-tune, timed
  back to back with plain inference (adapter.logits) on the same texts and the same model.

Ratios are DISAL seconds / plain seconds on the same pool in the same run: the lower bound is 1.0.
Run: python bench/scoring_cost.py --pool 10000 --all-pool 500 --ks 1,3,5,10 --out bench/out/scoring_cost.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..trajectory import Trajectory, checkpoint_schedule
from .features import progress_printer

log = logging.getLogger(__name__)


def say(msg: str) -> None:
    print(msg, flush=True)


def pool_texts(n: int, seed: int = 0) -> tuple[list[str], dict]:
    """n texts from R8 train+test and BBC train+test (shuffled with `seed`), cycled if n exceeds them."""
    from ..data import text_pool

    src, _ = text_pool(("r8", "bbc"))
    perm = np.random.default_rng(seed).permutation(len(src))
    texts = [src[perm[i % len(src)]] for i in range(n)]
    return texts, {"sources": "r8 train+test, bbc train+test", "distinct": min(n, len(src)),
                   "available": len(src), "cycled": n > len(src)}


def labeled_set(n: int = 40) -> tuple[list[str], np.ndarray, int]:
    """The first n R8 training texts and labels (the labeled set of the short fine-tune / head fit)."""
    from ..data import load_dataset

    r8 = load_dataset("r8")
    return list(r8.train_texts[:n]), np.asarray(r8.train_labels[:n]), int(len(r8.classes))


def sub_trajectory(traj: Trajectory, k: int) -> Trajectory:
    """The K-checkpoint trajectory the recorder would have kept from the same run (theta_0 + K steps).

    `traj` must hold a checkpoint after every optimizer step; segment learning rates are re-averaged.
    """
    total = traj.steps[-1]
    if traj.steps != list(range(total + 1)):
        raise ValueError("sub_trajectory needs a trajectory with a checkpoint after every step")
    keep = checkpoint_schedule(total, k)
    lrs, prev = [0.0], 0
    for s in keep:
        lrs.append(float(np.mean(traj.lrs[prev + 1 : s + 1])))
        prev = s
    return Trajectory(traj.param_names, [traj.checkpoints[0]] + [traj.checkpoints[s] for s in keep], [0] + keep,
                      lrs, dict(traj.meta))


def trajectory_disk_bytes(traj: Trajectory) -> dict:
    """Save with Trajectory.save into a temporary folder and measure the files."""
    with tempfile.TemporaryDirectory(prefix="disal-traj-") as tmp:
        folder = traj.save(Path(tmp) / "traj")
        total = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    k = traj.num_checkpoints
    return {"K": k, "stored_checkpoints": k + 1, "bytes": total, "bytes_per_checkpoint": total / (k + 1),
            "bytes_per_K": total / k, "params": sum(t.numel() for t in traj.checkpoints[0].values())}


def head_cost(adapter, texts: Sequence[str], lab_texts: Sequence[str], lab_y: np.ndarray, ks: Sequence[int],
              batch: int = 20, seed: int = 0) -> dict:
    """params=head: one shared encode, then plain (head logits) vs DISAL (closed form + select) per K."""
    from ..scoring import head_scoring_inputs
    from ..strategies.influence import DISAL, probabilities
    from ..training.head import HeadConfig, head_logits

    say(f"[head] encoding the pool of {len(texts)} texts once (frozen encoder)")
    t0 = time.perf_counter()
    feats = adapter.encode(texts, progress=progress_printer("head encode", every=15))
    encode_s = time.perf_counter() - t0
    lab = adapter.encode(lab_texts)
    rows, trajs = [], {}
    for k in ks:
        traj = adapter.fit_head_on_features(lab, lab_y, HeadConfig(num_checkpoints=k), seed=seed)
        trajs[k] = traj
        head = adapter.model.classifier
        t1 = time.perf_counter()
        probabilities(head_logits(head, feats).astype(np.float64), adapter.multi_label)
        plain_extra = time.perf_counter() - t1
        strategy = DISAL()
        t2 = time.perf_counter()
        inputs = head_scoring_inputs(np.arange(len(texts)), feats, head, traj, strategy=strategy,
                                     multi_label=adapter.multi_label)
        strategy.select(inputs, batch, seed)
        disal_extra = time.perf_counter() - t2
        plain, disal = encode_s + plain_extra, encode_s + disal_extra
        rows.append({"params": "head", "K": k, "pool": len(texts), "plain_s": plain, "disal_s": disal,
                     "ratio": disal / plain, "plain_items_per_s": len(texts) / plain,
                     "disal_items_per_s": len(texts) / disal, "encode_s": encode_s,
                     "plain_extra_s": plain_extra, "disal_extra_s": disal_extra,
                     "trajectory_checkpoints": traj.num_checkpoints})
        say(f"[head] K={k}: plain {plain:.2f}s, DISAL {disal:.2f}s (closed form + select {disal_extra * 1e3:.1f} ms, "
            f"head {plain_extra * 1e3:.1f} ms), ratio {disal / plain:.4f}")
    rows += mlp_cost(feats, encode_s, lab, lab_y, ks, adapter.multi_label, batch, seed)
    return {"rows": rows, "trajectory": trajectory_disk_bytes(trajs[max(ks)])}


def mlp_cost(feats: np.ndarray, encode_s: float, lab: np.ndarray, lab_y: np.ndarray, ks: Sequence[int],
             multi_label: bool, batch: int = 20, seed: int = 0, repeats: int = 3) -> list[dict]:
    """params=mlp (TRAIN_MODE=mlp): on the same encoded pool, plain (the MLP's logits) vs DISAL (one jvp
    per checkpoint over every MLP parameter + select). `passes` = DISAL's extra time over one plain MLP
    pass: the trained part's cost in forward-pass equivalents (the issue's target: at most 2K + 1).
    Each side is timed `repeats` times back to back and the minimum kept (the machine is shared)."""
    from ..scoring import mlp_scoring_inputs
    from ..strategies.influence import DISAL, probabilities
    from ..training.head import HeadConfig, head_logits
    from ..training.mlp import MLP_LR, train_mlp

    rows = []
    n_classes = int(np.max(lab_y)) + 1
    for k in ks:
        model, traj = train_mlp(lab, lab_y, n_classes, multi_label, HeadConfig(num_checkpoints=k, lr=MLP_LR),
                                seed=seed)
        plain_extra = disal_extra = float("inf")
        for _ in range(repeats):
            t1 = time.perf_counter()
            probabilities(head_logits(model, feats).astype(np.float64), multi_label)
            plain_extra = min(plain_extra, time.perf_counter() - t1)
            strategy = DISAL()
            t2 = time.perf_counter()
            inputs = mlp_scoring_inputs(np.arange(len(feats)), feats, model, traj, strategy=strategy,
                                        multi_label=multi_label)
            strategy.select(inputs, batch, seed)
            disal_extra = min(disal_extra, time.perf_counter() - t2)
        plain, disal = encode_s + plain_extra, encode_s + disal_extra
        rows.append({"params": "mlp", "K": k, "pool": len(feats), "plain_s": plain, "disal_s": disal,
                     "ratio": disal / plain, "plain_items_per_s": len(feats) / plain,
                     "disal_items_per_s": len(feats) / disal, "encode_s": encode_s, "plain_extra_s": plain_extra,
                     "disal_extra_s": disal_extra, "passes": disal_extra / plain_extra, "target_passes": 2 * k + 1,
                     "trajectory_checkpoints": traj.num_checkpoints})
        say(f"[mlp] K={k}: plain {plain:.2f}s, DISAL {disal:.2f}s (jvp + select {disal_extra * 1e3:.1f} ms = "
            f"{disal_extra / plain_extra:.1f} MLP passes, target {2 * k + 1}), ratio {disal / plain:.4f}")
    return rows


def finetune_trajectory(adapter, lab_texts, lab_y, params: str, steps: int, seed: int = 0) -> Trajectory:
    """A real short fine-tune of `params` with a checkpoint after every one of `steps` optimizer steps."""
    spe = max(1, -(-len(lab_texts) // adapter.batch_size))
    total = spe * -(-steps // spe)  # finetune runs whole epochs: at least `steps` steps
    say(f"[{params}] fine-tuning on {len(lab_texts)} labeled texts for {total} steps")
    t0 = time.perf_counter()
    traj = adapter.finetune(lab_texts, lab_y, params=params, epochs=1, num_checkpoints=total, min_steps=total,
                            seed=seed, progress=progress_printer(f"{params} fine-tune (steps)", every=30))
    say(f"[{params}] fine-tuned in {time.perf_counter() - t0:.1f}s: {traj.num_checkpoints} checkpoints, "
        f"{traj.nbytes / 1e6:.1f} MB in memory")
    return traj


def jvp_cost(adapter, texts: Sequence[str], traj: Trajectory, ks: Sequence[int], params: str,
             batch: int = 20, seed: int = 0) -> dict:
    """params=all / last-N: plain inference (adapter.logits) then DISAL (jvp_scoring_inputs + select), per K."""
    from ..scoring import jvp_scoring_inputs
    from ..strategies.influence import DISAL

    rows = []
    for k in ks:
        sub = sub_trajectory(traj, k)
        adapter.load_checkpoint(sub, -1)
        t0 = time.perf_counter()
        adapter.logits(texts)
        plain = time.perf_counter() - t0
        strategy = DISAL()
        t1 = time.perf_counter()
        inputs = jvp_scoring_inputs(adapter, np.arange(len(texts)), texts, sub, strategy=strategy)
        strategy.select(inputs, batch, seed)
        disal = time.perf_counter() - t1
        rows.append({"params": params, "K": sub.num_checkpoints, "pool": len(texts), "plain_s": plain,
                     "disal_s": disal, "ratio": disal / plain, "plain_items_per_s": len(texts) / plain,
                     "disal_items_per_s": len(texts) / disal, "disal_s_per_item": disal / len(texts)})
        say(f"[{params}] K={sub.num_checkpoints} on {len(texts)} texts: plain {plain:.1f}s "
            f"({len(texts) / plain:.1f}/s), DISAL {disal:.1f}s ({len(texts) / disal:.2f}/s), ratio {disal / plain:.2f}")
    return {"rows": rows}


def run(pool: int = 10000, all_pool: int = 500, ks: Sequence[int] = (1, 3, 5, 10),
        jvp_params: Sequence[str] = ("all",), linearity_pool: int | None = None, model: str | None = None,
        labeled: int = 40, max_length: int = 128, seed: int = 0, texts: Sequence[str] | None = None,
        labeled_data: tuple | None = None) -> dict:
    """The whole benchmark as a dict (see module docstring). `texts`/`labeled_data` override the datasets."""
    import torch

    from ..training.adapter import HFTextAdapter

    ks = sorted({int(k) for k in ks})
    if texts is None:
        texts, pool_info = pool_texts(max(pool, all_pool), seed)
    else:
        texts, pool_info = list(texts), {"sources": "given", "distinct": len(set(texts)), "cycled": False}
    lab_texts, lab_y, C = labeled_data if labeled_data is not None else labeled_set(labeled)
    say(f"pool: {pool} texts for head, {all_pool} for {', '.join(jvp_params)} ({pool_info}); K in {ks}; "
        f"torch threads {torch.get_num_threads()}")
    ad = HFTextAdapter(model, num_labels=C, max_length=max_length, seed=seed)
    initial = {n: t.detach().clone() for n, t in ad.model.state_dict().items()}
    out = {"meta": {"model": ad.model_id, "max_length": max_length, "batch_size": ad.batch_size, "ks": ks,
                    "labeled": len(lab_texts), "num_labels": C, "pool": pool_info, "python": sys.version.split()[0],
                    "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "started": time.strftime("%Y-%m-%d %H:%M:%S")},
           "rows": [], "trajectory_bytes": {}}
    t0 = time.perf_counter()
    if pool > 0:
        res = head_cost(ad, texts[:pool], lab_texts, lab_y, ks, seed=seed)
        out["rows"] += res["rows"]
        out["trajectory_bytes"]["head"] = res["trajectory"]
    else:  # the head's trajectory size does not depend on the pool: fit one on the labeled set only
        from ..training.head import HeadConfig

        traj = ad.fit_head_on_features(ad.encode(lab_texts), lab_y, HeadConfig(num_checkpoints=max(ks)), seed=seed)
        out["trajectory_bytes"]["head"] = trajectory_disk_bytes(traj)
    for params in jvp_params:
        ad.model.load_state_dict(initial)
        traj = finetune_trajectory(ad, lab_texts, lab_y, params, max(ks), seed)
        out["trajectory_bytes"][params] = trajectory_disk_bytes(sub_trajectory(traj, max(ks)))
        if all_pool > 0:
            out["rows"] += jvp_cost(ad, texts[:all_pool], traj, ks, params, seed=seed)["rows"]
            if linearity_pool:
                small = jvp_cost(ad, texts[:linearity_pool], traj, ks[:1], params, seed=seed)["rows"][0]
                big = next(r for r in out["rows"] if r["params"] == params and r["K"] == ks[0])
                out.setdefault("linearity", []).append({
                    "params": params, "K": ks[0], "pools": [linearity_pool, all_pool],
                    "disal_s_per_item": [small["disal_s_per_item"], big["disal_s_per_item"]],
                    "ratio": [small["ratio"], big["ratio"]]})
    out["meta"]["total_s"] = time.perf_counter() - t0
    return out


def table(result: dict) -> str:
    lines = ["| params | K | pool | plain s | DISAL s | ratio | DISAL items/s |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['params']} | {r['K']} | {r['pool']} | {r['plain_s']:.2f} | {r['disal_s']:.2f} | "
                     f"{r['ratio']:.3f} | {r['disal_items_per_s']:.2f} |")
    for p, t in result["trajectory_bytes"].items():
        lines.append(f"trajectory {p}: {t['bytes']} bytes on disk for K={t['K']} "
                     f"({t['bytes_per_checkpoint']:.0f} bytes per stored checkpoint, {t['bytes_per_K']:.0f} per K)")
    for lin in result.get("linearity", []):
        lines.append(f"linearity {lin['params']} K={lin['K']}: DISAL s/item {lin['disal_s_per_item'][0]:.3f} at "
                     f"{lin['pools'][0]} texts, {lin['disal_s_per_item'][1]:.3f} at {lin['pools'][1]}")
    return "\n".join(lines)


QUICK = {"pool": 300, "all_pool": 16, "ks": (1, 5), "linearity_pool": 8, "labeled": 16}  # K=5: perf.json reports the default K


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/scoring_cost.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", type=int, default=10000, help="texts scored with params=head")
    p.add_argument("--all-pool", type=int, default=500, help="texts scored with the JVP params sets")
    p.add_argument("--linearity-pool", type=int, default=None,
                   help="also time the smallest K on this many texts to check the per-item cost is linear")
    p.add_argument("--ks", default="1,3,5,10")
    p.add_argument("--params", default="all", help="JVP parameter sets, comma-separated: all, last-N")
    p.add_argument("--labeled", type=int, default=40, help="labeled R8 texts for the head fit and the fine-tune")
    p.add_argument("--model", default=None, help="encoder (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--quick", action="store_true", help=f"small preset for `make bench` ({QUICK})")
    p.add_argument("--out", default="bench/out/scoring_cost.json")
    a = p.parse_args(argv)
    kw = dict(pool=a.pool, all_pool=a.all_pool, ks=[int(k) for k in a.ks.split(",")],
              linearity_pool=a.linearity_pool, labeled=a.labeled)
    if a.quick:
        kw.update(QUICK)
    result = run(jvp_params=[s for s in a.params.split(",") if s], model=a.model, max_length=a.max_length, **kw)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    say(table(result))
    say(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
