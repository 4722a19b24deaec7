"""The simulator's `top-N` regime: the encoder's last N blocks + head fine-tuned from cached states.

Every train and test text's hidden states below the top N blocks are cached once
(training/hidden_cache.py; on disk under <cache-dir>/hidden when the simulator has a cache dir), so
each round trains, evaluates and scores (DISAL by JVP) through the top N blocks only. Each round
starts from the pretrained blocks and a seeded fresh head, or, with `warm_start`, from the previous
round's model. The fine-tune uses the finetune mode's settings (--epochs, --min-steps, the encoder
learning rate 5e-5, head 5e-3). The cache's size and fill time go to meta.json (`top_regime`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..strategies import select_with_candidates
from ..training.hidden_cache import HiddenStateCache
from ..training.top import TopBlocks, TopConfig, parse_top_mode, top_outputs, top_scoring_inputs, train_top
from .features import progress_printer

CACHE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class TopSimulation:
    """One cache fill, then rounds of train_top + top_scoring_inputs + select."""

    def __init__(self, adapter, ds, cfg, cache_dir: Path | None = None) -> None:
        self.adapter, self.ds, self.cfg = adapter, ds, cfg
        self.C = len(ds.classes)
        n = parse_top_mode(cfg.train_mode)
        if n is None:
            raise ValueError(f"not a top-N train mode: {cfg.train_mode!r}")
        self.top = TopBlocks(adapter, n)
        self.pretrained = self.top.state()
        folder = Path(cache_dir) / "hidden" if cache_dir else None
        self.cache = HiddenStateCache(
            n, folder, CACHE_DTYPES[getattr(cfg, "hidden_cache_dtype", "float16")],
            max_bytes=int(getattr(cfg, "hidden_cache_max_mb", 4096) * 1e6),
            max_disk_bytes=int(getattr(cfg, "hidden_cache_max_disk_mb", 16384) * 1e6))
        self.train_ids = list(range(len(ds.train_texts)))
        self.test_ids = [f"test:{i}" for i in range(len(ds.test_texts))]
        t0 = time.perf_counter()
        encoded = self.cache.fill(adapter, self.train_ids + self.test_ids, list(ds.train_texts) + list(ds.test_texts),
                                  progress=progress_printer(f"top-{n} cache (texts below block {self.top.first})",
                                                            every=15))
        self.meta = {"top_regime": {
            "top_blocks": n, "first_trained_block": self.top.first, "cache_dtype": str(self.cache.dtype),
            "cache_tasks": len(self.cache), "cache_encoded_now": encoded, "cache_fill_seconds": time.perf_counter() - t0,
            "cache_bytes": self.cache.nbytes, "cache_bytes_per_task": self.cache.bytes_per_task(),
            "cache_disk_bytes": self.cache.disk_bytes(), "cache_folder": str(folder) if folder else None,
            "trained_parameters": int(sum(p.numel() for p in self.top.parameters())),
            "warm_start": bool(cfg.warm_start)}}
        print(f"top-{n}: {len(self.cache)} tasks cached ({encoded} encoded now) in "
              f"{self.meta['top_regime']['cache_fill_seconds']:.1f}s, {self.cache.bytes_per_task() / 1e3:.1f} kB per task "
              f"({self.cache.dtype}); {self.meta['top_regime']['trained_parameters']:,} trained parameters", flush=True)

    def _config(self) -> TopConfig:
        c = self.cfg
        return TopConfig(epochs=c.finetune_epochs, min_steps=c.finetune_min_steps, lr=c.finetune_lr,
                         batch_size=self.adapter.batch_size, num_checkpoints=c.head.num_checkpoints,
                         max_trajectory_bytes=c.head.max_trajectory_bytes)

    def run(self, strategy_spec: str, seed: int) -> Iterator[dict]:
        from .peers import make_bench_strategy
        from .simulator import initial_set, round_row

        cfg, ds, top = self.cfg, self.ds, self.top
        strategy = make_bench_strategy(strategy_spec, **cfg.disal_options)
        n = len(self.train_ids)
        labeled = list(initial_set(n, cfg.initial, ds.train_labels, seed))
        traj = None
        for rnd in range(cfg.rounds + 1):
            round_seed = seed * 1000 + rnd
            t0 = time.perf_counter()
            if cfg.warm_start and traj is not None:
                init = traj.last()
            else:
                top.load(self.pretrained)
                torch.manual_seed(round_seed)
                top.classifier.head.reset_parameters()
                init = None
            traj = train_top(top, self.cache, labeled, ds.train_labels[labeled], config=self._config(),
                             seed=round_seed, init=init)
            train_s = time.perf_counter() - t0
            pred = top_outputs(top, self.cache, self.test_ids)[0].argmax(1)
            row = round_row(strategy.name, seed, rnd, len(labeled), ds.test_labels, pred, self.C, train_s)
            if rnd < cfg.rounds:
                pool = np.setdiff1d(np.arange(n), labeled)
                t1 = time.perf_counter()
                cands = cfg.max_candidates or getattr(strategy, "default_max_candidates", None)
                if cands and cands < len(pool):  # compute arrays for the candidates only: the jvp dominates
                    rng = np.random.default_rng(round_seed)
                    pool = np.sort(rng.choice(pool, cands, replace=False))
                inputs = top_scoring_inputs(top, self.cache, [int(i) for i in pool], traj, labeled_ids=labeled,
                                            strategy=strategy, mc_samples=cfg.mc_samples, seed=round_seed)
                sel = select_with_candidates(strategy, inputs, cfg.batch, round_seed, None)
                row["score_seconds"] = time.perf_counter() - t1
                row["scored"] = int(len(pool))
                labeled.extend(int(i) for i in sel.selected)
            yield row
