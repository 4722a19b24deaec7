"""Markdown table of an ablation: nAULC (mean ± std over seeds) per strategy, one column per dataset.

Usage: .venv/bin/python bench/ablation_table.py bench/out/ablation-bbc bench/out/ablation-r8
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from disal.bench.report import paired_vs, summarize  # noqa: E402


def load(folder: Path) -> tuple[list[dict], dict]:
    rows = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines() if x.strip()]
    meta = json.loads((folder / "meta.json").read_text())
    return rows, meta


def main(folders: list[str]) -> None:
    tables, names = {}, []
    for f in folders:
        rows, meta = load(Path(f))
        t = summarize(rows, meta.get("full_data_accuracy"))
        tables[meta["dataset"]] = {e["strategy"]: e for e in t}
        tables[meta["dataset"]]["__table__"] = t
        for e in t:
            if e["strategy"] not in names:
                names.append(e["strategy"])
    ds = list(tables)
    print("| strategy | " + " | ".join(f"{d} nAULC" for d in ds) + " | " + " | ".join(f"{d} vs random (p)" for d in ds) + " |")
    print("|---|" + "---|" * (2 * len(ds)))
    for n in names:
        cells, diffs = [], []
        for d in ds:
            e = tables[d].get(n)
            cells.append(f"{e['aulc_mean']:.4f} ± {e['aulc_std']:.4f}" if e else "")
            res = paired_vs(tables[d]["__table__"], n, "random") if e and n != "random" else None
            diffs.append(f"{res[0]:+.4f} ({res[1]:.3f})" if res else "")
        print(f"| {n} | " + " | ".join(cells) + " | " + " | ".join(diffs) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
