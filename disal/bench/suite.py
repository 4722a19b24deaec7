"""python -m disal.bench.suite: the selection-quality benchmark over every dataset, strategy and peer.

Runs the simulator (frozen encoder + linear head, cached features) once per dataset with one
strategy list, then writes the report (tables, learning curves, paired tests) with
`disal.bench.suite_report`. Three presets:

- quick (`make bench`): 4 datasets, DISAL beside random, the strongest baselines and two peers,
  3 seeds, shorter budgets. Minutes on a 2-core CPU once features are cached.
- full (`make bench-full`): every DISAL ablation, every baseline of METHOD.md and every peer that
  runs here, 5 seeds on text and 3 on images, budgets long enough for most strategies to reach 95%
  of full-data accuracy.
- v2 (protocol v2, issue "DISAL that earns its place"): DISAL and DISAL-batch against the leaders
  (margin, BADGE, PowerBALD) and scikit-activeml's DropQuery, FALCUN, TypiClust and ProbCover, 10
  seeds, on BBC, R8 and R52; `--train-mode mlp` for the non-convex regime and `--batch 5` for the
  annotator regime (the same label budget in 4x the rounds). Paired t-tests with Holm's correction.
  Its report is about the backend's default STRATEGY (`--subject` names another); `--first-seed 10`
  reruns it on seeds no choice was made on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import DEFAULT_STRATEGY
from ..data import load_dataset
from .features import default_cache_dir
from .simulator import SimulationConfig, simulate

DATASETS = ("bbc", "r8", "digits", "mnist")

#: DISAL's ablations (defaults in docs/method.md: sign=descent, direction=accumulated,
#: dynamic=mean-prediction, lam=0.3); each changes one option.
DISAL_ABLATIONS = (
    "disal",
    "static_influence",
    "disal:direction=segment",
    "disal:direction=remaining",
    "disal:dynamic=none:lam=0",
    "disal:dynamic=previous",
    "disal:sign=ascent",
)
BASELINES = ("random", "least_confidence", "margin", "entropy", "bald", "coreset", "badge")
PEERS = ("smalltext:breaking_ties", "smalltext:prediction_entropy", "smalltext:least_confidence",
         "smalltext:greedy_coreset", "smalltext:badge", "smalltext:egl", "smalltext:bald",
         "baal:bald", "baal:batchbald", "baal:powerbald")


@dataclass(frozen=True)
class Preset:
    strategies: tuple[str, ...]
    seeds: int
    text_rounds: int
    image_rounds: int
    image_seeds: int | None = None  # None: `seeds`
    initial: int = 20
    batch: int = 20
    datasets: tuple[str, ...] = ("bbc", "r8", "digits", "mnist")


PRESETS = {
    "quick": Preset(("disal", "static_influence", "random", "margin", "badge", "smalltext:breaking_ties",
                     "baal:bald"), seeds=3, text_rounds=8, image_rounds=12),
    # images: 3 seeds, because their 1,280-d head rounds cost ~3x the text ones on 2 cores
    "full": Preset(DISAL_ABLATIONS + BASELINES + PEERS, seeds=5, text_rounds=10, image_rounds=15, image_seeds=3),
    "v2": Preset((DEFAULT_STRATEGY, "disal", "disal-batch", "static_influence", "random", "margin", "badge",
                  "baal:powerbald", "skactiveml:dropquery", "skactiveml:falcun", "skactiveml:typiclust",
                  "skactiveml:probcover"),
                 seeds=10, text_rounds=8, image_rounds=12, image_seeds=5, datasets=("bbc", "r8", "r52")),
}


#: baal's BatchBALD cost grows steeply with the number of classes (joint configurations): 8 s a
#: round on BBC's 5 classes with a 200-candidate subset, 129 s on digits' 10 (2-core CPU). It runs
#: where the classes are at most this many, and the report says where it was left out.
BATCHBALD_MAX_CLASSES = 5


def strategies_for(preset: Preset, num_classes: int) -> list[str]:
    return [s for s in preset.strategies if not (s == "baal:batchbald" and num_classes > BATCHBALD_MAX_CLASSES)]


def run_dataset(name: str, preset: Preset, out: Path, cache_dir: Path | None, max_candidates: int | None,
                resume: bool = False, train_mode: str = "head", warm_start: bool = False, first_seed: int = 0) -> Path:
    """Simulate every strategy of the preset on one dataset; returns its output folder."""
    ds = load_dataset(name).subsample(3000, 1000, seed=0)
    image = getattr(ds, "modality", "text") == "image"
    seeds = preset.image_seeds if image and preset.image_seeds else preset.seeds
    rounds = preset.image_rounds if image else preset.text_rounds
    cfg = SimulationConfig(strategies=strategies_for(preset, len(ds.classes)), seeds=seeds, initial=preset.initial,
                           batch=preset.batch, rounds=rounds * 20 // preset.batch if preset.batch < 20 else rounds,
                           max_candidates=max_candidates, train_mode=train_mode, warm_start=warm_start,
                           first_seed=first_seed)
    n_train = len(ds.train_images) if image else len(ds.train_texts)
    print(f"== {name}: {n_train} train items, {len(cfg.strategies)} strategies x {cfg.seeds} seeds x "
          f"{cfg.rounds} rounds", flush=True)
    simulate(ds, cfg, None, out / name, cache_dir=cache_dir, resume=resume)
    return out / name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m disal.bench.suite", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--datasets", default=None, help="comma-separated (default: the preset's)")
    ap.add_argument("--seeds", type=int, default=None, help="override the preset's seeds")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="run seeds N .. N+seeds-1 (default 0): fresh seeds confirm a choice tuned on the first ones")
    ap.add_argument("--batch", type=int, default=None,
                    help="labels per round (default 20); smaller batches keep the label budget (more rounds)")
    ap.add_argument("--train-mode", choices=("head", "mlp"), default="head", help="the regime trained each round")
    ap.add_argument("--warm-start", action="store_true", help="each round starts at the previous round's model")
    ap.add_argument("--strategies", default=None, help="comma-separated (default: the preset's)")
    ap.add_argument("--out", type=Path, default=None, help="default bench/out/quality-<preset>")
    ap.add_argument("--report", type=Path, default=None,
                    help="markdown report to write (default <out>/benchmarks.md; make bench-full: docs/benchmarks.md)")
    ap.add_argument("--figures", type=Path, default=None, help="folder for the PNGs (default: beside the report)")
    ap.add_argument("--perf", type=Path, default=Path("bench/out/perf.json"),
                    help="cost results merged into the report when present")
    ap.add_argument("--max-candidates", type=int, default=None, help="score a seeded subset of each pool")
    ap.add_argument("--subject", default=None,
                    help="the strategy the report is about (default: disal; --preset v2: the backend's default "
                         "STRATEGY, added to the strategies if missing)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from existing results")
    ap.add_argument("--resume", action="store_true", help="keep the complete (strategy, seed) runs already in <out>")
    args = ap.parse_args(argv)
    from dataclasses import replace

    preset = PRESETS[args.preset]
    if args.seeds:
        preset = replace(preset, seeds=args.seeds, image_seeds=min(args.seeds, preset.image_seeds or args.seeds))
    if args.batch:
        preset = replace(preset, batch=args.batch)
    if args.strategies:
        preset = replace(preset, strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()))
    subject = args.subject or (DEFAULT_STRATEGY if args.preset == "v2" else "disal")
    if subject not in preset.strategies:
        preset = replace(preset, strategies=(subject,) + tuple(preset.strategies))
    tag = (f"{args.preset}-{args.train_mode}" + (f"-b{preset.batch}" if preset.batch != 20 else "")
           + ("-warm" if args.warm_start else ""))
    out = args.out or Path(f"bench/out/quality-{tag if args.preset == 'v2' else args.preset}")
    report = args.report or out / "benchmarks.md"
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else list(preset.datasets)
    t0 = time.time()
    if not args.report_only:
        for name in datasets:
            run_dataset(name, preset, out, default_cache_dir(), args.max_candidates, resume=args.resume,
                        train_mode=args.train_mode, warm_start=args.warm_start, first_seed=args.first_seed)
    (out / "suite.json").write_text(json.dumps({"preset": args.preset, "datasets": datasets,
                                                "strategies": list(preset.strategies), "seeds": preset.seeds,
                                                "first_seed": args.first_seed,
                                                "batch": preset.batch, "train_mode": args.train_mode,
                                                "warm_start": args.warm_start,
                                                "wall_seconds": time.time() - t0}, indent=1))
    from .suite_report import write_benchmarks

    write_benchmarks([out / d for d in datasets], report, args.figures or report.parent, args.perf,
                     command=f"python -m disal.bench.suite --preset {args.preset}"
                             + (f" --report {args.report} --figures {args.figures}" if args.report else ""),
                     subject=subject)
    print(f"wrote {report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
