"""The backend under gunicorn, started by the test suite, on the session's real Label Studio (the
`label_studio` fixture lives in tests/conftest.py: tests/e2e and tests/browser share one server)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.local_services import BackendServer, free_port  # noqa: E402

from .helpers import BASIC_AUTH  # noqa: E402,F401  (fixtures below use it)


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def backend(tmp_path_factory, label_studio):
    """The packaged MiniLM encoder, basic auth on, uncertainty sampling on."""
    server = BackendServer(
        tmp_path_factory.mktemp("model_dir"), free_port(), label_studio,
        extra_env={"BASIC_AUTH_USER": BASIC_AUTH[0], "BASIC_AUTH_PASS": BASIC_AUTH[1],
                   "USE_UNCERTAINTY_SAMPLING": "true", "LOG_LEVEL": "INFO"},
    )
    server.start()
    yield server
    server.stop()
