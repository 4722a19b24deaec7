"""The text encoder's features under ONNX Runtime (ENCODER_RUNTIME, disal.training.onnx_features):
exact against torch for the tiny BERT and the packaged MiniLM, the exported graph reused, and every
way the runtime is chosen said in /health (never a silent switch)."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

from disal.config import ConfigError, Settings
from disal.tasks.text_classification import TextEncoder
from disal.training.adapter import HFTextAdapter
from disal.training.onnx_features import OnnxTextFeatures, graph_path

TEXTS = ["the striker scored twice in the final", "shares fell after the quarterly report",
         "a new phone with a faster chip", "x", "markets " * 60, "ministers met to discuss the budget vote"]


@pytest.mark.parametrize("which", ["tiny", "minilm"])
def test_onnx_features_equal_torch_features(tmp_path, tiny_model_dir, which):
    adapter = HFTextAdapter(str(tiny_model_dir) if which == "tiny" else None, max_length=64)
    onnx = OnnxTextFeatures(adapter, tmp_path, threads=1)
    want = adapter.encode(TEXTS)
    got = onnx.encode(TEXTS)
    assert got.shape == want.shape == (len(TEXTS), adapter.dim)
    assert np.abs(got - want).max() < 1e-5  # the same fp32 graph: the feature cache stays valid across runtimes


def test_the_exported_graph_is_reused_and_a_changed_model_gets_its_own(tmp_path, tiny_model_dir, caplog):
    import torch

    adapter = HFTextAdapter(str(tiny_model_dir))
    with caplog.at_level(logging.INFO, "disal.training_job"):
        first = OnnxTextFeatures(adapter, tmp_path, threads=1)
        second = OnnxTextFeatures(adapter, tmp_path, threads=1)
    assert first.path == second.path and len(list(tmp_path.glob("*.onnx"))) == 1
    assert "exported to" in caplog.text and "loaded " + first.path.name in caplog.text
    with torch.no_grad():
        next(adapter.model.encoder.parameters()).add_(1.0)
    assert graph_path(tmp_path, adapter.model_id, adapter.model) != first.path


def encoder(tmp_path, tiny_model_dir, runtime: str) -> TextEncoder:
    return TextEncoder(Settings(model_dir=tmp_path, model_name=str(tiny_model_dir), encoder_runtime=runtime))


def test_auto_runs_onnx_and_the_features_match_torchs(tmp_path, tiny_model_dir):
    auto = encoder(tmp_path / "a", tiny_model_dir, "auto")
    torch_only = encoder(tmp_path / "t", tiny_model_dir, "torch")
    a = auto.features([1, 2, 3], TEXTS[:3])
    t = torch_only.features([1, 2, 3], TEXTS[:3])
    assert auto.runtime == "onnxruntime" and torch_only.runtime == "torch (ENCODER_RUNTIME=torch)"
    assert np.abs(a - t).max() < 1e-5


def test_onnx_dir_holds_the_graph_and_a_second_backend_reuses_it(tmp_path, tiny_model_dir):
    """ONNX_DIR: backends with different MODEL_DIRs share one exported graph (the tests' session does)."""
    shared = tmp_path / "graphs"
    settings = Settings.from_env({"MODEL_DIR": str(tmp_path / "one"), "ONNX_DIR": str(shared),
                                  "MODEL_NAME": str(tiny_model_dir)})
    assert settings.onnx_dir == shared and Settings.from_env({}).onnx_dir is None
    first = TextEncoder(settings)
    first.features([1], TEXTS[:1])
    graphs = list(shared.glob("*.onnx"))
    assert first.runtime == "onnxruntime" and len(graphs) == 1 and not (tmp_path / "one" / "onnx").exists()
    mtime = graphs[0].stat().st_mtime_ns
    second = TextEncoder(Settings(model_dir=tmp_path / "two", model_name=str(tiny_model_dir), onnx_dir=shared))
    second.features([1], TEXTS[:1])
    assert list(shared.glob("*.onnx")) == graphs and graphs[0].stat().st_mtime_ns == mtime  # loaded, not re-exported


def test_without_onnxruntime_auto_says_why_it_runs_torch_and_onnx_refuses(tmp_path, tiny_model_dir, monkeypatch,
                                                                          caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    auto = encoder(tmp_path / "a", tiny_model_dir, "auto")
    with caplog.at_level(logging.WARNING, "disal.training_job"):
        feats = auto.features([1], TEXTS[:1])
    assert feats.shape == (1, auto.dim)
    assert auto.runtime.startswith("torch (ONNX Runtime could not run it: ModuleNotFoundError")
    assert "features computed by torch (ENCODER_RUNTIME=auto)" in caplog.text
    strict = encoder(tmp_path / "s", tiny_model_dir, "onnx")
    for _ in range(2):  # every use says so, none half-loads
        with pytest.raises(RuntimeError, match="ENCODER_RUNTIME=onnx, but the encoder .* could not run in ONNX "
                                               "Runtime"):
            strict.features([1], TEXTS[:1])


def test_an_injected_encoder_keeps_its_own_encode_and_a_bad_value_is_refused(tmp_path):
    class Fake:
        model_id, dim = "fake", 3

        def encode(self, texts):
            return np.ones((len(texts), 3), dtype=np.float32)

    enc = TextEncoder(Settings(model_dir=tmp_path), adapter_factory=Fake)
    assert enc.features([1], ["a"]).sum() == 3 and enc.runtime == "torch (an injected encoder)"
    with pytest.raises(ConfigError, match="ENCODER_RUNTIME='gpu'"):
        Settings.from_env({"ENCODER_RUNTIME": "gpu"})


def test_health_says_what_computes_the_features(backend):
    client, model = backend
    model.encoder.load()
    runtime = client.get("/health").get_json()["encoder_runtime"]
    assert runtime == {"text_classification": model.encoder.runtime} and model.encoder.runtime
