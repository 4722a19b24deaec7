"""The benchmark report: learning-curve arithmetic, verdicts, the markdown and PNGs, perf.json's keys."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from disal.bench.cost_report import cost_section
from disal.bench.suite_report import (HAND_END, HAND_START, analyse, labels_to_target, saved, verdict,
                                      write_benchmarks)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import perf  # noqa: E402


def test_labels_to_target_interpolates_between_budgets_and_says_never():
    x, y = np.array([20, 40, 60]), np.array([0.5, 0.7, 0.9])
    assert labels_to_target(x, y, 0.8) == pytest.approx(50.0)
    assert labels_to_target(x, y, 0.4) == 20.0
    assert labels_to_target(x, y, 0.95) is None


def test_verdict_and_labels_saved():
    assert verdict(0.01, 0.01) == "**wins**" and verdict(-0.01, 0.01) == "**loses**" and verdict(0.05, 0.2) == "ties"
    assert saved(120.0, 80.0, 200) == "+40" and saved(60.0, 80.0, 200) == "-20"
    assert saved(None, 80.0, 200).startswith("> 120")
    assert "never" in saved(60.0, None, 200)


def fake_rows(dataset: str) -> list[dict]:
    """disal learns fastest, random slowest, margin in between; 3 seeds, budgets 20..80."""
    rows = []
    speed = {"disal": 0.15, "margin": 0.12, "random": 0.03}
    noise = np.random.default_rng(0).normal(0, 0.004, size=(3, 3, 4))
    for i, (s, v) in enumerate(speed.items()):
        for seed in range(3):
            for rnd in range(4):
                acc = min(0.97, 0.5 + v * rnd + (noise[i, seed, rnd] if rnd else 0.0))
                rows.append({"strategy": s, "seed": seed, "round": rnd, "n_labeled": 20 + 20 * rnd, "accuracy": acc,
                             "macro_f1": acc, "dataset": dataset})
    return rows


def write_fake(folder: Path, dataset: str) -> None:
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("\n".join(json.dumps(r) for r in fake_rows(dataset)))
    (folder / "meta.json").write_text(json.dumps({
        "dataset": dataset, "modality": "text", "n_train": 100, "n_test": 50, "model": "enc", "image_size": None,
        "full_data_accuracy": 0.9, "config": {"initial": 20, "batch": 20, "rounds": 3, "seeds": 3}}))


def test_analyse_ranks_and_tests_every_strategy_against_disal(tmp_path):
    write_fake(tmp_path / "d", "d")
    rows = [json.loads(line) for line in (tmp_path / "d" / "results.jsonl").read_text().splitlines()]
    a = analyse(rows, json.loads((tmp_path / "d" / "meta.json").read_text()))
    assert a["names"][0] == "disal" and a["best_other"]["strategy"] == "margin"
    assert a["target"] == pytest.approx(0.855)
    assert a["subject"]["labels_to_target"] < a["best_other"]["labels_to_target"]
    assert a["random"]["labels_to_target"] is None  # random never reaches 0.855 within 80 labels
    diff, p = a["random"]["vs_subject"]
    assert diff > 0 and p < 0.05


def test_write_benchmarks_writes_tables_plots_and_keeps_hand_written_notes(tmp_path):
    for d in ("alpha", "beta"):
        write_fake(tmp_path / "q" / d, d)
    report = tmp_path / "docs" / "benchmarks.md"
    folders = [tmp_path / "q" / "alpha", tmp_path / "q" / "beta"]
    write_benchmarks(folders, report, report.parent, None, command="python -m disal.bench.suite")
    text = report.read_text()
    assert "### alpha" in text and "### beta" in text and "| **disal** |" in text
    assert "DISAL ranks 1 of 3" in text and "Beats (p < 0.05): margin, random" in text
    for png in ("bench-curves-alpha.png", "bench-curves-beta.png", "bench-gain-over-random.png"):
        assert (report.parent / png).stat().st_size > 5000
    note = f"{HAND_START}\nDISAL wins here because of X.\n{HAND_END}"
    report.write_text(text.replace(text[text.index(HAND_START): text.index(HAND_END) + len(HAND_END)], note))
    write_benchmarks(folders, report, report.parent, None, command="python -m disal.bench.suite")
    assert "DISAL wins here because of X." in report.read_text()


def test_perf_json_headline_keys_come_from_the_detailed_results(tmp_path):
    scoring = {"rows": [{"params": "head", "K": 5, "ratio": 1.02}, {"params": "all", "K": 5, "ratio": 14.0},
                        {"params": "all", "K": 1, "ratio": 3.0}]}
    lat = {"webhook": {"p99": 7.0}, "predict_1_new": {"p50": 50.0}}
    service = {"pools": [{"pool": 10000, "queue_live_seconds_median": 20.0, "round_seconds_median": 30.0,
                          "push_per_second": 400.0, "latency_during_training_ms": lat},
                         {"pool": 1000, "queue_live_seconds_median": 3.0, "round_seconds_median": 4.0,
                          "push_per_second": 450.0}]}
    h = perf.headline(scoring, service)
    assert h == {"scoring_ratio_head": 1.02, "scoring_ratio_all": 14.0, "webhook_ms_p99_during_training": 7.0,
                 "predict_one_ms_p50": 50.0, "round_seconds_10k": 20.0, "round_done_seconds_10k": 30.0,
                 "push_per_second": 400.0, "scoring_K": 5}
    with_regimes = perf.headline({"rows": scoring["rows"] + [{"params": "mlp", "K": 5, "ratio": 1.031, "passes": 8.4}]},
                                 None, {"rows": [{"K": 5, "passes": 17.9, "plain_s": 2.0, "disal_s": 30.0}]})
    assert (with_regimes["scoring_ratio_mlp"], with_regimes["scoring_passes_mlp"]) == (1.031, 8.4)
    assert (with_regimes["scoring_passes_top2"], with_regimes["scoring_ratio_top2"]) == (17.9, 15.0)
    out = tmp_path / "bench" / "out"
    out.mkdir(parents=True)
    (out / "scoring.json").write_text(json.dumps({**scoring, "meta": {"model": "m"}, "trajectory_bytes": {
        "head": {"K": 5, "bytes": 100, "bytes_per_K": 20, "bytes_per_checkpoint": 17}},
        "rows": [{**r, "pool": 10, "plain_s": 1.0, "disal_s": r["ratio"], "disal_items_per_s": 3.0}
                 for r in scoring["rows"]]}))
    pool = {**service["pools"][0], "rounds": [{"pushed": 1000}], "phase_seconds_median": {"push": 2.5},
            "memory": {"peak_rss_mb": 900}, "cold_start_seconds": 300, "cold_start_phases": {"encode": 250}}
    lat_full = {k: {"n": 5, "p50": 1.0, "p99": 2.0, "max": 3.0} for k in ("webhook", "predict_1", "predict_1_new",
                                                                         "predict_100")}
    pool["latency_during_training_ms"] = lat_full
    (out / "service.json").write_text(json.dumps({"pools": [pool]}))
    (out / "perf.json").write_text(json.dumps({**h, "preset": "quick", "details": {
        "scoring": "bench/out/scoring.json", "service": "bench/out/service.json"}}))
    text = "\n".join(cost_section(out / "perf.json"))
    assert "| all | 5 | 10 |" in text and "**14.00**" in text
    assert "| 10,000 | 300 (250) | 20.0 | 30.0 |" in text
    assert "/predict, 1 task never scored" in text


def test_resume_keeps_only_complete_runs_and_batchbald_is_left_out_above_five_classes(tmp_path):
    from disal.bench.simulator import completed_runs
    from disal.bench.suite import PRESETS, strategies_for

    rows = [{"strategy": "a", "seed": 0, "round": r} for r in range(3)] + [{"strategy": "a", "seed": 1, "round": 0}]
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert completed_runs(path, rounds=2) == rows[:3]
    assert completed_runs(tmp_path / "missing.jsonl", rounds=2) == []
    full = PRESETS["full"]
    assert "baal:batchbald" in strategies_for(full, 5) and "baal:batchbald" not in strategies_for(full, 10)
    assert len(strategies_for(full, 10)) == len(full.strategies) - 1


def test_holm_adjusts_step_down_and_stays_monotone():
    from disal.bench.report import holm

    # m=4: sorted p's 0.01, 0.02, 0.03, 0.5 -> x4, x3, x2, x1, made monotone
    assert holm([0.03, 0.01, 0.5, 0.02]) == pytest.approx([0.06, 0.04, 0.5, 0.06])
    assert holm([0.3, 0.4]) == pytest.approx([0.6, 0.6])  # 0.3 x 2; then 0.4 x 1 raised to stay monotone
    assert holm([]) == [] and holm([0.2]) == [0.2]
    assert holm([0.4, 0.4, 0.4]) == pytest.approx([1.0, 1.0, 1.0])


def test_the_report_can_be_about_another_strategy_such_as_the_backends_default(tmp_path):
    """--subject margin: every paired test, verdict and headline is margin's (protocol v2 reports the default)."""
    write_fake(tmp_path / "q" / "alpha", "alpha")
    report = tmp_path / "docs" / "benchmarks.md"
    write_benchmarks([tmp_path / "q" / "alpha"], report, report.parent, None, command="c", subject="margin")
    text = report.read_text()
    assert "| **margin** |" in text and "| **disal** |" not in text
    assert "`margin` ranks 2 of 3" in text and "Loses to (p < 0.05): disal" in text
    assert "| dataset | `margin` nAULC |" in text


def test_a_run_without_random_still_gets_its_report(tmp_path):
    write_fake(tmp_path / "q" / "alpha", "alpha")
    f = tmp_path / "q" / "alpha" / "results.jsonl"
    f.write_text("\n".join(line for line in f.read_text().splitlines() if '"random"' not in line))
    report = tmp_path / "r.md"
    write_benchmarks([tmp_path / "q" / "alpha"], report, tmp_path, None, command="c")
    assert "| alpha | " in report.read_text() and "| not run | margin |" in report.read_text()


class _Pixels:
    """Digits' raw pixels as features: a real, deterministic encoder small enough for a unit test."""

    model_id, image_size = "pixels", 8

    def encode(self, images, progress=None):
        return np.asarray(images, dtype=np.float32).reshape(len(images), -1)


def test_first_seed_runs_fresh_seeds_that_equal_the_same_seeds_of_a_longer_run(tmp_path):
    """--first-seed 3 --seeds 2 runs seeds 3 and 4, and each is the run seed 3 or 4 of 0..4 would be:
    a choice tuned on seeds 0..2 is confirmed on seeds it never saw."""
    from disal.bench.simulator import SimulationConfig, simulate
    from disal.bench.suite import main as suite_main
    from disal.data import load_digits

    ds = load_digits().subsample(150, 60, seed=0)
    base = dict(strategies=["random", "margin"], initial=10, batch=5, rounds=2)
    fresh = simulate(ds, SimulationConfig(seeds=2, first_seed=3, **base), None, tmp_path / "fresh", adapter=_Pixels())
    whole = simulate(ds, SimulationConfig(seeds=5, **base), None, tmp_path / "whole", adapter=_Pixels())
    assert sorted({r["seed"] for r in fresh}) == [3, 4]

    def key(rows):
        return sorted((r["strategy"], r["seed"], r["round"], r["n_labeled"], r["accuracy"]) for r in rows)

    assert key(fresh) == key([r for r in whole if r["seed"] >= 3])
    with pytest.raises(SystemExit):
        suite_main(["--first-seed", "x"])


def test_resume_with_fewer_strategies_keeps_the_other_strategies_complete_runs(tmp_path, capsys):
    """--resume --strategies <one more> adds to a folder: the runs already there stay, whatever the list."""
    from disal.bench.simulator import SimulationConfig, simulate
    from disal.data import load_digits

    ds = load_digits().subsample(150, 60, seed=0)
    base = dict(seeds=1, initial=10, batch=5, rounds=2)
    first = simulate(ds, SimulationConfig(strategies=["random", "margin"], **base), None, tmp_path, adapter=_Pixels())
    again = simulate(ds, SimulationConfig(strategies=["margin"], **base), None, tmp_path, adapter=_Pixels(),
                     resume=True)
    assert "also keeping the complete runs of random" in capsys.readouterr().out
    on_disk = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(map(json.dumps, on_disk)) == sorted(map(json.dumps, first)) == sorted(map(json.dumps, again))
