"""The feature cache shared by the web process and the job workers (one file per encoder in MODEL_DIR):
what one process saves, another finds, and no process's save drops another's rows."""

from __future__ import annotations

import numpy as np

from disal.state import FeatureCache


def vec(x: float) -> np.ndarray:
    return np.full(4, x, dtype=np.float32)


def test_rows_saved_by_a_worker_are_found_by_the_web_process_and_no_save_drops_rows(tmp_path):
    web, worker_a, worker_b = (FeatureCache(tmp_path, "enc") for _ in range(3))  # three processes, one file
    worker_a.put([1, 2], ["h1", "h2"], np.stack([vec(1), vec(2)]))
    worker_a.save()
    found, missing = web.lookup([1, 2, 3], ["h1", "h2", "h3"])
    assert sorted(found) == [1, 2] and missing == [2]
    np.testing.assert_array_equal(found[2], vec(2))
    worker_b.put([3], ["h3"], vec(3)[None])
    worker_b.save()  # worker_b never loaded rows 1-2: they must survive its save
    worker_a.put([4], ["h4"], vec(4)[None])
    worker_a.save()
    fresh = FeatureCache(tmp_path, "enc")
    found, missing = fresh.lookup([1, 2, 3, 4], ["h1", "h2", "h3", "h4"])
    assert sorted(found) == [1, 2, 3, 4] and missing == []
    # a changed text is still a miss, whatever the file holds
    assert fresh.lookup([1], ["changed"])[1] == [0]
