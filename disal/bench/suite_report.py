"""docs/benchmarks.md from the suite's results: quality tables, learning curves, paired tests, cost.

Everything in the report is computed from `results.jsonl` / `meta.json` of each dataset folder and
the cost JSONs; nothing is typed in by hand except the block between the HAND-WRITTEN markers,
which a regeneration keeps.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np

from .report import curves_by_strategy, holm, paired_vs, plot_curves, summarize

HAND_START, HAND_END = "<!-- HAND-WRITTEN:START -->", "<!-- HAND-WRITTEN:END -->"
ALPHA = 0.05


def load_results(folder: Path) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    meta = json.loads((folder / "meta.json").read_text())
    return rows, meta


def mean_curve(seeds: dict[int, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    x = next(iter(seeds.values()))[0]
    ys = np.stack([v[1] for v in seeds.values() if len(v[1]) == len(x)])
    return x, ys.mean(0)


def labels_to_target(x: np.ndarray, y: np.ndarray, target: float) -> float | None:
    """Labels at which the (mean) curve first reaches `target`, interpolated between budgets."""
    for i, (n, v) in enumerate(zip(x, y)):
        if v >= target:
            if i == 0:
                return float(n)
            x0, y0 = x[i - 1], y[i - 1]
            return float(x0 + (target - y0) / (v - y0) * (n - x0))
    return None


def verdict(diff: float, p: float) -> str:
    if p < ALPHA:
        return "**wins**" if diff > 0 else "**loses**"
    return "ties"


def saved(other: float | None, mine: float | None, budget: float) -> str:
    """Labels DISAL saves against `other` to reach the same target (negative: it needs more)."""
    if mine is None:
        return "n/a (DISAL never reaches it)" if other is not None else "neither reaches it"
    if other is None:
        return f"> {budget - mine:.0f} (never reached by the other)"
    return f"{other - mine:+.0f}"


def fmt_labels(v: float | None) -> str:
    return "never" if v is None else f"{v:.0f}"


def analyse(rows: list[dict], meta: dict, subject: str = "disal") -> dict:
    """Everything the report says about one dataset."""
    full = meta.get("full_data_accuracy")
    table = summarize(rows, full)
    acc = curves_by_strategy(rows, "accuracy")
    target = 0.95 * full if full else None
    budget = max(r["n_labeled"] for r in rows)
    for e in table:
        x, y = mean_curve(acc[e["strategy"]])
        e["budgets"], e["mean_acc"] = x.tolist(), y.tolist()
        e["labels_to_target"] = labels_to_target(x, y, target) if target else None
        if e["strategy"] != subject:
            res = paired_vs(table, subject, e["strategy"])
            e["vs_subject"] = res  # (subject - this, p) or None; p is Holm-adjusted below
    # Holm's correction over every strategy compared with the subject: a "win" or "loss" then holds for
    # the family of comparisons, not one at a time
    compared = [e for e in table if e.get("vs_subject")]
    for e, p_adj in zip(compared, holm([e["vs_subject"][1] for e in compared])):
        e["p_raw"] = e["vs_subject"][1]
        e["vs_subject"] = (e["vs_subject"][0], p_adj)
    names = [e["strategy"] for e in table]
    others = [e for e in table if e["strategy"] != subject]
    ours = [e for e in others if ":" not in e["strategy"] or e["strategy"].startswith(("disal:", "static"))]
    # peers that reproduce one of our strategies exactly (breaking ties = margin, ...) would hide
    # under it in the plots: "best peer" is the best one that is a different method in effect
    own_curves = {tuple(np.round(e["aulc_per_seed"], 10)) for e in ours}
    peers = [e for e in others if e["strategy"].startswith(("smalltext:", "baal:", "skactiveml:"))
             and tuple(np.round(e["aulc_per_seed"], 10)) not in own_curves]
    return {"table": table, "full": full, "target": target, "budget": budget, "names": names,
            "subject": next((e for e in table if e["strategy"] == subject), None),
            "random": next((e for e in table if e["strategy"] == "random"), None),
            "best_other": others[0] if others else None,
            "best_baseline": next((e for e in ours if not e["strategy"].startswith(("disal", "static"))), None),
            "best_peer": peers[0] if peers else None}


def plot_selected(rows: list[dict], a: dict, path: Path, title: str) -> None:
    """Curves of the subject (DISAL), plain DISAL, random, static influence, the best baseline, the best peer
    and the best other."""
    keep = {"disal", "random", "static_influence"} | ({a["subject"]["strategy"]} if a.get("subject") else set())
    for key in ("best_other", "best_baseline", "best_peer"):
        if a.get(key):
            keep.add(a[key]["strategy"])
    plot_curves([r for r in rows if r["strategy"] in keep], path, title=title)


def plot_gain_over_random(analyses: dict[str, dict], path: Path) -> None:
    """nAULC minus random's, per dataset: DISAL, the best baseline, the best peer (mean ± std of paired diffs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subject = next((a["subject"]["strategy"] for a in analyses.values() if a.get("subject")), "disal")
    groups = [("disal", subject_label(subject)), ("best_baseline", "best baseline"),
              ("best_peer", "best peer (not identical to a baseline)")]
    fig, ax = plt.subplots(figsize=(7.5, 4), dpi=110)
    width = 0.26
    names = list(analyses)
    for gi, (key, label) in enumerate(groups):
        means, stds, tags = [], [], []
        for ds in names:
            a = analyses[ds]
            e = a["subject"] if key == "disal" else a.get(key)
            r = a["random"]
            if e is None or r is None:
                means.append(np.nan), stds.append(0), tags.append("")
                continue
            n = min(len(e["aulc_per_seed"]), len(r["aulc_per_seed"]))
            d = np.array(e["aulc_per_seed"][:n]) - np.array(r["aulc_per_seed"][:n])
            means.append(d.mean()), stds.append(d.std(ddof=1) if n > 1 else 0), tags.append(e["strategy"])
        xs = np.arange(len(names)) + (gi - 1) * width
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=label)
        for xv, m, t in zip(xs, means, tags):
            if key != "disal" and t and np.isfinite(m):
                ax.text(xv, 0, t.replace("smalltext:", "st:"), rotation=90, ha="center", va="bottom", fontsize=6)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("nAULC - random's nAULC")
    ax.set_title("Gain over random sampling (paired across seeds)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    import torch

    return (f"{cpu}, {os.cpu_count()} cores{mem}, no GPU; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def subject_label(subject: str) -> str:
    """How the report names the strategy it is about: DISAL, or its spec (the backend's default)."""
    return "DISAL" if subject == "disal" else f"`{subject}`"


def dataset_section(name: str, rows: list[dict], meta: dict, a: dict, fig_rel: str,
                    subject: str = "disal") -> list[str]:
    cfg = meta["config"]
    label = subject_label(subject)
    unit = "images" if meta.get("modality") == "image" else "texts"
    enc = meta.get("model") + (f"` at `{meta['image_size']} px" if meta.get("image_size") else "")
    lines = [f"### {name}", "",
             f"{meta.get('n_train')} train / {meta.get('n_test')} test {unit}; frozen `{enc}` + "
             f"{'one-hidden-layer (mlp)' if cfg.get('train_mode') == 'mlp' else 'linear'} head"
             f"{', warm start' if cfg.get('warm_start') else ''}; "
             f"initial {cfg['initial']}, batch {cfg['batch']}, {cfg['rounds']} rounds (budget {a['budget']}), "
             f"{cfg['seeds']} seeds. Full-data accuracy {a['full']:.4f}; target (95%) {a['target']:.4f}.", "",
             f"| strategy | nAULC (mean ± std) | final acc | labels to 95% (mean curve) | {label} − it (paired t-test "
             f"p, Holm over {sum(1 for e in a['table'] if e.get('vs_subject'))}) | {label} |",
             "|---|---|---|---|---|---|"]
    for e in a["table"]:
        vs = e.get("vs_subject")
        if e["strategy"] == subject:
            cmp_, ver = "—", "—"
        elif vs is None:
            cmp_, ver = "n/a", "n/a"
        else:
            cmp_, ver = f"{vs[0]:+.4f} (p = {vs[1]:.3f})", verdict(*vs)
        name_md = f"**{e['strategy']}**" if e["strategy"] == subject else e["strategy"]
        lines.append(f"| {name_md} | {e['aulc_mean']:.4f} ± {e['aulc_std']:.4f} | {e['final_mean']:.4f} | "
                     f"{fmt_labels(e['labels_to_target'])} | {cmp_} | {ver} |")
    lines += ["", f"![{name} learning curves]({fig_rel})", "",
              "<details><summary>Accuracy at each budget (mean over seeds)</summary>", "",
              "| strategy | " + " | ".join(str(int(b)) for b in a["table"][0]["budgets"]) + " |",
              "|---|" + "---|" * len(a["table"][0]["budgets"])]
    for e in a["table"]:
        lines.append(f"| {e['strategy']} | " + " | ".join(f"{v:.3f}" for v in e["mean_acc"]) + " |")
    lines += ["", "</details>", ""]
    return lines


def summary_lines(analyses: dict[str, dict], subject: str = "disal") -> list[str]:
    label = subject_label(subject)
    lines = [f"| dataset | {label} nAULC | random | best other (nAULC) | {label} vs random | {label} vs best other | "
             f"labels to 95%: {label} / random / best other | labels saved vs random | vs best other |",
             "|---|---|---|---|---|---|---|---|---|"]
    for ds, a in analyses.items():
        s, r, b = a["subject"], a["random"], a["best_other"]
        if s is None:
            continue
        if r is None or b is None:  # a sweep without random (or with one strategy): nothing to compare here
            lines.append(f"| {ds} | {s['aulc_mean']:.4f} | not run | {b['strategy'] if b else 'none'} | n/a | n/a | "
                         f"{fmt_labels(s['labels_to_target'])} / n/a / n/a | n/a | n/a |")
            continue
        vr = s_vs(a, "random")
        vb = s_vs(a, b["strategy"]) if b else None
        lines.append(
            f"| {ds} | {s['aulc_mean']:.4f} | {r['aulc_mean']:.4f} | {b['strategy']} ({b['aulc_mean']:.4f}) | "
            f"{vr[0]:+.4f}, p={vr[1]:.3f}, {verdict(*vr)} | {vb[0]:+.4f}, p={vb[1]:.3f}, {verdict(*vb)} | "
            f"{fmt_labels(s['labels_to_target'])} / {fmt_labels(r['labels_to_target'])} / "
            f"{fmt_labels(b['labels_to_target'])} | {saved(r['labels_to_target'], s['labels_to_target'], a['budget'])} | "
            f"{saved(b['labels_to_target'], s['labels_to_target'], a['budget'])} |")
    return lines


def s_vs(a: dict, other: str) -> tuple[float, float]:
    e = next(e for e in a["table"] if e["strategy"] == other)
    return e["vs_subject"] if e.get("vs_subject") else (float("nan"), float("nan"))


def verdict_sentences(analyses: dict[str, dict], subject: str = "disal") -> list[str]:
    """Plain statements of where the subject (DISAL) wins, ties and loses, from the paired tests."""
    out = []
    for ds, a in analyses.items():
        wins = [e["strategy"] for e in a["table"] if e.get("vs_subject") and verdict(*e["vs_subject"]) == "**wins**"]
        losses = [e["strategy"] for e in a["table"] if e.get("vs_subject") and verdict(*e["vs_subject"]) == "**loses**"]
        ties = [e["strategy"] for e in a["table"] if e.get("vs_subject") and verdict(*e["vs_subject"]) == "ties"]
        if subject not in a["names"]:
            continue
        rank = a["names"].index(subject) + 1
        out.append(f"- **{ds}**: {subject_label(subject)} ranks {rank} of {len(a['names'])} by nAULC. "
                   f"Beats (p < {ALPHA}): {', '.join(wins) or 'none'}. "
                   f"Loses to (p < {ALPHA}): {', '.join(losses) or 'none'}. "
                   f"Not distinguishable from: {', '.join(ties) or 'none'}.")
    return out


def keep_hand_written(path: Path) -> str:
    if path.exists():
        text = path.read_text()
        if HAND_START in text and HAND_END in text:
            return text[text.index(HAND_START): text.index(HAND_END) + len(HAND_END)]
    return f"{HAND_START}\n(Notes written by people go here; regeneration keeps them.)\n{HAND_END}"


def cost_lines(perf_path: Path | None) -> list[str]:
    """The cost section from bench/out/perf.json and the JSONs it points to (see bench/cost.py)."""
    if perf_path is None or not Path(perf_path).exists():
        return ["Cost results not found: run `make bench` (writes bench/out/perf.json)."]
    from .cost_report import cost_section

    return cost_section(Path(perf_path))


def write_benchmarks(folders: list[Path], report: Path, figures: Path, perf: Path | None, command: str,
                     subject: str = "disal") -> None:
    """The report about `subject` (DISAL by default; protocol v2: the backend's default strategy)."""
    report.parent.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    analyses, sections = {}, []
    for folder in folders:
        rows, meta = load_results(folder)
        name = meta.get("dataset", folder.name)
        a = analyse(rows, meta, subject)
        analyses[name] = a
        fig = figures / f"bench-curves-{name}.png"
        plot_selected(rows, a, fig, f"{name}: accuracy vs labels (mean ± std over {meta['config']['seeds']} seeds)")
        sections += dataset_section(name, rows, meta, a, os.path.relpath(fig, report.parent), subject)
    gain = figures / "bench-gain-over-random.png"
    plot_gain_over_random(analyses, gain)
    strategies = sorted({e["strategy"] for a in analyses.values() for e in a["table"]})
    from .peers import DEFAULT_MAX_CANDIDATES, UNSUPPORTED

    missing = {s: [ds for ds, a in analyses.items() if s not in a["names"]] for s in strategies}
    missing_lines = [f"`{s}` did not run on {', '.join(m)}"
                     + (" (baal's BatchBALD runs only where there are at most 5 classes: on 10 classes it took "
                        "129 s a round even on a 200-candidate subset)" if s == "baal:batchbald" else "")
                     for s, m in missing.items() if m]
    subsets = [f"`{k}` scores a seeded random {v}-item candidate subset each round (too slow on the whole pool "
               f"here)" for k, v in DEFAULT_MAX_CANDIDATES.items() if k in strategies]

    lines = ["# Benchmarks: DISAL against every baseline and peer, and what each part costs", "",
             f"Machine: {machine()}. Regenerate: `{command}` (selection quality) and `make bench` (cost); "
             "`make bench-full` runs both at full size and rewrites this page.", "",
             "## Selection quality", "",
             "Pool-based simulation on real data (`disal/bench/simulator.py`): the same initial set, model and "
             "budget for every strategy under a seed; a fresh linear head on frozen features each round; test "
             "splits never used for selection. nAULC = mean accuracy over the budget range (area under the "
             "learning curve divided by its width). \"Labels to 95%\" = labels at which the mean curve first "
             "reaches 95% of the full-data accuracy (linear between budgets). Paired t-tests across seeds, "
             f"alpha = {ALPHA}: *wins* / *loses* = {subject_label(subject)}'s nAULC is higher / lower beyond noise, "
             "*ties* otherwise.",
             "", *summary_lines(analyses, subject), "", f"![gain over random]({os.path.relpath(gain, report.parent)})",
             "", f"Where {subject_label(subject)} wins, ties and loses (paired tests against every other strategy):", "",
             *verdict_sentences(analyses, subject), "",
             keep_hand_written(report), "",
             f"Strategies ({len(strategies)}): " + ", ".join(f"`{s}`" for s in strategies) + ".", "",
             *(["Candidate subsets: " + "; ".join(subsets) + ".", ""] if subsets else []),
             *(["Left out: " + "; ".join(missing_lines) + ".", ""] if missing_lines else []),
             "Peers that do not run here: " + ("none: every small-text and baal strategy listed ran in the loop."
                                               if not UNSUPPORTED else
                                               "; ".join(f"`{k}`: {v[0]} ({v[1]})" for k, v in UNSUPPORTED.items())),
             "", "## Per dataset", "", *sections,
             "## Cost", "", *cost_lines(perf), ""]
    report.write_text("\n".join(lines))
