"""Where strategy scores turn into a Label Studio labeling queue.

Label Studio has no priority field. Its Data Manager column "Prediction score" is the average
`score` of a task's predictions of `project.model_version`, and uncertainty sampling serves the
LOWEST score first. So the prediction `score` we push is the queue priority, lower = label first:

    score = rank / (N - 1)        rank 0 = the strategy's first pick, N = pool size

It is a rank, not the raw acquisition value, because DISAL's raw scores are unbounded and batch-
aware strategies (CoreSet, BADGE) report scores whose only meaning is their order. The predicted
choice and its probability travel in the prediction `result` (and are empty at cold start, when no
classifier exists yet).

What a person sees (Label Studio 1.23's labeling screen, libs/editor AnnotationButton.tsx and
OutlinerTree.tsx): the prediction tab reads "<model_version, cut to 8...6 characters> · <score x 100>%"
with a "Prediction Score" tooltip, so the priority reads like a confidence ("0.00%" = first in the
queue). The per-result `score` (the choice's probability) is rendered only for regions, never for a
whole-task <Choices>. So where the config has `<TextArea name="disal_note">` over the same <Text>,
each prediction also fills it with `model_note`: the guess with its probability and what the tab's
percentage means. An annotator reads it on the screen; it is saved with the annotation, never
trained on (only the <Choices> control is read).

A task scored later (TASKS_CREATED, /predict on a task outside the pool) is placed into the current
queue by its raw score: priority = fraction of the pool whose raw score is higher. Same scale, same
direction, no re-push of the whole pool.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .labelconfig import LabelSpec
from .strategies import Selection


def priorities_from_selection(selection: Selection) -> dict[int, float]:
    """{task id: rank / (N-1)} over the selection's full priority order (0.0 = label first)."""
    ranks = selection.rank_by_id()
    n = len(ranks)
    if n != len(selection.item_ids) or len(selection.order) != n:
        raise ValueError(f"selection orders {len(selection.order)} of {len(selection.item_ids)} items: "
                         "every pool task needs a rank")
    denom = max(n - 1, 1)
    return {int(tid): rank / denom for tid, rank in ranks.items()}


def top_of_queue(task_ids: Sequence[int], priority: dict[int, float], k: int) -> list[int]:
    """The k tasks of `task_ids` that come first in the queue (lowest priority value); k=0: all.

    Ties (equal priority) keep the task-id order, so the same queue always pushes the same tasks.
    """
    ids = sorted((int(t) for t in task_ids), key=lambda t: (priority[t], t))
    return ids if k <= 0 else ids[:k]


def priority_from_reference(raw_scores: np.ndarray, reference_sorted: np.ndarray) -> np.ndarray:
    """Place items into an existing queue: the fraction of the pool with a strictly higher raw score.

    Higher raw score = more worth labeling (every strategy's convention) = lower priority value.
    An empty reference (nothing left in the pool) puts every new task first.
    """
    raw = np.asarray(raw_scores, dtype=np.float64)
    if np.isnan(raw).any():
        raise ValueError("NaN raw scores: refusing to place tasks in the queue")
    ref = np.asarray(reference_sorted, dtype=np.float64)
    if len(ref) == 0:
        return np.zeros(len(raw))
    higher = len(ref) - np.searchsorted(ref, raw, side="right")
    return higher / len(ref)


def choice_result(spec: LabelSpec, probs: np.ndarray) -> tuple[list[dict], float]:
    """The predicted choice(s) for one task as a Label Studio result, and its probability.

    Single choice: the argmax and its softmax probability. Multiple choice: every label with
    sigmoid probability > 0.5 (at least the top one) and the lowest probability among them.
    """
    p = np.asarray(probs, dtype=np.float64)
    if spec.multi_label:
        idx = [int(i) for i in np.flatnonzero(p > 0.5)] or [int(p.argmax())]
        idx.sort(key=lambda i: -p[i])
        conf = float(min(p[i] for i in idx))
    else:
        idx = [int(p.argmax())]
        conf = float(p[idx[0]])
    result = [{
        "from_name": spec.from_name, "to_name": spec.to_name, "type": "choices",
        "value": {"choices": [spec.labels[i] for i in idx]}, "score": conf,
    }]
    return result, conf


def model_note(spec: LabelSpec, priority: float, probs: np.ndarray | None) -> str:
    """What `<TextArea name="disal_note">` shows: the model's guess with its probability, and what the
    percentage on the prediction tab (Label Studio renders `score` x 100) means for this task."""
    place = (f"the prediction's {priority * 100:.2f}% is this task's place in the DISAL queue "
             "(0% = labeled first), not a confidence")
    if probs is None:
        return f"no model yet (cold start: fewer than 2 classes labeled) · {place}"
    result, _ = choice_result(spec, probs)
    p, index = np.asarray(probs, dtype=np.float64), spec.index()
    guess = ", ".join(f"{c} {p[index[c]]:.0%}" for c in result[0]["value"]["choices"])
    return f"model's guess: {guess} · {place}"


def prediction_for(task_id: int | None, spec: LabelSpec, priority: float, version: str,
                   probs: np.ndarray | None) -> dict:
    """One prediction dict: `score` = queue priority (lower = label first); result = predicted choice
    (its `score` = its probability), plus the model's note where the config has a disal_note TextArea."""
    if not np.isfinite(priority):
        raise ValueError(f"task {task_id}: priority {priority} is not finite")
    result: list[dict] = []
    if probs is not None:
        result, _ = choice_result(spec, probs)
    if spec.note_from_name:
        result.append({"from_name": spec.note_from_name, "to_name": spec.to_name, "type": "textarea",
                       "value": {"text": [model_note(spec, priority, probs)]}})
    pred = {"result": result, "score": float(priority), "model_version": version}
    if task_id is not None:
        pred["task"] = int(task_id)
    return pred


def predictions_for(task_ids: Sequence[int], spec: LabelSpec, priorities: dict[int, float], version: str,
                    probs_by_id: dict[int, np.ndarray] | None) -> list[dict]:
    """Prediction dicts for bulk import, one per task id, keyed by id (never by position)."""
    out = []
    for tid in task_ids:
        tid = int(tid)
        if tid not in priorities:
            raise KeyError(f"task {tid} has no queue priority")
        out.append(prediction_for(tid, spec, priorities[tid], version,
                                  None if probs_by_id is None else probs_by_id[tid]))
    return out
