"""Fixtures for the route tests: a MockTransport Label Studio with topic texts and a backend on it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_labelstudio import LABELS, FakeLabelStudio, choices_config, make_backend, topic_texts  # noqa: E402


@pytest.fixture
def fake(request) -> FakeLabelStudio:
    """A project with LABELS and N_TASKS unlabeled topic texts (a module may set N_TASKS; default 30)."""
    ls = FakeLabelStudio(choices_config(LABELS))
    ls.add_tasks([t for t, _ in topic_texts(getattr(request.module, "N_TASKS", 30))])
    return ls


@pytest.fixture
def backend(tmp_path, fake):
    client, model, _ = make_backend(tmp_path, fake)
    yield client, model
    model.close()
