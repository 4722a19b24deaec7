"""The model's accuracy estimate as labels grow: one cross-validated point a training round.

Why: Label Studio shows no sign that the model improves. At the end of each training round the
labeled set's frozen-encoder features (the head's own inputs) get an exact leave-one-out accuracy
of a ridge classifier, in closed form: one d x d solve, milliseconds at any label count. That is
the cheap stand-in for k-fold cross-validating the head itself, which would train k more heads
(about a second each on a busy 2-core machine) and make every round several times slower. The
point (labels, accuracy) is appended to the project's curve.json, explicit JSON state next to the
versions; the status page plots it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .state import atomic_write_json, read_json

MIN_LABELS = 4  # fewer labels make a meaningless estimate: no point is recorded
MAX_POINTS = 1000  # curve.json keeps the newest points (a point is ~150 bytes)
RIDGE = 1.0  # in units of the mean squared feature norm: heavily regularised while labels are few
METRIC = "leave-one-out accuracy of a ridge classifier on the head's frozen-encoder features"


def loo_accuracy(features: np.ndarray, targets: np.ndarray, num_labels: int, multi_label: bool = False,
                 ridge: float = RIDGE) -> dict | None:
    """Exact leave-one-out accuracy of a one-vs-rest ridge classifier, or None below MIN_LABELS.

    targets: class indices (N,), or multi-hot (N, C) for multi-label. With the hat matrix
    H = X (X'X + lam I)^-1 X', the prediction for row i from a fit without row i is
    (yhat_i - H_ii y_i) / (1 - H_ii), so all N held-out predictions cost one fit.
    Single-label: share whose argmax is the label; multi-label: share whose label set (> 0.5) is exact.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets)
    n = len(x)
    if n < MIN_LABELS:
        return None
    t0 = time.perf_counter()
    if multi_label:
        onehot = (y > 0.5).astype(np.float64)
    else:
        onehot = np.zeros((n, num_labels))
        onehot[np.arange(n), y.astype(np.int64)] = 1.0
    mu = x.mean(axis=0)
    xc = np.hstack([x - mu, np.ones((n, 1))])  # centred features + a bias column
    lam = ridge * float((xc[:, :-1] ** 2).sum(axis=1).mean() or 1.0)
    reg = lam * np.eye(xc.shape[1])
    reg[-1, -1] = 1e-8 * lam  # the bias is (almost) not penalised
    gram_inv_xt = np.linalg.solve(xc.T @ xc + reg, xc.T)  # (d+1, n)
    fitted = xc @ (gram_inv_xt @ onehot)
    h = np.einsum("ij,ji->i", xc, gram_inv_xt)
    loo = (fitted - h[:, None] * onehot) / np.clip(1.0 - h, 1e-9, None)[:, None]
    if multi_label:
        correct = np.all((loo > 0.5) == (onehot > 0.5), axis=1)
    else:
        correct = loo.argmax(axis=1) == y
    return {"accuracy": float(correct.mean()), "folds": int(n), "method": "ridge-loo",
            "seconds": round(time.perf_counter() - t0, 4)}


class LearningCurve:
    """A project's curve.json: {"metric", "points": [{"version", "labels", "accuracy", "folds", "at"}]}."""

    def __init__(self, project_dir: Path) -> None:
        self.path = Path(project_dir) / "curve.json"

    def points(self) -> list[dict[str, Any]]:
        data = read_json(self.path, {}) or {}
        return list(data.get("points") or [])

    def append(self, version: str, labels: int, estimate: dict) -> None:
        """Record one round's estimate; a version already recorded is replaced (a retried round stays one point)."""
        pts = [p for p in self.points() if p.get("version") != version]
        pts.append({"version": version, "labels": int(labels), "accuracy": float(estimate["accuracy"]),
                    "folds": int(estimate["folds"]), "at": time.time()})
        atomic_write_json(self.path, {"metric": METRIC, "points": pts[-MAX_POINTS:]})
