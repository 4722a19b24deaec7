"""summary.md and curves.png from the simulator's rows (one per strategy, seed and round)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from .metrics import labels_to_reach, normalized_aulc


def curves_by_strategy(rows: list[dict], metric: str = "accuracy") -> dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """{strategy: {seed: (n_labeled, metric values)}} ordered by round."""
    out: dict = defaultdict(dict)
    groups: dict = defaultdict(list)
    for r in rows:
        groups[(r["strategy"], r["seed"])].append(r)
    for (s, seed), rs in groups.items():
        rs.sort(key=lambda r: r["round"])
        out[s][seed] = (np.array([r["n_labeled"] for r in rs]), np.array([r[metric] for r in rs]))
    return dict(out)


def summarize(rows: list[dict], full_data_accuracy: float | None = None) -> list[dict]:
    """Per strategy: mean/std of normalized AULC (accuracy and macro-F1), final accuracy, labels to 95%."""
    acc = curves_by_strategy(rows, "accuracy")
    f1 = curves_by_strategy(rows, "macro_f1")
    table = []
    for s, seeds in acc.items():
        aulc = np.array([normalized_aulc(*seeds[k]) for k in sorted(seeds)])
        aulc_f1 = np.array([normalized_aulc(*f1[s][k]) for k in sorted(seeds)])
        final = np.array([seeds[k][1][-1] for k in sorted(seeds)])
        entry = {"strategy": s, "seeds": len(seeds), "aulc_mean": aulc.mean(), "aulc_std": aulc.std(ddof=1) if len(aulc) > 1 else 0.0,
                 "aulc_f1_mean": aulc_f1.mean(), "final_mean": final.mean(),
                 "final_std": final.std(ddof=1) if len(final) > 1 else 0.0, "aulc_per_seed": aulc.tolist()}
        if full_data_accuracy:
            reach = [labels_to_reach(*seeds[k], 0.95 * full_data_accuracy) for k in sorted(seeds)]
            entry["labels_to_95"] = reach
        table.append(entry)
    table.sort(key=lambda e: -e["aulc_mean"])
    return table


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of m p-values (family-wise error over the strategies compared):
    the i-th smallest is multiplied by (m - i), and the adjusted values are made monotone, capped at 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def paired_vs(table: list[dict], a: str, b: str) -> tuple[float, float] | None:
    """Mean paired AULC difference a - b across seeds and the paired t-test p-value."""
    ea = next((e for e in table if e["strategy"] == a), None)
    eb = next((e for e in table if e["strategy"] == b), None)
    if ea is None or eb is None or len(ea["aulc_per_seed"]) < 2:
        return None
    from scipy.stats import ttest_rel

    x, y = np.array(ea["aulc_per_seed"]), np.array(eb["aulc_per_seed"])
    n = min(len(x), len(y))
    diff = float((x[:n] - y[:n]).mean())
    p = float(ttest_rel(x[:n], y[:n]).pvalue) if np.any(x[:n] != y[:n]) else 1.0
    return diff, p


def write_report(rows: list[dict], out: Path, meta: dict) -> None:
    full = meta.get("full_data_accuracy")
    table = summarize(rows, full)
    lines = [f"# Active-learning simulation: {meta.get('dataset')}", "",
             f"model `{meta.get('model')}`"
             + (f" at {meta['image_size']}x{meta['image_size']} px" if meta.get("image_size") else "")
             + f", {meta.get('n_train')} train / {meta.get('n_test')} test "
             f"{'images' if meta.get('modality') == 'image' else 'texts'}, "
             f"mode `{meta['config'].get('train_mode')}`, initial {meta['config'].get('initial')}, batch "
             f"{meta['config'].get('batch')}, rounds {meta['config'].get('rounds')}, seeds {meta['config'].get('seeds')}"
             + (f"; full-data accuracy {full:.4f}" if full else ""), "",
             "| strategy | nAULC acc (mean ± std) | nAULC macro-F1 | final acc (mean ± std) |"
             + (" labels to 95% of full-data acc (per seed) |" if full else ""),
             "|---|---|---|---|" + ("---|" if full else "")]
    for e in table:
        line = (f"| {e['strategy']} | {e['aulc_mean']:.4f} ± {e['aulc_std']:.4f} | {e['aulc_f1_mean']:.4f} | "
                f"{e['final_mean']:.4f} ± {e['final_std']:.4f} |")
        if full:
            line += " " + ", ".join("never" if v is None else str(int(v)) for v in e["labels_to_95"]) + " |"
        lines.append(line)
    names = [e["strategy"] for e in table]
    if "random" in names:
        lines += ["", "Paired difference in nAULC against random across seeds (t-test p-value):", ""]
        for s in names:
            if s != "random":
                res = paired_vs(table, s, "random")
                if res:
                    lines.append(f"- {s}: {res[0]:+.4f} (p = {res[1]:.3f})")
    lines += ["", f"wall time {meta.get('wall_seconds', 0):.0f} s", ""]
    (out / "summary.md").write_text("\n".join(lines))
    plot_curves(rows, out / "curves.png", title=f"{meta.get('dataset')}: accuracy vs labels (mean ± std)")


def plot_curves(rows: list[dict], path: Path, title: str = "", metric: str = "accuracy") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for s, seeds in sorted(curves_by_strategy(rows, metric).items()):
        x = next(iter(seeds.values()))[0]
        ys = np.stack([v[1] for v in seeds.values() if len(v[1]) == len(x)])
        m, sd = ys.mean(0), ys.std(0)
        ax.plot(x, m, marker="o", ms=3, label=s)
        ax.fill_between(x, m - sd, m + sd, alpha=0.15)
    ax.set_xlabel("labeled examples")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
