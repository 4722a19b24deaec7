"""Image classification: one `<Choices>` (single or multiple) over one `<Image>`.

The input is the task's image reference (an uploaded file, local-files storage, a cloud URI, a
plain URL or a data: URI; disal.media reads each with the right credentials). The encoder is the
packaged, frozen ImageNet EfficientNet-Lite0 (disal.training.image_encoder) at IMAGE_SIZE pixels:
the same regime as text (frozen features, a head trained per round), so every strategy applies
unchanged.

Why images are fetched and decoded in a bounded thread pool: a pool of 1k uploaded images is 1k
HTTP requests, and Pillow decodes with the GIL released; the encoder then runs in batches. Why
features are keyed by task id + `<reference hash>.<content hash>`: a round after the first finds
each task's features by its reference without downloading anything, and a changed file behind a
new reference whose bytes are unchanged is not encoded again.

Bad images cost one task, never the round: a 404, a truncated or non-image file, one over
IMAGE_MAX_BYTES or IMAGE_MAX_PIXELS becomes an `Encoded.failed` entry with its reason, which the
job logs (naming the task) and counts in /health.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from ..config import Settings
from ..labelconfig import LabelSpec, TaskInputError, task_field
from ..media import MediaError, MediaFetcher, describe_ref
from ..state import FeatureCache, text_hash
from .base import Encoded, FeatureEncoder, Progress, TaskModule

log = logging.getLogger("disal.training_job")


class ImageDecodeError(ValueError):
    """Bytes that are not a usable image (the message says why)."""


def decode_image(data: bytes, size: int, max_pixels: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB from an encoded image; ImageDecodeError for anything unusable.

    The pixel count is checked from the header before any pixel is decoded, so a decompression
    bomb costs microseconds. JPEGs are decoded at a reduced scale (`draft`) when much larger than
    `size`. Truncated files raise (Pillow's LOAD_TRUNCATED_IMAGES stays off): a half-grey image
    would be encoded as if it were real.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageDecodeError("the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageDecodeError(f"{w}x{h} = {w * h:,} pixels, over IMAGE_MAX_PIXELS={max_pixels:,}")
            if w < 1 or h < 1:
                raise ImageDecodeError(f"{w}x{h} has no pixels")
            if im.format == "JPEG":
                im.draft("RGB", (size * 2, size * 2))
            rgb = im.convert("RGB")
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
            return np.asarray(rgb, dtype=np.uint8)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(f"not an image Pillow can read ({len(data):,} bytes, starts {data[:8]!r})") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"refused as a decompression bomb: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt data
        raise ImageDecodeError(f"a broken image file: {exc}") from None


def content_hash(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


def cache_key(ref_hash: str, content: str) -> str:
    """The feature cache's key of an image: `<reference hash>.<content hash>`."""
    return f"{ref_hash}.{content}"


def split_cache_key(stored: str | None) -> tuple[str | None, str | None]:
    """(reference hash, content hash) of a stored key; (None, None) for none."""
    if not stored:
        return None, None
    ref, _, content = stored.partition(".")
    return ref, content


class ImageEncoder(FeatureEncoder):
    """Fetch (bounded pool) -> decode (Pillow) -> EfficientNet-Lite0 features, cached by task id."""

    unit = "images"

    def __init__(self, settings: Settings, model_factory: Any = None, metrics: Any = None) -> None:
        self.settings = settings
        self.metrics = metrics  # disal.metrics.Metrics: the fetch/model split of every encode call
        self.image_size = int(settings.image_size)
        self.model_id = f"efficientnet-lite0-{self.image_size}px"
        self.cache = FeatureCache(settings.model_dir, self.model_id)
        self._factory = model_factory
        self._model = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    @property
    def model(self):
        with self._load_lock:
            if self._model is None:
                t0 = time.time()
                if self._factory is not None:
                    self._model = self._factory()
                else:
                    from ..training.image_encoder import EfficientNetLiteEncoder

                    self._model = EfficientNetLiteEncoder(self.image_size, batch_size=self.settings.image_batch_size,
                                                          device=self.settings.device)
                log.info("image encoder %s loaded in %.1fs (dim %d)", self.model_id, time.time() - t0, self._model.dim)
                self.runtime = "torch"  # EfficientNet-Lite0 (ONNX Runtime is measured for the text encoder only)
            return self._model

    @property
    def dim(self) -> int:
        return int(self.model.dim)

    def load(self) -> None:
        _ = self.model

    def _cached(self, task_id: int | None, ref_hash: str) -> np.ndarray | None:
        """The task's cached features if they were stored under this reference (no file is read)."""
        if task_id is None or split_cache_key(self.cache.hash_of(task_id))[0] != ref_hash:
            return None
        return self.cache.get(task_id)

    def lookup(self, task_ids: Sequence[int], inputs: Sequence[Any]) -> tuple[dict[int, np.ndarray], list[int]]:
        found, missing = {}, []
        for pos, (tid, ref) in enumerate(zip(task_ids, inputs)):
            vec = self._cached(tid, text_hash(str(ref)))
            if vec is not None:
                found[int(tid)] = vec
            else:
                missing.append(pos)
        return found, missing

    def _load_one(self, ref: str, task_id: int | None, media: MediaFetcher) -> tuple[str, np.ndarray | None] | str:
        """(content hash, pixels or None when the cache already holds these bytes) or the failure reason."""
        try:
            data = media.fetch(ref, task_id)
        except MediaError as exc:
            return str(exc)
        ch = content_hash(data)
        if task_id is not None and split_cache_key(self.cache.hash_of(task_id))[1] == ch:
            return ch, None
        try:
            return ch, decode_image(data, self.image_size, self.settings.image_max_pixels)
        except ImageDecodeError as exc:
            return f"{exc} ({describe_ref(ref)})"

    def encode(self, task_ids: Sequence[int | None], inputs: Sequence[Any], *, media: Any = None,
               progress: Progress | None = None, save: bool = True, log_summary: bool = True) -> Encoded:
        n = len(inputs)
        refs = [str(r) for r in inputs]
        ref_hashes = [text_hash(r) for r in refs]
        found: dict[int, np.ndarray] = {}
        need: list[int] = []
        for i, (tid, rh) in enumerate(zip(task_ids, ref_hashes)):
            vec = self._cached(tid, rh)
            if vec is not None:
                found[i] = vec
            else:
                need.append(i)
        failed: dict[int, str] = {}
        out = np.zeros((n, self.dim), dtype=np.float32)
        for i, vec in found.items():
            out[i] = vec
        if need:
            if media is None:
                raise ValueError("image inputs need a MediaFetcher (the project's Label Studio) to be read")
            t0 = last_log = time.time()
            bs = max(1, self.settings.image_batch_size)
            chunks = [need[s: s + bs] for s in range(0, len(need), bs)]
            fetched = encoded = reused = 0
            wait_s = model_s = 0.0  # waiting for downloads + decoding, and in the model: the round's split
            with ThreadPoolExecutor(max(1, self.settings.image_fetch_workers), thread_name_prefix="disal-image") as pool:
                def submit(chunk: list[int]) -> list[Future]:
                    return [pool.submit(self._load_one, refs[i], task_ids[i], media) for i in chunk]

                pending = submit(chunks[0])
                for k, chunk in enumerate(chunks):
                    tw = time.perf_counter()
                    results = [f.result() for f in pending]
                    wait_s += time.perf_counter() - tw
                    if k + 1 < len(chunks):  # fetch the next chunk while this one is encoded
                        pending = submit(chunks[k + 1])
                    pixels, rows, keys = [], [], []
                    for i, res in zip(chunk, results):
                        fetched += 1
                        if isinstance(res, str):
                            failed[i] = res
                            continue
                        ch, arr = res
                        key = cache_key(ref_hashes[i], ch)
                        if arr is None:  # same bytes as cached, under a new reference
                            out[i] = self.cache.get(task_ids[i])
                            self.cache.put([task_ids[i]], [key], out[i: i + 1])
                            reused += 1
                            continue
                        pixels.append(arr)
                        rows.append(i)
                        keys.append(key)
                    if pixels:
                        tm = time.perf_counter()
                        with self._run_lock:
                            feats = self.model.encode(np.stack(pixels))
                        model_s += time.perf_counter() - tm
                        out[rows] = feats
                        encoded += len(rows)
                        keyed = [(task_ids[i], key, r) for r, (i, key) in enumerate(zip(rows, keys))
                                 if task_ids[i] is not None]
                        if keyed:
                            self.cache.put([t for t, _, _ in keyed], [h for _, h, _ in keyed],
                                           feats[[r for _, _, r in keyed]])
                    if progress:
                        progress(fetched, len(need))
                    if time.time() - last_log > 10:
                        last_log = time.time()
                        log.info("images: %d/%d fetched and encoded (%.1f images/s), %d skipped", fetched, len(need),
                                 fetched / (last_log - t0), len(failed))
            if self.metrics is not None:
                self.metrics.media_seconds.labels("fetch").inc(wait_s)
                self.metrics.media_seconds.labels("model").inc(model_s)
            if log_summary and len(need) > 1:
                log.info("images: %d read in %.1fs (%.1f images/s): %d encoded, %d unchanged files reused, %d skipped, "
                         "%d cached; %.1fs waiting for downloads and decoding (%d in parallel), %.1fs in the model",
                         len(need), time.time() - t0, len(need) / max(time.time() - t0, 1e-9), encoded, reused,
                         len(failed), len(found), wait_s, self.settings.image_fetch_workers, model_s)
            if save:
                self.cache.save()
        return Encoded(out, failed)


class ImageClassification(TaskModule):
    name = "image_classification"
    object_tag = "Image"
    input_word = "image"
    reads_media = True
    shape = ("one <Choices> (choice=\"single\", \"single-radio\" or \"multiple\") over one <Image> whose value is a "
             "task data field, e.g. <Image name=\"image\" value=\"$image\"/>; images read from /data/upload/, "
             "/data/local-files/?d=, http(s) URLs, s3:// gs:// azure-blob:// (resolved by Label Studio) and data: URIs")

    def read_input(self, task: dict, spec: LabelSpec, settings: Settings) -> str:
        value = task_field(task, spec, self.input_word)
        if not isinstance(value, str):
            raise TaskInputError(task.get("id"), f"field {spec.value_field!r} is {type(value).__name__}, not an "
                                                 "image URL")
        if not value.strip():
            raise TaskInputError(task.get("id"), f"field {spec.value_field!r} is empty")
        return value.strip()

    def make_encoder(self, settings: Settings, image_model_factory: Any = None, metrics: Any = None,
                     **_: Any) -> ImageEncoder:
        return ImageEncoder(settings, image_model_factory, metrics)
