"""Pool-based active-learning simulation: train, evaluate, score, select, repeat.

Same initial set, model, batch size and rounds for every strategy under a seed; the test split is
never used for selection. Three training modes:
- `head` (default): frozen encoder, features cached once, a fresh linear head per round. DISAL's
  trajectory is the head's, scored in closed form. Fast enough for many seeds on a 2-core CPU.
- `mlp`: the same cached features, a one-hidden-layer head (training/mlp.py): non-convex training,
  the trajectory of all its parameters, DISAL by torch.func.jvp. About as cheap as `head`.
- `top-N` (e.g. `top-2`): the encoder's last N blocks + head fine-tuned from hidden states cached once
  per task below them (top_simulation.py); training and DISAL's jvp run through the top N blocks only.
- `finetune`: the encoder's `params` set (all / last-N / head) is fine-tuned from the pretrained
  weights every round; DISAL scores with torch.func.jvp. Faithful, and ~100x slower on a CPU.
Image datasets (digits, mnist) use a frozen EfficientNet-Lite0 (training/image_encoder.py), head or mlp mode.
`warm_start` starts each round at the previous round's model (head and mlp); `device` (auto: CUDA when
present) is where the heads train and score.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..data import TextDataset
from ..scoring import head_scoring_inputs, jvp_scoring_inputs, mlp_scoring_inputs
from ..strategies import DISAL, ScoringInputs, make_strategy, needs, select_with_candidates
from ..strategies.influence import probabilities
from ..training.head import HeadConfig, head_logits, head_mc_probs, resolve_device, train_head
from ..training.mlp import MLP_HIDDEN, MLP_LR, train_mlp
from .features import cached_encode
from .metrics import accuracy, macro_f1
from .peers import make_bench_strategy


@dataclass
class SimulationConfig:
    strategies: list[str]
    seeds: int = 3
    first_seed: int = 0  # seeds first_seed .. first_seed+seeds-1: fresh seeds confirm a choice made on others
    initial: int = 20
    batch: int = 20
    rounds: int = 8
    train_mode: str = "head"
    params: str = "head"
    head: HeadConfig = field(default_factory=HeadConfig)
    disal_options: dict = field(default_factory=dict)
    max_candidates: int | None = None
    finetune_epochs: int = 3
    finetune_lr: float = 5e-5
    finetune_min_steps: int = 40
    mc_samples: int = 20
    warm_start: bool = False
    mlp_hidden: int = MLP_HIDDEN
    mlp_lr: float = MLP_LR
    device: str = "auto"
    hidden_cache_dtype: str = "float16"  # top-N: storage of the cached boundary states
    hidden_cache_max_mb: float = 4096.0  # top-N: memory bound of that cache
    hidden_cache_max_disk_mb: float = 16384.0  # top-N: disk bound (<cache-dir>/hidden)


def initial_set(n: int, k: int, labels: np.ndarray, seed: int) -> np.ndarray:
    """Seeded random initial set, the same for every strategy; at least two classes when possible."""
    rng = np.random.default_rng(10_000 + seed)
    for _ in range(100):
        idx = rng.choice(n, size=min(k, n), replace=False)
        if len(np.unique(labels[idx])) >= min(2, len(np.unique(labels))):
            return idx
    return idx


def round_row(strategy: str, seed: int, rnd: int, n_labeled: int, y_true: np.ndarray, y_pred: np.ndarray,
              num_classes: int, train_seconds: float) -> dict:
    """One results.jsonl row; score_seconds is filled in once the round's selection has run."""
    return {"strategy": strategy, "seed": seed, "round": rnd, "n_labeled": n_labeled,
            "accuracy": accuracy(y_true, y_pred), "macro_f1": macro_f1(y_true, y_pred, num_classes),
            "train_seconds": train_seconds, "score_seconds": 0.0}


TRAIN_MODES = ("head", "mlp", "finetune")  # and top-N (N >= 1): see valid_train_mode


def valid_train_mode(mode: str) -> bool:
    from ..training.top import parse_top_mode

    try:
        return mode in TRAIN_MODES or parse_top_mode(mode) is not None
    except ValueError:
        return False


class HeadSimulation:
    """Frozen-encoder simulation over precomputed features: a linear head (`head`) or an MLP head (`mlp`)."""

    def __init__(self, train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray,
                 test_labels: np.ndarray, num_classes: int, cfg: SimulationConfig) -> None:
        self.Xtr, self.ytr, self.Xte, self.yte = train_feats, train_labels, test_feats, test_labels
        self.C = num_classes
        self.cfg = cfg
        self.mode = cfg.train_mode if cfg.train_mode in ("head", "mlp") else "head"
        self.device = resolve_device(cfg.device)

    def train(self, X: np.ndarray, y: np.ndarray, config: HeadConfig, seed: int, init=None):
        """(model, trajectory) of the regime; `init` (the previous round's state dict) warm-starts it."""
        if self.mode == "mlp":  # the head's settings, except its learning rate (MLP_LR: 0.05 is too high)
            config = HeadConfig(**{**config.__dict__, "lr": self.cfg.mlp_lr})
            return train_mlp(X, y, self.C, config=config, seed=seed, init=init, hidden=self.cfg.mlp_hidden,
                             device=self.device)
        return train_head(X, y, self.C, config=config, seed=seed, init=init, device=self.device)

    def full_data_accuracy(self, seed: int = 0) -> float:
        cfg = HeadConfig(**{**self.cfg.head.__dict__, "steps": max(self.cfg.head.steps, 600)})
        head, _ = self.train(self.Xtr, self.ytr, cfg, seed)
        return accuracy(self.yte, head_logits(head, self.Xte).argmax(1))

    def run(self, strategy_spec: str, seed: int) -> Iterator[dict]:
        cfg = self.cfg
        strategy = make_bench_strategy(strategy_spec, **cfg.disal_options)
        n = len(self.Xtr)
        labeled = list(initial_set(n, cfg.initial, self.ytr, seed))
        head = None
        for rnd in range(cfg.rounds + 1):
            round_seed = seed * 1000 + rnd
            t0 = time.perf_counter()
            init = head.state_dict() if (cfg.warm_start and head is not None) else None
            head, traj = self.train(self.Xtr[labeled], self.ytr[labeled], cfg.head, round_seed, init=init)
            train_s = time.perf_counter() - t0
            pred = head_logits(head, self.Xte).argmax(1)
            row = round_row(strategy.name, seed, rnd, len(labeled), self.yte, pred, self.C, train_s)
            if rnd < cfg.rounds:
                pool = np.setdiff1d(np.arange(n), labeled)
                t1 = time.perf_counter()
                make_inputs = mlp_scoring_inputs if self.mode == "mlp" else head_scoring_inputs
                inputs = make_inputs(pool, self.Xtr[pool], head, traj, labeled_features=self.Xtr[labeled],
                                     strategy=strategy, mc_samples=cfg.mc_samples, seed=round_seed)
                cands = cfg.max_candidates or getattr(strategy, "default_max_candidates", None)
                sel = select_with_candidates(strategy, inputs, cfg.batch, round_seed, cands)
                row["score_seconds"] = time.perf_counter() - t1
                labeled.extend(int(i) for i in sel.selected)
            yield row


class FinetuneSimulation:
    """Fine-tunes the encoder's `params` set from the pretrained weights every round."""

    def __init__(self, adapter, ds: TextDataset, cfg: SimulationConfig) -> None:
        self.adapter, self.ds, self.cfg = adapter, ds, cfg
        self.C = len(ds.classes)
        self.initial_state = {k: v.clone() for k, v in adapter.model.state_dict().items()}

    def run(self, strategy_spec: str, seed: int) -> Iterator[dict]:
        cfg, ad, ds = self.cfg, self.adapter, self.ds
        strategy = make_strategy(strategy_spec, **cfg.disal_options)
        n = len(ds.train_texts)
        labeled = list(initial_set(n, cfg.initial, ds.train_labels, seed))
        for rnd in range(cfg.rounds + 1):
            round_seed = seed * 1000 + rnd
            ad.model.load_state_dict(self.initial_state)
            torch.manual_seed(round_seed)
            ad.model.classifier.head.reset_parameters()
            t0 = time.perf_counter()
            traj = ad.finetune([ds.train_texts[i] for i in labeled], ds.train_labels[labeled], params=cfg.params,
                               epochs=cfg.finetune_epochs, lr=cfg.finetune_lr,
                               num_checkpoints=cfg.head.num_checkpoints, seed=round_seed,
                               min_steps=cfg.finetune_min_steps)
            train_s = time.perf_counter() - t0
            pred = ad.logits(ds.test_texts).argmax(1)
            row = round_row(strategy.name, seed, rnd, len(labeled), ds.test_labels, pred, self.C, train_s)
            if rnd < cfg.rounds:
                pool = np.setdiff1d(np.arange(n), labeled)
                t1 = time.perf_counter()
                if cfg.max_candidates and cfg.max_candidates < len(pool):
                    rng = np.random.default_rng(round_seed)
                    pool = np.sort(rng.choice(pool, cfg.max_candidates, replace=False))
                texts = [ds.train_texts[i] for i in pool]
                lab_feats = ad.encode([ds.train_texts[i] for i in labeled]) if "labeled_features" in needs(strategy) else None
                if isinstance(strategy, DISAL):
                    inputs = jvp_scoring_inputs(ad, pool, texts, traj, lab_feats, strategy)
                else:
                    feats = ad.encode(texts)
                    probs = probabilities(head_logits(ad.model.classifier, feats).astype(np.float64), False)
                    inputs = ScoringInputs(pool, probs=probs, features=feats, labeled_features=lab_feats)
                    if "mc_probs" in needs(strategy):
                        inputs.mc_probs = head_mc_probs(ad.model.classifier, feats, cfg.mc_samples, round_seed)
                sel = strategy.select(inputs, cfg.batch, round_seed)
                row["score_seconds"] = time.perf_counter() - t1
                labeled.extend(int(i) for i in sel.selected)
            yield row


def make_encoder(ds, cfg: SimulationConfig, model: str | None, max_length: int = 128, image_size: int | None = None):
    """The frozen encoder for the dataset's modality: HFTextAdapter for texts, EfficientNet-Lite0 for images."""
    if getattr(ds, "modality", "text") == "image":
        from ..training.image_encoder import DEFAULT_IMAGE_SIZE, IMAGE_SIZE_BY_DATASET, EfficientNetLiteEncoder

        if cfg.train_mode not in ("head", "mlp"):
            raise ValueError(f"image datasets ({ds.name}) run on a frozen EfficientNet-Lite0 (head or mlp mode); "
                             f"--train-mode {cfg.train_mode} is for text models")
        if model:
            raise ValueError(f"--model applies to text datasets; {ds.name} uses the packaged EfficientNet-Lite0")
        return EfficientNetLiteEncoder(image_size or IMAGE_SIZE_BY_DATASET.get(ds.name, DEFAULT_IMAGE_SIZE),
                                       device=cfg.device)
    from ..training.adapter import HFTextAdapter

    return HFTextAdapter(model, num_labels=len(ds.classes), max_length=max_length, device=cfg.device)


def completed_runs(path: Path, rounds: int) -> list[dict]:
    """The rows of every (strategy, seed) run in `path` that has all its rounds (resume after a stop)."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["strategy"], r["seed"]), []).append(r)
    return [r for g in groups.values() if len({r["round"] for r in g}) == rounds + 1 for r in g]


def simulate(ds, cfg: SimulationConfig, model: str | None, out: Path, max_length: int = 128,
             cache_dir: Path | None = None, image_size: int | None = None, resume: bool = False,
             adapter=None) -> list[dict]:
    """Run every (strategy, seed) on a TextDataset or ImageDataset; write results.jsonl, summary.md and curves.png.

    `adapter`: an encoder built by the caller (e.g. a quantized one, bench/encoder_quantization.py) instead
    of the one `model` names; its `model_id` keys the feature cache."""
    from .report import write_report

    if not valid_train_mode(cfg.train_mode):
        raise ValueError(f"train mode must be one of {', '.join(TRAIN_MODES)} or top-N, got {cfg.train_mode!r}")
    adapter = adapter if adapter is not None else make_encoder(ds, cfg, model, max_length, image_size)
    is_image = getattr(ds, "modality", "text") == "image"
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    if cfg.train_mode in ("head", "mlp"):
        train_items, test_items = (ds.train_images, ds.test_images) if is_image else (ds.train_texts, ds.test_texts)
        Xtr = cached_encode(adapter, train_items, cache_dir, "train")
        Xte = cached_encode(adapter, test_items, cache_dir, "test")
        # Tiny matrices from here on: one thread is faster and immune to oversubscription on a shared CPU.
        torch.set_num_threads(1)
        sim = HeadSimulation(Xtr, ds.train_labels, Xte, ds.test_labels, len(ds.classes), cfg)
        full_acc = sim.full_data_accuracy()
        kind = "MLP" if cfg.train_mode == "mlp" else "linear"
        print(f"full-data accuracy ({len(Xtr)} labels, frozen encoder + {kind} head): {full_acc:.4f}", flush=True)
    elif cfg.train_mode.startswith("top-"):
        from .top_simulation import TopSimulation

        sim = TopSimulation(adapter, ds, cfg, cache_dir)
        full_acc = None
    else:
        sim = FinetuneSimulation(adapter, ds, cfg)
        full_acc = None
    names = {spec: make_bench_strategy(spec, **cfg.disal_options).name for spec in cfg.strategies}
    # resume keeps every complete run in the folder, also of strategies this call does not list: a rerun with
    # a shorter --strategies adds to the results instead of silently dropping finished work
    rows = completed_runs(out / "results.jsonl", cfg.rounds) if resume else []
    done = {(r["strategy"], r["seed"]) for r in rows}
    if rows:
        print(f"resuming: {len(done)} (strategy, seed) runs already complete in {out / 'results.jsonl'}", flush=True)
        others = sorted({s for s, _ in done} - set(names.values()))
        if others:
            print(f"resuming: also keeping the complete runs of {', '.join(others)} (not in this run's strategies)",
                  flush=True)
    with open(out / "results.jsonl", "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
        for spec in cfg.strategies:
            for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
                if (names[spec], seed) in done:
                    continue
                for row in sim.run(spec, seed):
                    row.update(dataset=ds.name, train_mode=cfg.train_mode, params=cfg.params)
                    rows.append(row)
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
                    print(f"[{row['strategy']} seed={seed} round={row['round']}] labeled={row['n_labeled']} "
                          f"acc={row['accuracy']:.4f} f1={row['macro_f1']:.4f} train={row['train_seconds']:.2f}s "
                          f"score={row['score_seconds']:.2f}s", flush=True)
    meta = {"dataset": ds.name, "modality": "image" if is_image else "text", "n_train": len(ds.train_labels),
            "n_test": len(ds.test_labels), "model": adapter.model_id,
            "image_size": adapter.image_size if is_image else None, "full_data_accuracy": full_acc, "wall_seconds": time.time() - t_start,
            "config": {k: (v.__dict__ if isinstance(v, HeadConfig) else v) for k, v in cfg.__dict__.items()}}
    meta.update(getattr(sim, "meta", {}))
    (out / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    write_report(rows, out, meta)
    return rows
