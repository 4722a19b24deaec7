"""Reliability suite: hostile inputs, the key-exfiltration case, credentials, slow clients, log scans."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fake_labelstudio import LABELS, FakeLabelStudio, choices_config, make_backend, topic_texts  # noqa: E402


@pytest.fixture
def fake() -> FakeLabelStudio:
    ls = FakeLabelStudio(choices_config(LABELS))
    ls.add_tasks([t for t, _ in topic_texts(24)])
    return ls


@pytest.fixture
def backend_with(tmp_path, fake):
    """make(ls=None, **settings) -> (client, model) on the MockTransport fake, closed after the test."""
    made = []

    def make(ls: FakeLabelStudio | None = None, **settings):
        client, model, _ = make_backend(tmp_path / f"b{len(made)}", ls or fake, **settings)
        made.append(model)
        return client, model

    yield make
    for model in made:
        model.close()
