"""Frozen-encoder features, computed once per (model, max_length, texts) or (model, image size, images)
and cached on disk."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("DISAL_CACHE_DIR", Path.home() / ".cache" / "disal"))


def texts_key(model_id: str, max_length: int, texts: Sequence[str]) -> str:
    h = hashlib.sha1(f"{model_id}|{max_length}|{len(texts)}".encode())
    for t in texts:
        h.update(t.encode("utf-8", "replace"))
        h.update(b"\0")
    return h.hexdigest()[:20]


def images_key(model_id: str, image_size: int, images: np.ndarray) -> str:
    """A content hash of an image array (its bytes, shape and dtype) for one encoder and input resolution."""
    arr = np.ascontiguousarray(images)
    h = hashlib.sha1(f"images|{model_id}|{image_size}|{arr.shape}|{arr.dtype.str}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()[:20]


def features_key(adapter, items) -> str:
    """The cache key: image arrays by content hash + resolution, texts as before (old cache files stay valid)."""
    if isinstance(items, np.ndarray):
        return images_key(adapter.model_id, adapter.image_size, items)
    return texts_key(adapter.model_id, adapter.max_length, items)


def progress_printer(label: str, unit: str = "texts", every: float = 10.0) -> Callable[[int, int], None]:
    """A progress(done, total) callback that prints a count and a rate at most every `every` seconds."""
    t0 = time.perf_counter()
    last = [t0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > every or done == total:
            last[0] = now
            print(f"  {label}: {done}/{total} ({done / max(now - t0, 1e-9):.1f} {unit}/s)", flush=True)

    return progress


def cached_encode(adapter, texts: Sequence[str] | np.ndarray, cache_dir: Path | None, label: str = "texts") -> np.ndarray:
    """adapter.encode(texts), read from / written to `cache_dir` when given; `texts` may be an image array."""
    path = None
    unit = "images" if isinstance(texts, np.ndarray) else "texts"
    if cache_dir is not None:
        path = Path(cache_dir) / "features" / f"{features_key(adapter, texts)}.npy"
        if path.exists():
            return np.load(path)
    feats = adapter.encode(texts, progress=progress_printer(f"encoding {label}", unit))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, feats)
        os.replace(tmp, path)
    return feats
