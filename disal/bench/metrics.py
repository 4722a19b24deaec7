"""Learning-curve metrics shared by the simulator's summary and the benchmark suite."""

from __future__ import annotations

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in y_true or y_pred."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    f1s = []
    for c in range(num_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


def normalized_aulc(n_labeled: np.ndarray, scores: np.ndarray) -> float:
    """Area under the learning curve divided by its width: the mean score over the budget range."""
    x = np.asarray(n_labeled, dtype=float)
    y = np.asarray(scores, dtype=float)
    if len(x) < 2 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def labels_to_reach(n_labeled: np.ndarray, scores: np.ndarray, target: float) -> float | None:
    """First budget at which the curve reaches `target`, or None if it never does."""
    for n, s in zip(n_labeled, scores):
        if s >= target:
            return float(n)
    return None
