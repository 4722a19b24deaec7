"""scripts.local_services.stop_process_group: returns once the group is gone, SIGKILLs only a stubborn one.

Why: it polled `killpg(pid, 0)`, which succeeds on the unreaped zombie leader, so every stop waited
its whole grace (Ctrl-C in `make demo` took 32 s; every e2e teardown 15 s per service).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from scripts.local_services import _group_running, _stop, stop_process_group  # noqa: E402

GRACE = 10.0


def _spawn(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)


def test_stopping_sleep_returns_long_before_the_grace_and_reaps_the_leader():
    proc = _spawn(["sleep", "30"])
    t0 = time.monotonic()
    assert stop_process_group(proc.pid, GRACE, proc) is True
    elapsed = time.monotonic() - t0
    assert elapsed < GRACE / 4, f"waited {elapsed:.2f}s of a {GRACE}s grace for a process that exits on SIGTERM"
    assert proc.returncode == -signal.SIGTERM  # it ended by our SIGTERM, not a SIGKILL, and is reaped
    assert not _group_running(proc.pid)


def test_a_group_member_that_is_not_our_child_is_stopped_without_waiting_the_grace():
    # sh leads the group and exits at once; the sleep it started stays in the group, reparented away from us
    proc = _spawn(["sh", "-c", "sleep 30 & echo $!"])
    sleep_pid = int(proc.stdout.readline())
    proc.wait(5)
    assert _group_running(proc.pid)  # the leader is gone, its group is not
    t0 = time.monotonic()
    assert stop_process_group(proc.pid, GRACE) is True
    assert time.monotonic() - t0 < GRACE / 4
    assert not _group_running(proc.pid)
    assert not _alive(sleep_pid)


def _alive(pid: int) -> bool:
    """Running and not a zombie (an orphan's zombie lingers where PID 1 does not reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace():
    proc = _spawn(["sh", "-c", "trap '' TERM; sleep 30"])
    time.sleep(0.2)  # let sh install the trap
    grace = 0.5
    t0 = time.monotonic()
    assert stop_process_group(proc.pid, grace, proc) is True
    assert time.monotonic() - t0 >= grace
    assert proc.wait(5) == -signal.SIGKILL


def test_stopping_a_group_that_is_gone_says_so():
    proc = _spawn(["true"])
    proc.wait(5)
    assert stop_process_group(proc.pid, GRACE, proc) is False
    _stop(proc)  # an exited Popen is left alone
