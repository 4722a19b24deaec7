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
def backend_with(tmp_path, fake):
    """make(ls=None, **settings) -> (client, model): a backend with other settings (on `ls`, default
    the `fake` project), closed after the test."""
    made = []

    def make(ls: FakeLabelStudio | None = None, **settings):
        client, model, _ = make_backend(tmp_path, ls or fake, **settings)
        made.append(model)
        return client, model

    yield make
    for model in made:
        model.close()


@pytest.fixture
def backend(backend_with):
    return backend_with()
