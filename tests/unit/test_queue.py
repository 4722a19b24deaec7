"""disal.queue: strategy Selections become Label Studio predictions whose score is the queue priority."""

from __future__ import annotations

import numpy as np
import pytest

from disal.labelconfig import LabelSpec
from disal.queue import (choice_result, prediction_for, predictions_for, priorities_from_selection,
                         priority_from_reference, top_of_queue)
from disal.strategies import ScoringInputs, Selection, make_strategy

SPEC = LabelSpec("label", "text", "text", ("business", "sport", "tech"), multi_label=False)
MULTI = LabelSpec("label", "text", "text", ("a", "b", "c"), multi_label=True)


def selection(ids, scores):
    ids = np.asarray(ids)
    order = ids[np.argsort(-np.asarray(scores), kind="stable")]
    return Selection("test", ids, np.asarray(scores, dtype=float), order[:2], order)


def test_priority_is_rank_over_n_minus_1_lower_first_keyed_by_task_id():
    sel = selection([40, 10, 30, 20], [0.1, 5.0, 2.0, -1.0])
    pr = priorities_from_selection(sel)
    assert pr == {10: 0.0, 30: 1 / 3, 40: 2 / 3, 20: 1.0}
    assert sel.scores_by_id() == {40: 0.1, 10: 5.0, 30: 2.0, 20: -1.0}


def test_single_item_pool_gets_priority_zero():
    assert priorities_from_selection(selection([7], [3.0])) == {7: 0.0}


def test_a_real_strategy_selection_orders_by_descending_acquisition():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=50)
    ids = np.arange(100, 150)
    sel = make_strategy("entropy").select(ScoringInputs(ids=ids, probs=probs), batch_size=50, seed=0)
    pr = priorities_from_selection(sel)
    entropy = -(probs * np.log(probs)).sum(1)
    most_uncertain = int(ids[np.argmax(entropy)])
    assert pr[most_uncertain] == 0.0
    # a higher acquisition score never gets a larger (later) priority
    ent_by_id = dict(zip(ids.tolist(), entropy))
    ranked = sorted(pr, key=pr.get)
    assert all(ent_by_id[a] >= ent_by_id[b] - 1e-12 for a, b in zip(ranked, ranked[1:]))


def test_selection_that_does_not_rank_every_item_is_refused():
    ids = np.array([1, 2, 3])
    bad = Selection("x", ids, np.zeros(3), ids[:1], ids[:2])
    with pytest.raises(ValueError, match="every pool task"):
        priorities_from_selection(bad)


def test_new_items_are_placed_by_the_fraction_of_the_pool_scoring_higher():
    ref = np.sort(np.array([1.0, 2.0, 3.0, 4.0]))
    got = priority_from_reference(np.array([10.0, 3.5, 0.0, 2.0]), ref)
    assert got.tolist() == [0.0, 0.25, 1.0, 0.5]
    assert priority_from_reference(np.array([1.0]), np.array([])).tolist() == [0.0]
    with pytest.raises(ValueError, match="NaN"):
        priority_from_reference(np.array([np.nan]), ref)


def test_single_choice_result_carries_argmax_and_its_probability():
    result, conf = choice_result(SPEC, np.array([0.2, 0.7, 0.1]))
    assert result == [{"from_name": "label", "to_name": "text", "type": "choices",
                       "value": {"choices": ["sport"]}, "score": pytest.approx(0.7)}]
    assert conf == pytest.approx(0.7)


def test_multi_label_result_takes_every_label_above_half_or_the_top_one():
    result, conf = choice_result(MULTI, np.array([0.9, 0.6, 0.1]))
    assert result[0]["value"]["choices"] == ["a", "b"] and conf == pytest.approx(0.6)
    result, conf = choice_result(MULTI, np.array([0.2, 0.4, 0.1]))
    assert result[0]["value"]["choices"] == ["b"] and conf == pytest.approx(0.4)


def test_prediction_dicts_for_bulk_import():
    preds = predictions_for([5, 3], SPEC, {3: 0.0, 5: 1.0}, "disal-0002-x",
                            {3: np.array([0.1, 0.1, 0.8]), 5: np.array([0.5, 0.3, 0.2])})
    assert [p["task"] for p in preds] == [5, 3]
    assert [p["score"] for p in preds] == [1.0, 0.0]
    assert {p["model_version"] for p in preds} == {"disal-0002-x"}
    assert preds[1]["result"][0]["value"]["choices"] == ["tech"]


def test_cold_start_predictions_have_no_result_but_a_priority():
    pred = prediction_for(9, SPEC, 0.25, "disal-0001-coldstart-x", None)
    assert pred == {"result": [], "score": 0.25, "model_version": "disal-0001-coldstart-x", "task": 9}


def test_missing_priority_or_non_finite_priority_is_an_error():
    with pytest.raises(KeyError, match="task 4"):
        predictions_for([4], SPEC, {}, "v", None)
    with pytest.raises(ValueError, match="not finite"):
        prediction_for(1, SPEC, float("inf"), "v", None)


def test_top_of_queue_takes_the_lowest_priorities_ties_by_task_id_and_zero_means_all():
    priority = {10: 0.5, 11: 0.0, 12: 0.5, 13: 1.0, 14: 0.25}
    assert top_of_queue([13, 12, 11, 10, 14], priority, 3) == [11, 14, 10]
    assert top_of_queue([13, 12, 11, 10, 14], priority, 0) == [11, 14, 10, 12, 13]
    assert top_of_queue([13, 12, 11, 10, 14], priority, 99) == [11, 14, 10, 12, 13]


NOTED = LabelSpec("label", "text", "text", ("business", "sport", "tech"), multi_label=False,
                  note_from_name="disal_note")


def test_without_a_note_control_a_prediction_carries_only_the_choice_with_its_probability():
    pred = prediction_for(3, SPEC, 0.5, "disal-0002-x", np.array([0.1, 0.2, 0.7]))
    assert [r["type"] for r in pred["result"]] == ["choices"]
    assert pred["result"][0]["score"] == pytest.approx(0.7) and pred["score"] == 0.5


def test_the_note_control_shows_the_guess_with_its_probability_and_what_the_tab_percentage_means():
    """Label Studio renders the prediction score as "<score x 100>%" and no per-result score for a
    whole-task <Choices>: the note says both things on the labeling screen."""
    pred = prediction_for(3, NOTED, 0.0021, "disal-0002-x", np.array([0.05, 0.87, 0.08]))
    choice, note = pred["result"]
    assert choice["value"]["choices"] == ["sport"] and choice["score"] == pytest.approx(0.87)
    assert note["from_name"] == "disal_note" and note["to_name"] == "text" and note["type"] == "textarea"
    text = note["value"]["text"][0]
    assert text.startswith("model's guess: sport 87% · ")
    assert "the prediction's 0.21% is this task's place in the DISAL queue (0% = labeled first)" in text
    assert "not a confidence" in text
    assert pred["score"] == 0.0021  # the queue priority still orders Label Studio's queue


def test_the_note_names_every_multi_label_choice_and_says_cold_start():
    multi = LabelSpec("label", "text", "text", ("a", "b", "c"), multi_label=True, note_from_name="disal_note")
    note = prediction_for(1, multi, 1.0, "v", np.array([0.9, 0.6, 0.1]))["result"][1]["value"]["text"][0]
    assert note.startswith("model's guess: a 90%, b 60% · the prediction's 100.00% is")
    cold = prediction_for(1, NOTED, 0.25, "disal-0001-coldstart-x", None)
    assert [r["type"] for r in cold["result"]] == ["textarea"]  # no classifier yet: no choice, still the note
    assert cold["result"][0]["value"]["text"][0].startswith("no model yet (cold start")
