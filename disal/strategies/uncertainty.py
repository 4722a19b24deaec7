"""Uncertainty baselines as pure functions over probabilities: least confidence, margin, entropy, BALD.

For multi-label heads (independent sigmoids) each class is a Bernoulli variable; the scores sum the
per-class uncertainty, which is the usual multi-label reading of each criterion.
"""

from __future__ import annotations

import numpy as np

from .base import ScoringInputs, Strategy

_EPS = 1e-12


def _bernoulli_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def least_confidence_scores(probs: np.ndarray, multi_label: bool = False) -> np.ndarray:
    """1 - max_c p(c|x): high when the top class is not confident."""
    if multi_label:
        return (1.0 - np.maximum(probs, 1 - probs)).sum(axis=1)
    return 1.0 - probs.max(axis=1)


def margin_scores(probs: np.ndarray, multi_label: bool = False) -> np.ndarray:
    """Negative gap between the two most likely classes ("breaking ties"); higher = closer call."""
    if multi_label:
        return -np.abs(2 * probs - 1).min(axis=1)
    if probs.shape[1] < 2:
        return np.zeros(len(probs))
    top2 = np.partition(probs, -2, axis=1)[:, -2:]
    return -(top2[:, 1] - top2[:, 0])


def entropy_scores(probs: np.ndarray, multi_label: bool = False) -> np.ndarray:
    """Shannon entropy of the predictive distribution."""
    if multi_label:
        return _bernoulli_entropy(probs).sum(axis=1)
    p = np.clip(probs, _EPS, 1.0)
    return -(probs * np.log(p)).sum(axis=1)


def bald_scores(mc_probs: np.ndarray, multi_label: bool = False) -> np.ndarray:
    """Mutual information between the label and the weights, estimated from T MC-dropout samples.

    BALD = H[mean_t p_t] - mean_t H[p_t] (Houlsby et al. 2011; Gal et al. 2017).
    """
    mean = mc_probs.mean(axis=0)
    if multi_label:
        return _bernoulli_entropy(mean).sum(axis=1) - _bernoulli_entropy(mc_probs).sum(axis=2).mean(axis=0)
    h_mean = -(mean * np.log(np.clip(mean, _EPS, 1.0))).sum(axis=1)
    h_each = -(mc_probs * np.log(np.clip(mc_probs, _EPS, 1.0))).sum(axis=2).mean(axis=0)
    return np.maximum(h_mean - h_each, 0.0)


class LeastConfidence(Strategy):
    name = "least_confidence"

    def score(self, inputs: ScoringInputs) -> np.ndarray:
        inputs.require("probs", strategy=self.name)
        return least_confidence_scores(inputs.probs, inputs.multi_label)


class Margin(Strategy):
    name = "margin"

    def score(self, inputs: ScoringInputs) -> np.ndarray:
        inputs.require("probs", strategy=self.name)
        return margin_scores(inputs.probs, inputs.multi_label)


class Entropy(Strategy):
    name = "entropy"

    def score(self, inputs: ScoringInputs) -> np.ndarray:
        inputs.require("probs", strategy=self.name)
        return entropy_scores(inputs.probs, inputs.multi_label)


class BALD(Strategy):
    name = "bald"

    def score(self, inputs: ScoringInputs) -> np.ndarray:
        inputs.require("mc_probs", strategy=self.name)
        return bald_scores(inputs.mc_probs, inputs.multi_label)
