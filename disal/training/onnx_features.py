"""The frozen text encoder's features run by ONNX Runtime instead of torch (ENCODER_RUNTIME).

Why: encoding is the dominant cost of a round on a CPU, and ONNX Runtime runs the same fp32 graph
faster: `bench/encoder_quantization.py --variant onnx` measured 1.19x the texts per second of
torch on 1,000 R8+BBC texts (2 threads), with features equal to torch's within 1e-6 (cosine 1.0),
so selection quality is unchanged (docs/benchmarks.md). int8 variants were faster still but moved
the features enough to lose nAULC on R8, so they are not used.

Only the features (encoder + mean pooling, what the feature cache holds) run here. Training,
JVP scoring and the top-N regimes keep the torch model, which stays loaded beside the session.
The exported graph is kept in MODEL_DIR/onnx/, keyed by the model and the torch version, so a
restart or a second worker process loads it in a second instead of exporting again (~5 s).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

log = logging.getLogger("disal.training_job")


class _Features(torch.nn.Module):
    """What the backend caches per text: the encoder's mean-pooled last hidden state."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.features(input_ids=input_ids, attention_mask=attention_mask)


def graph_path(folder: Path, model_id: str, model: torch.nn.Module) -> Path:
    """Where the exported graph of this model lives: a changed model, weight or torch gets a new file."""
    h = hashlib.sha256(f"{model_id}|{torch.__version__}".encode())
    for name, p in list(model.encoder.named_parameters())[:4]:  # a model changed in place changes these
        h.update(name.encode())
        h.update(p.detach().cpu().float().numpy().tobytes()[:4096])
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(model_id))[-60:]
    return Path(folder) / f"{safe}-{h.hexdigest()[:12]}.onnx"


def export(model: torch.nn.Module, path: Path) -> None:
    """torch.onnx export (TorchScript exporter) with dynamic batch and length, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = torch.ones(2, 16, dtype=torch.long)
    mask = torch.ones(2, 16, dtype=torch.long)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
            torch.onnx.export(_Features(model.eval()).cpu(), (ids, mask), tmp,
                              input_names=["input_ids", "attention_mask"], output_names=["features"],
                              opset_version=17, dynamo=False,
                              dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                            "attention_mask": {0: "batch", 1: "tokens"}, "features": {0: "batch"}})
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


class OnnxTextFeatures:
    """`encode(texts)` as HFTextAdapter.encode, computed by an ONNX Runtime session."""

    def __init__(self, adapter, folder: Path, threads: int, graph: Path | None = None) -> None:
        """`graph`: run this ONNX file instead of the model's own export (a benchmark's int8 variant)."""
        import onnxruntime as ort

        self.adapter = adapter
        self.path = Path(graph) if graph is not None else graph_path(folder, adapter.model_id, adapter.model)
        t0 = time.time()
        exported = not self.path.exists()
        if exported:
            export(adapter.model, self.path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: its optimiser's notices are not the user's business
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        log.info("encoder %s: features run by ONNX Runtime %s (%s %s in %.1fs, %d threads)", adapter.model_id,
                 ort.__version__, "exported to" if exported else "loaded", self.path.name, time.time() - t0,
                 opts.intra_op_num_threads)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.adapter.dim), dtype=np.float32)
        for idx, batch in self.adapter.batches(texts):
            out[idx] = self.session.run(None, {"input_ids": batch["input_ids"].cpu().numpy(),
                                               "attention_mask": batch["attention_mask"].cpu().numpy()})[0]
        return out
