"""EmbeddedWorkers (disal.worker): gunicorn's job-worker supervisor, on real child processes.

Why: Ctrl-C or a SIGTERM to the process group stops the workers before gunicorn's on_exit hook
tells the supervisor, which then logged "exited with 0; starting another" and loaded a new worker
during every shutdown. A crash is still restarted at once; a worker stopped by a signal while the
server goes on is restarted after a short wait."""

from __future__ import annotations

import logging
import signal
import sys
import time

import pytest

from disal.worker import EmbeddedWorkers

SLEEPER = [sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); "
                                 "time.sleep(120)"]


@pytest.fixture
def workers(monkeypatch):
    monkeypatch.setattr(EmbeddedWorkers, "SIGNALLED_RESTART_WAIT_S", 1.0)
    w = EmbeddedWorkers(1, command=SLEEPER)
    yield w
    w.stop(timeout=5)


def test_a_crash_is_restarted_at_once_and_says_so(workers, caplog):
    workers._spawn(0)
    first = workers.procs[0]
    first.kill()
    first.wait(10)
    with caplog.at_level(logging.INFO, "disal.worker"):
        workers.check()
    assert workers.procs[0] is not first and workers.procs[0].poll() is None
    assert f"job worker pid {first.pid} exited with -9; starting another" in caplog.text


def test_a_signalled_stop_during_shutdown_starts_nothing_and_logs_no_error(workers, caplog):
    workers._spawn(0)
    first = workers.procs[0]
    first.send_signal(signal.SIGTERM)  # as a SIGTERM to the process group does, before on_exit runs
    first.wait(10)
    with caplog.at_level(logging.INFO, "disal.worker"):
        workers.check()  # within the wait: not restarted yet
        assert workers.procs[0] is first
        workers.stop(timeout=5)  # gunicorn's on_exit
        time.sleep(1.2)
        workers.check()
    assert workers.procs[0] is first and first.returncode in (0, -signal.SIGTERM)  # handled, or before its handler
    assert "starting another" not in caplog.text and not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_signalled_stop_while_the_server_runs_is_restarted_after_the_wait(workers, caplog):
    workers._spawn(0)
    first = workers.procs[0]
    first.send_signal(signal.SIGTERM)
    first.wait(10)
    with caplog.at_level(logging.INFO, "disal.worker"):
        workers.check()
        assert workers.procs[0] is first
        time.sleep(1.2)
        workers.check()
    assert workers.procs[0] is not first and workers.procs[0].poll() is None
    assert f"job worker pid {first.pid} was stopped (exit {first.returncode}) while the server runs; starting another" \
        in caplog.text
