"""Random sampling: the baseline every other strategy must beat."""

from __future__ import annotations

import numpy as np

from .base import ScoringInputs, Selection, Strategy, check_selection_args, seeded_order


class RandomSampling(Strategy):
    """Uniform random order drawn from the seed (scores are the random keys themselves)."""

    name = "random"

    def score(self, inputs: ScoringInputs) -> np.ndarray:
        return np.zeros(len(inputs))  # all tied: the seeded tie-break is the random order

    def select(self, inputs: ScoringInputs, batch_size: int, seed: int = 0) -> Selection:
        check_selection_args(self.name, inputs, batch_size)
        order = seeded_order(np.zeros(len(inputs)), seed, inputs.ids)
        # Expose the random order as a score so queues built from scores keep it.
        scores = np.empty(len(inputs))
        scores[order] = np.linspace(1.0, 0.0, len(inputs))
        ordered = inputs.ids[order]
        return Selection(self.name, inputs.ids, scores, ordered[: min(batch_size, len(ordered))], ordered)
