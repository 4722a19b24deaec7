"""What `make demo` prints for each /health state while it waits for the first queue."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from scripts.demo import progress_line  # noqa: E402


@pytest.mark.parametrize("health, line", [
    ({"state": "fetching", "progress": {"done": 500, "total": 10_000}}, "fetching 500/10,000 tasks read"),
    ({"state": "encoding", "progress": {"done": 32, "total": 500}}, "encoding 32/500 texts encoded"),
    ({"state": "training", "progress": {"done": 0, "total": 60}}, "training 0/60 steps"),
    ({"state": "pushing", "progress": {"done": 0, "total": 500}}, "pushing 500 predictions"),
    ({"state": "idle", "progress": {"done": 0, "total": 0}}, "idle"),
    ({"state": "queued"}, "queued"),
])
def test_each_state_reads_as_what_the_backend_does(health, line):
    assert progress_line(health) == line


def test_an_image_project_counts_images():
    assert progress_line({"state": "encoding", "progress": {"done": 64, "total": 300}}, "images") == \
        "encoding 64/300 images encoded"
