"""A job worker process: `python -m disal.worker` (`make worker`), and the ones gunicorn starts.

A worker loads the encoders, takes `disal.project_job` tasks from the durable queue
(disal.job_queue) and runs the training job (disal.training_job) for them. Start as many as you
like, on any machine that shares MODEL_DIR, with the same REDIS_URL; without REDIS_URL they share
the SQLite queue in MODEL_DIR, so only on this machine.

`EmbeddedWorkers` is what gunicorn.conf.py uses: WORKERS worker processes beside the web process,
restarted when one dies, stopped with it. With `--parent PID` a worker exits when that process
is gone, so a web process killed with -9 leaves no orphan behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("disal.worker")
ROOT = Path(__file__).resolve().parents[1]


def _exit_with_parent(parent: int) -> None:
    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                log.warning("worker %d: its web process %d is gone; exiting", os.getpid(), parent)
                os._exit(0)

    threading.Thread(target=watch, name="disal-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="disal-backend job worker (see README 'Workers')")
    parser.add_argument("--parent", type=int, default=None, help="exit when this process id is gone")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # model.py lives at the repository root (Label Studio's convention)
    from disal.config import ConfigError, Settings
    from disal.logs import configure_logging

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        sys.stderr.write(f"disal-worker: configuration error: {exc}\n")
        return 2
    configure_logging(settings.log_level)
    if args.parent:
        _exit_with_parent(args.parent)
    import torch

    from disal.job_queue import JobQueue
    from model import DisalModel

    torch.set_num_threads(settings.effective_torch_threads())
    model = DisalModel(settings, resume=False)
    queue = JobQueue(settings, runner=model.job, metrics=model.metrics)
    log.info("worker %s starting (%d torch threads, jobs in %s)", queue.worker_id, torch.get_num_threads(),
             queue.backend)
    try:
        model.job.warm_up()
    except Exception as exc:  # noqa: BLE001 - the first job loads the encoder again and reports why
        log.error("worker warm-up failed: %s", exc)
    queue.run_worker()
    return 0


class EmbeddedWorkers:
    """WORKERS worker processes beside gunicorn's web process (gunicorn.conf.py's hooks)."""

    #: a worker stopped by a signal (exit 0, or killed by SIGTERM / SIGINT) is restarted only after this wait:
    #: Ctrl-C or a SIGTERM to the process group reaches the workers before gunicorn's on_exit hook says the
    #: server is stopping, and a worker started then would only load its models to be stopped again
    SIGNALLED_RESTART_WAIT_S = 5.0

    def __init__(self, count: int, env: dict | None = None, command: list[str] | None = None) -> None:
        self.count = count
        self.env = dict(env or os.environ)
        self.command = command or [sys.executable, "-m", "disal.worker", "--parent", str(os.getpid())]
        self.procs: list[subprocess.Popen | None] = [None] * count
        self._stopping = threading.Event()
        self._watch: threading.Thread | None = None
        self._exited_at: dict[int, float] = {}
        self._lock = threading.Lock()  # a restart and stop() never interleave: no worker started after stop

    def _spawn(self, i: int) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            self.procs[i] = subprocess.Popen(self.command, cwd=str(ROOT), env=self.env)
        log.info("started job worker %d/%d (pid %d)", i + 1, self.count, self.procs[i].pid)

    def start(self) -> "EmbeddedWorkers":
        for i in range(self.count):
            self._spawn(i)
        if self.count:
            self._watch = threading.Thread(target=self._supervise, name="disal-workers", daemon=True)
            self._watch.start()
        return self

    def _supervise(self) -> None:
        while not self._stopping.wait(0.5):
            self.check()

    def check(self) -> None:
        """Restart every worker that exited: a crash at once, one stopped by a signal after
        SIGNALLED_RESTART_WAIT_S unless the server is stopping by then (shutdown is not a fault)."""
        for i, p in enumerate(self.procs):
            if p is None or p.poll() is None or self._stopping.is_set():
                continue
            signalled = p.returncode in (0, -signal.SIGTERM, -signal.SIGINT)
            if not signalled:
                log.error("job worker pid %d exited with %s; starting another (its job, if any, runs "
                          "again once its lease ends)", p.pid, p.returncode)
            else:
                first = self._exited_at.setdefault(p.pid, time.time())
                if time.time() - first < self.SIGNALLED_RESTART_WAIT_S:
                    continue
                log.warning("job worker pid %d was stopped (exit %s) while the server runs; starting another",
                            p.pid, p.returncode)
            self._exited_at.pop(p.pid, None)
            self._spawn(i)

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stopping.set()
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + timeout
        for p in self.procs:
            if p is None:
                continue
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    raise SystemExit(main())
