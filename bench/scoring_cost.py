"""DISAL scoring time over plain inference time, and trajectory bytes per checkpoint.

    .venv/bin/python bench/scoring_cost.py --pool 10000 --all-pool 500 --ks 1,3,5,10 --out bench/out/scoring_cost.json
    .venv/bin/python bench/scoring_cost.py --quick      # a couple of minutes (make bench)

The logic lives in disal/bench/scoring_cost.py (importable; tests run it on a tiny model).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from disal.bench.scoring_cost import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
