"""The `top-N` regime: fine-tune the encoder's last N blocks + the head from cached boundary states.

Why: fine-tuning makes training non-convex (so DISAL's trajectory has something to trace), but a
full fine-tune of MiniLM on two CPU cores is ~100x the head regime. The embeddings and blocks
0..L-N-1 never move here, so their output is cached once per task (hidden_cache.py) and every
round (training, evaluation, the K JVPs of DISAL) runs only through blocks L-N..L-1 + pooling + head.

`TopBlocks` is a view over an HFTextAdapter's model: it holds the adapter's own block and head
modules (shared parameters, no copies), nested so that its parameter names are the adapter's
(`encoder.encoder.layer.4.*`, `classifier.head.*`), i.e. exactly `adapter.param_names("last-N")`.
A trajectory recorded here therefore loads into the adapter (`adapter.load_checkpoint`) and into
the next round (`init`: warm start), and the generic forward-mode path (jvp.logit_tangents_jvp)
scores it unchanged.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..trajectory import DEFAULT_MAX_BYTES, Trajectory, TrajectoryRecorder
from .head import loss_fn
from .hidden_cache import HiddenStateCache, encoder_blocks

log = logging.getLogger(__name__)


def parse_top_mode(mode: str) -> int | None:
    """N for a `top-N` train mode (N >= 1), None for any other mode."""
    m = re.fullmatch(r"top-(\d+)", mode or "")
    if not m:
        return None
    n = int(m.group(1))
    if n < 1:
        raise ValueError(f"{mode}: N must be >= 1 (top-1, top-2, ...)")
    return n


class TopBlocks(nn.Module):
    """Blocks L-N..L-1 + mean pooling + head of `adapter.model`, fed the cached states entering block L-N."""

    def __init__(self, adapter, top_blocks: int) -> None:
        super().__init__()
        prefix, blocks = encoder_blocks(adapter.model)
        if not 1 <= top_blocks <= len(blocks):
            raise ValueError(f"top_blocks={top_blocks}, but the encoder has {len(blocks)} blocks")
        if getattr(adapter.model.encoder.config, "is_decoder", False):
            raise ValueError("top-N caches a bidirectional encoder's states; this encoder is a decoder")
        self.config = adapter.model.encoder.config
        self.top_blocks = top_blocks
        self.first = len(blocks) - top_blocks
        # nest plain containers along the prefix so parameter names equal the adapter's
        *path, last = prefix.split(".")
        node: nn.Module = self
        for part in path:
            child = nn.Module()
            node.add_module(part, child)
            node = child
        node.add_module(last, nn.ModuleDict({str(i): blocks[i] for i in range(self.first, len(blocks))}))
        self._prefix = prefix  # looked up by path, never registered twice: functional_call must see one name each
        self.classifier = adapter.model.classifier

    def _mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor):
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)

    def features(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mask-weighted mean pooling of the last block's output (the adapter's penultimate features)."""
        h = hidden_states
        mask4 = self._mask(h, attention_mask)
        for block in self.get_submodule(self._prefix).values():
            out = block(h, mask4)
            h = out[0] if isinstance(out, tuple) else out
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, with_features: bool = False):
        h = self.features(hidden_states, attention_mask)
        z = self.classifier(h)
        return (z, h) if with_features else z

    def state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the trained parameters (the warm start of the next round)."""
        return {n: p.detach().to("cpu").clone() for n, p in self.named_parameters()}

    @torch.no_grad()
    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Copy `state` (names as named_parameters) in; every trained parameter must be present."""
        params = dict(self.named_parameters())
        missing = set(params) - set(state)
        if missing:
            raise KeyError(f"state lacks {len(missing)} trained parameters, e.g. {sorted(missing)[0]}")
        for n, p in params.items():
            p.copy_(state[n].to(p.device, p.dtype))


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


@dataclass
class TopConfig:
    """The fine-tune's settings; defaults follow HFTextAdapter.finetune so the two regimes train alike."""

    epochs: int = 3
    min_steps: int = 40
    lr: float = 5e-5
    head_lr: float = 5e-3
    weight_decay: float = 0.01
    batch_size: int = 32
    num_checkpoints: int = 5
    max_trajectory_bytes: int = DEFAULT_MAX_BYTES
    # theta_0's head without a warm start: "probe" fits a linear head on the pretrained blocks' pooled
    # features first (linear probing, then fine-tuning: LP-FT, Kumar et al. 2022), so the round starts
    # at the head regime's model and the trajectory traces what fine-tuning adds; "random": a seeded
    # fresh head (with 40 steps it stayed far below the linear head: docs/method.md)
    head_init: str = "probe"


def probe_head(top: TopBlocks, cache: HiddenStateCache, ids: Sequence, targets: np.ndarray, multi_label: bool,
               seed: int) -> None:
    """Set the head to a linear head fitted (disal.training.head.train_head: convex, well under a
    second) on the top blocks' current pooled features of the labeled items."""
    from .head import HeadConfig, train_head

    feats = top_outputs(top, cache, list(ids))[1]
    fitted, _ = train_head(feats, np.asarray(targets), int(top.classifier.head.out_features), multi_label,
                           HeadConfig(num_checkpoints=1), seed=seed)
    with torch.no_grad():
        for name in ("weight", "bias"):
            getattr(top.classifier.head, name).copy_(getattr(fitted.head, name).to(_device(top), _dtype(top)))


def train_top(top: TopBlocks, cache: HiddenStateCache, ids: Sequence, targets: np.ndarray, multi_label: bool = False,
              config: TopConfig = TopConfig(), seed: int = 0, init: dict[str, torch.Tensor] | None = None) -> Trajectory:
    """AdamW + linear decay on the top blocks and head from cached states; the trajectory of exactly those.

    theta_0 is `init` (warm start: e.g. the previous round's `trajectory.last()`) or the parameters as
    they are. Dropout is on while training (as in a full fine-tune), off afterwards.
    """
    if len(ids) == 0:
        raise ValueError("no labeled items to train on")
    if config.head_init not in ("probe", "random"):
        raise ValueError(f"head_init must be probe or random, got {config.head_init!r}")
    if init is not None:
        top.load(init)
    elif config.head_init == "probe":
        probe_head(top, cache, ids, targets, multi_label, seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    dev, dt = _device(top), _dtype(top)
    params = dict(top.named_parameters())
    y = torch.as_tensor(np.asarray(targets)).to(dev)
    spe = max(1, -(-len(ids) // config.batch_size))
    epochs = max(config.epochs, -(-config.min_steps // spe))
    total = spe * epochs
    groups = [{"params": [p for n, p in params.items() if not n.startswith("classifier.")], "lr": config.lr},
              {"params": [p for n, p in params.items() if n.startswith("classifier.")], "lr": config.head_lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total))
    recorder = TrajectoryRecorder(params, total, config.num_checkpoints, config.max_trajectory_bytes)
    ids = list(ids)
    step, t0 = 0, time.perf_counter()
    with torch.enable_grad():
        for p in params.values():
            p.requires_grad_(True)
        top.train()
        for _ in range(epochs):
            perm = torch.randperm(len(ids), generator=gen)
            for s in range(0, len(ids), config.batch_size):
                idx = perm[s : s + config.batch_size]
                batch = cache.batch([ids[i] for i in idx], dev, dt)
                opt.zero_grad()
                loss = loss_fn(top(**batch), y[idx.to(dev)], multi_label)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                recorder.on_step(step, opt.param_groups[0]["lr"])
        top.eval()
    log.info("top-%d: %d steps on %d items in %.1fs", top.top_blocks, total, len(ids), time.perf_counter() - t0)
    return recorder.finish({"kind": f"top-{top.top_blocks}", "n_train": len(ids), "multi_label": multi_label,
                            "num_labels": int(top.classifier.head.out_features)})


@torch.no_grad()
def top_outputs(top: TopBlocks, cache: HiddenStateCache, ids: Sequence, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) and pooled features (N, d) in eval mode, in the order of `ids`."""
    top.eval()
    c, d = int(top.classifier.head.out_features), int(top.config.hidden_size)
    z, h = np.zeros((len(ids), c), dtype=np.float32), np.zeros((len(ids), d), dtype=np.float32)
    for idx, batch in cache.batches(ids, batch_size, _device(top), _dtype(top)):
        zi, hi = top(**batch, with_features=True)
        z[idx], h[idx] = zi.float().cpu().numpy(), hi.float().cpu().numpy()
    return z, h


def top_trajectory_arrays(top: TopBlocks, cache: HiddenStateCache, ids: Sequence, traj: Trajectory,
                          directions: Sequence[str], batch_size: int = 32, last_only: bool = False,
                          progress: Callable[[int, int], None] | None = None):
    """Logits (K+1, N, C), tangents {direction: (K+1, N, C)}, norms and the last checkpoint's features (N, d).

    One torch.func.jvp per checkpoint and direction per batch, through the top blocks only (the
    generic path of jvp.py; its in-batch frozen-prefix shortcut is moot here: nothing below runs).
    `last_only`: the last checkpoint alone (arrays of length 1), for a strategy that reads nothing
    else; K+1 times fewer passes. `progress(done, n)` after each batch, and a log line with the rate
    every 10 s (10k tasks take minutes on a CPU). The module's parameters are left as they were.
    """
    from .jvp import direction_norms, logit_tangents_jvp

    k1, n = (1 if last_only else len(traj.checkpoints)), len(ids)
    c, d = int(top.classifier.head.out_features), int(top.config.hidden_size)
    all_norms = direction_norms(traj, directions)  # once per pool: every batch reuses them
    norms = {dr: v[-k1:] for dr, v in all_norms.items()}
    logits = np.zeros((k1, n, c))
    tangents = {dr: np.zeros((k1, n, c)) for dr in directions}
    feats = np.zeros((n, d), dtype=np.float32)
    done, t0 = 0, time.perf_counter()
    last_log = t0
    for idx, batch in cache.batches(ids, batch_size, _device(top), _dtype(top)):
        z, t, _, h = logit_tangents_jvp(top, traj, batch, directions, norms=all_norms, return_features=True,
                                        cache_frozen=False, checkpoints=[-1] if last_only else None)
        logits[:, idx] = z
        for dr in directions:
            tangents[dr][:, idx] = t[dr]
        feats[idx] = h
        done += len(idx)
        if progress:
            progress(done, n)
        if time.perf_counter() - last_log > 10:
            last_log = time.perf_counter()
            log.info("top-%d jvp: %d/%d tasks (%.0f tasks/s)", top.top_blocks, done, n, done / (last_log - t0))
    return logits, tangents, norms, feats


def top_scoring_inputs(top: TopBlocks, cache: HiddenStateCache, ids: Sequence, traj: Trajectory,
                       labeled_ids: Sequence | None = None, strategy=None, multi_label: bool = False,
                       mc_samples: int = 20, seed: int = 0, batch_size: int = 32,
                       progress: Callable[[int, int], None] | None = None):
    """ScoringInputs for the top-N regime: what the strategy needs, from the cached states.

    DISAL's arrays come from the JVP pass (its logits and features too, no extra forward); other
    strategies get one plain forward. MC dropout (BALD) runs the head's dropout on those features,
    as the finetune regime does.
    """
    from ..scoring import EVERYTHING, _directions_for, _head_fn
    from ..strategies import ScoringInputs, needs, reads_only_last_checkpoint
    from ..strategies.influence import probabilities
    from .head import head_mc_probs

    want = needs(strategy) if strategy is not None else EVERYTHING
    inputs = ScoringInputs(ids=np.asarray(ids), multi_label=multi_label)
    if "trajectory" in want:
        directions = _directions_for(strategy) or ("accumulated",)
        last_only = reads_only_last_checkpoint(strategy)
        logits, tangents, norms, feats = top_trajectory_arrays(top, cache, ids, traj, directions, batch_size,
                                                               last_only=last_only, progress=progress)
        inputs.traj_logits, inputs.traj_tangents, inputs.traj_dir_norms = logits, tangents, norms
        inputs.traj_lrs = np.asarray(traj.lrs)[-len(logits):]
        inputs.probs, inputs.features = probabilities(logits[-1], multi_label), feats
    else:
        z, feats = top_outputs(top, cache, ids, batch_size)
        inputs.probs, inputs.features = probabilities(z.astype(np.float64), multi_label), feats
    if "labeled_features" in want and labeled_ids is not None and len(labeled_ids):
        inputs.labeled_features = top_outputs(top, cache, labeled_ids, batch_size)[1]
    if "mc_probs" in want:
        inputs.mc_probs = head_mc_probs(top.classifier, inputs.features, mc_samples, seed, multi_label)
    if "head_fn" in want:
        inputs.head_fn, inputs.head_inputs = _head_fn(top.classifier), inputs.features
    return inputs
