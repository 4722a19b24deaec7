"""Hidden states at the block boundary of the `top-N` regime, computed once per task and cached.

Why: when only the encoder's last N blocks (+ the head) are trained, the embeddings and blocks
0..L-N-1 never change, so their output for a task is the same in every round and at every
checkpoint. Caching it once per task means training and DISAL's JVP run only through the top N
blocks. The cached value is the very tensor the frozen blocks would recompute, so the shortcut is
exact up to the storage dtype (tests/unit/test_top_regime.py).

What is stored, per task: the hidden states entering block L-N for the task's tokens alone (no
padding), shape (length, d), and so implicitly its attention mask (all ones over `length`: batches
are rebuilt right-padded with a zero mask beyond it; padded positions never reach a real token's
output or the mean pooling). Storage is fp16 by default: half the bytes of fp32, and the top blocks
start with a LayerNorm'd residual stream whose values sit far inside fp16's range; the logits move
by ~1e-3 against a full fp32 pass (the test states the tolerance). `dtype=torch.float32` is exact to
~1e-6.

Key: sha256 of (model id, N, max length, task id, sha256 of the text), so a task whose text
changed, another model, another N or another max length is a miss, never a stale hit.

Bounds, checked before any encoding starts (like the trajectory's, disal/trajectory.py): the bytes
the cache would hold in memory after a fill (`max_bytes`), and on disk (`max_disk_bytes`, when a
folder is given). Both are computed from the token counts, which the tokenizer gives cheaply.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 4 * 1024**3
DEFAULT_MAX_DISK_BYTES = 16 * 1024**3
#: batches are padded to a multiple of this many tokens. Why: every distinct (batch, tokens) shape makes the
#: top blocks' activations and tangents a new size, and glibc's heap then fragments (its mmap threshold rises
#: after the first large free). Measured on 2,000 R8 texts (top-2, one jvp per task): RSS grew by 670 MB while
#: scoring with exact-length padding and by 54 MB with multiples of 32, at the same speed (54 s, 58 s);
#: at 10k tasks the backend's worker had reached 11 GB.
PAD_MULTIPLE = 32
Progress = Callable[[int, int], None]


class HiddenCacheTooLargeError(ValueError):
    """The cache would exceed its memory or disk bound: raise the named setting, shorten texts or use fewer tasks."""


def encoder_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(prefix, blocks): the ModuleList of numbered transformer blocks (`<prefix>.N.` parameter names)."""
    prefixes = {m.group(1) for n, _ in model.named_parameters() if (m := re.match(r"(.*\.layer)\.\d+\.", n))}
    if len(prefixes) != 1:
        raise ValueError(f"expected one stack of numbered blocks (.layer.N.), found {sorted(prefixes) or 'none'}")
    prefix = prefixes.pop()
    blocks = model.get_submodule(prefix)
    if not isinstance(blocks, nn.ModuleList):
        raise ValueError(f"{prefix} is a {type(blocks).__name__}, not a ModuleList of blocks")
    return prefix, blocks


class _Stop(Exception):
    pass


@torch.no_grad()
def boundary_states(model: nn.Module, blocks: nn.ModuleList, m: int, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The hidden states entering blocks[m] for `batch`: embeddings + blocks[:m] run, the rest never does."""
    seen: dict = {}

    def grab(module, args, kwargs):
        seen["h"] = args[0] if args else kwargs["hidden_states"]
        raise _Stop

    handle = blocks[m].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(**batch)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "h" not in seen:
        raise RuntimeError(f"block {m} was never called: cannot cache the states entering it")
    return seen["h"].detach()


def cache_key(model_id: str, top_blocks: int, max_length: int, task_id, text: str) -> str:
    text_hash = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
    return hashlib.sha256(f"{model_id}|top-{top_blocks}|{max_length}|{task_id}|{text_hash}".encode()).hexdigest()[:32]


class HiddenStateCache:
    """Per-task hidden states at the boundary below the top N blocks, in memory and optionally on disk.

    Use: `cache.fill(adapter, ids, texts)` once (only misses are encoded), then `cache.batch(ids)` /
    `cache.batches(ids)` give right-padded (hidden, mask) tensors for any subset, in any order.
    """

    def __init__(self, top_blocks: int, folder: str | Path | None = None, dtype: torch.dtype = torch.float16,
                 max_bytes: int = DEFAULT_MAX_BYTES, max_disk_bytes: int = DEFAULT_MAX_DISK_BYTES) -> None:
        if top_blocks < 1:
            raise ValueError("top_blocks must be >= 1")
        if dtype not in (torch.float16, torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be float16, bfloat16 or float32, got {dtype}")
        self.top_blocks = top_blocks
        self.folder = Path(folder) if folder else None
        self.dtype = dtype
        self.max_bytes = int(max_bytes)
        self.max_disk_bytes = int(max_disk_bytes)
        self._entries: dict[str, torch.Tensor] = {}
        self._index: dict = {}  # task id -> key of its current text
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)

    # -- sizes -----------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes held in memory (the stored tensors)."""
        return sum(t.numel() * t.element_size() for t in self._entries.values())

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.folder.glob("*.npy")) if self.folder else 0

    def __len__(self) -> int:
        return len(self._index)

    def bytes_per_task(self) -> float:
        """Mean stored bytes per cached task (in memory; on disk add the 128-byte .npy header)."""
        return self.nbytes / max(len(self._entries), 1)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.npy"

    # -- filling ---------------------------------------------------------------------------------
    def fill(self, adapter, ids: Sequence, texts: Sequence[str], progress: Progress | None = None,
             batch_size: int | None = None, log_summary: bool = True) -> int:
        """Encode (or load from disk) every task not cached yet; returns how many were encoded.

        Raises HiddenCacheTooLargeError before encoding anything when the result would break a bound.
        """
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
        prefix, blocks = encoder_blocks(adapter.model)
        if self.top_blocks > len(blocks):
            raise ValueError(f"top_blocks={self.top_blocks} but the encoder has {len(blocks)} blocks")
        m = len(blocks) - self.top_blocks
        keys = [cache_key(adapter.model_id, self.top_blocks, adapter.max_length, i, t) for i, t in zip(ids, texts)]
        missing = [j for j, k in enumerate(keys) if k not in self._entries]
        on_disk = [j for j in missing if self.folder and self._path(keys[j]).exists()]
        to_encode = sorted(set(missing) - set(on_disk))
        encode_set = set(to_encode)
        self._check_bounds(adapter, [texts[j] for j in missing], [j in encode_set for j in missing])
        for s in range(0, len(on_disk), 256):
            part = on_disk[s: s + 256]
            self._store([keys[j] for j in part],
                        [torch.from_numpy(np.load(self._path(keys[j]))).to(self.dtype) for j in part])
        t0 = time.perf_counter()
        sub = [texts[j] for j in to_encode]
        done = 0
        for idx, batch in adapter.batches(sub, batch_size):
            h = boundary_states(adapter.model, blocks, m, batch).to("cpu", self.dtype)
            lengths = batch["attention_mask"].sum(1).tolist()
            batch_keys = [keys[to_encode[i]] for i in idx]
            self._store(batch_keys, [h[row, : int(lengths[row])] for row in range(len(idx))])
            if self.folder:
                for key in batch_keys:
                    self._write(key, self._entries[key])
            done += len(idx)
            if progress:
                progress(done, len(sub))
        for i, k in zip(ids, keys):
            old = self._index.get(i)
            if old is not None and old != k:
                self._entries.pop(old, None)  # the task's text changed: drop the stale states
            self._index[i] = k
        if to_encode and log_summary:
            log.info("hidden cache: encoded %d tasks below block %d in %.1fs (%.1f MB held)", len(to_encode), m,
                     time.perf_counter() - t0, self.nbytes / 1e6)
        return len(to_encode)

    def _store(self, keys: Sequence[str], states: Sequence[torch.Tensor]) -> None:
        """Keep `states` as views into one contiguous block per call.

        Why: one allocation per batch instead of one small tensor (~98 kB) per task, which would sit
        among the encoder's freed temporaries in the heap (see PAD_MULTIPLE for what fragmentation
        cost). An entry dropped later (its text changed) frees its rows together with the block's
        other entries.
        """
        block = torch.cat([t.reshape(-1, t.shape[-1]) for t in states])
        offset = 0
        for key, t in zip(keys, states):
            self._entries[key] = block[offset: offset + t.shape[0]]
            offset += t.shape[0]

    def _check_bounds(self, adapter, new_texts: Sequence[str], encoded: Sequence[bool]) -> None:
        """Memory: everything held after the fill; disk: the files written now on top of the folder's."""
        if not new_texts:
            return
        d = int(adapter.model.encoder.config.hidden_size)
        item = torch.empty((), dtype=self.dtype).element_size()
        tokens = [len(x) for x in adapter.tokenizer(list(new_texts), truncation=True, max_length=adapter.max_length,
                                                     add_special_tokens=True)["input_ids"]]
        need = self.nbytes + sum(tokens) * d * item
        if need > self.max_bytes:
            raise HiddenCacheTooLargeError(
                f"the hidden-state cache would hold {need / 1e6:.0f} MB in memory ({len(self._entries) + len(new_texts)} "
                f"tasks x ~{sum(tokens) / len(tokens):.0f} tokens x {d} x {item} B), over its bound max_bytes = "
                f"{self.max_bytes / 1e6:.0f} MB (--hidden-cache-max-mb): raise it, lower --max-length or use fewer tasks")
        n_enc = sum(bool(e) for e in encoded)
        if self.folder and n_enc:
            enc_tokens = sum(t for t, e in zip(tokens, encoded) if e)
            disk = self.disk_bytes() + enc_tokens * d * item + 128 * n_enc
            if disk > self.max_disk_bytes:
                raise HiddenCacheTooLargeError(
                    f"the hidden-state cache would take {disk / 1e6:.0f} MB on disk in {self.folder}, over its bound "
                    f"max_disk_bytes = {self.max_disk_bytes / 1e6:.0f} MB (--hidden-cache-max-disk-mb): raise it, "
                    "clear the folder or cache in memory only")

    def _write(self, key: str, t: torch.Tensor) -> None:
        """Atomic: a crash mid-write leaves no truncated file that a later fill would trust."""
        path = self._path(key)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, t.to(torch.float32 if t.dtype == torch.bfloat16 else t.dtype).numpy())
        os.replace(tmp, path)

    # -- reading ---------------------------------------------------------------------------------
    def get(self, task_id) -> torch.Tensor:
        try:
            return self._entries[self._index[task_id]]
        except KeyError:
            raise KeyError(f"task {task_id!r} is not in the hidden-state cache: fill it first") from None

    def lengths(self, ids: Sequence) -> np.ndarray:
        return np.fromiter((self.get(i).shape[0] for i in ids), dtype=np.int64, count=len(ids))

    def batch(self, ids: Sequence, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """{"hidden_states": (B, T, d), "attention_mask": (B, T)} right-padded to the longest of `ids`."""
        rows = [self.get(i) for i in ids]
        width = max(r.shape[0] for r in rows)
        width = -(-width // PAD_MULTIPLE) * PAD_MULTIPLE  # few distinct shapes: see PAD_MULTIPLE
        d = rows[0].shape[1]
        hidden = torch.zeros((len(rows), width, d), dtype=dtype)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            hidden[j, : r.shape[0]] = r.to(dtype)
            mask[j, : r.shape[0]] = 1
        return {"hidden_states": hidden.to(device), "attention_mask": mask.to(device)}

    def batches(self, ids: Sequence, batch_size: int = 32, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """(positions in `ids`, batch) shortest first, so each batch pads to little waste."""
        order = np.argsort(self.lengths(ids), kind="stable")
        for s in range(0, len(ids), batch_size):
            idx = order[s : s + batch_size]
            yield idx, self.batch([ids[i] for i in idx], device, dtype)
