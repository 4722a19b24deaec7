"""Durable jobs: an annotation event becomes a huey task that a worker process runs.

The web process (`JobQueue.submit`) appends the event's request to the project's pending list in the
job store (disal.job_store) and enqueues `disal.project_job(project)` in huey. Any worker process
(`python -m disal.worker`, started beside gunicorn or with `make worker`) takes the task, claims the
project's lease and every pending request, runs ONE training job for all of them, and releases.

Why huey: it has SQLite storage (the embedded default: jobs persist in MODEL_DIR/jobs and survive
kill -9, no server to install) and Redis storage (REDIS_URL: workers on any machines) behind one
API, with delayed tasks for retries. RQ, which Label Studio uses, needs Redis always.

Semantics (tests/reliability/test_durable_jobs.py):
- one job per project at a time: the store's lease, renewed while the job runs, expires after
  JOB_LEASE_S when its worker dies;
- events during a job coalesce: they wait as pending requests; the job's end enqueues ONE follow-up;
- a job that Label Studio failed (down, 5xx, refused, no credentials yet) puts its requests back
  and is retried after 1, 2, 4 ... s (at most RETRY_MAX_DELAY_S) until it succeeds; any other
  failure (a bug, a project with no readable input) is logged, shown in /health and not retried;
- a job killed mid-way is run again: its requests stay recorded as running, and the sweeper of
  every worker (every few seconds) re-enqueues projects whose lease ran out;
- versions are written whole before they serve (disal.state), so a killed job leaves nothing half
  written behind.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from typing import Any, Callable

import httpx

from .config import Settings
from .job_store import JobStore, RedisJobStore, SqliteJobStore
from .jobs import JobContext, JobRequest, Runner
from .labelstudio import LabelStudioError
from .pool_shards import ShardBoard, ShardHelper

log = logging.getLogger(__name__)

TASK_NAME = "disal.project_job"
WORKER_THREADS = 2  # jobs one worker process runs at once (for different projects)
WORKER_ALIVE_S = 15.0  # a worker whose heartbeat is older than this is reported dead
HEARTBEAT_S = 2.0
SWEEP_S = 3.0
SHARD_POLL_S = 0.5  # how often a worker looks for other jobs' shard boards (disal.pool_shards)
IDLE = {"state": "idle", "progress": {"done": 0, "total": 0}}


def retryable(exc: BaseException) -> bool:
    """Failures that another try can fix without a code change: Label Studio down, refusing, busy."""
    return isinstance(exc, (LabelStudioError, httpx.TransportError, ConnectionError, TimeoutError))


def make_huey(settings: Settings):
    from huey import RedisHuey, SqliteHuey

    if settings.redis_url:
        return RedisHuey(settings.redis_prefix, url=settings.redis_url, results=False)
    folder = settings.model_dir / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    return SqliteHuey("disal", filename=str(folder / "huey.sqlite3"), results=False)


def make_store(settings: Settings) -> JobStore:
    if settings.redis_url:
        return RedisJobStore(settings.redis_url, prefix=settings.redis_prefix)
    return SqliteJobStore(settings.model_dir / "jobs" / "store.sqlite3")


class JobQueue:
    """The web side (`submit`, `status`, `overview`) and the worker side (`execute`) of durable jobs."""

    def __init__(self, settings: Settings, runner: Runner | None = None, metrics: Any = None) -> None:
        self.settings = settings
        self.huey = make_huey(settings)
        self.store = make_store(settings)
        self.runner = runner
        self.metrics = metrics  # the worker's Metrics: published with its heartbeat for the web's /metrics
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:4]}"
        self.task = self.huey.task(name=TASK_NAME)(self._task)
        encode_shard = getattr(runner, "encode_shard", None)  # the training job encodes other jobs' shards
        self.shard_helper = (ShardHelper(self.store, settings.model_dir, self.worker_id, encode_shard,
                                         self.store.lease_owner, self._shard_done) if encode_shard else None)
        self._current: dict[str, Any] = {}  # owner -> project, what this worker runs now
        self._counts = {"jobs_run": 0, "jobs_failed": 0, "retries": 0, "shards_encoded": 0}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    @property
    def backend(self) -> str:
        return self.store.backend

    # -- the web side ----------------------------------------------------------------------------
    def submit(self, project_id: int, request: JobRequest) -> str:
        """Record the request and return at once: 'queued' (a task is enqueued) or 'coalesced'.

        A coalesced request needs no task of its own: either a task for the project is already
        waiting, or a job runs and its end enqueues the follow-up (the store decides atomically).
        """
        outcome = self.store.add(int(project_id), {**request.to_dict(), "at": time.time()})
        if outcome == "coalesced":
            self.store.incr(int(project_id), "coalesced_events")
        else:
            self.task(int(project_id))
        return outcome

    def depth(self) -> dict:
        """Tasks in huey's queue, tasks scheduled (retries), projects with requests waiting."""
        waiting = sum(1 for p in self.store.projects() if self.store.pending_count(p))
        return {"queued_tasks": self.huey.pending_count(), "scheduled_tasks": self.huey.scheduled_count(),
                "projects_waiting": waiting}

    def workers(self) -> dict[str, dict]:
        now = time.time()
        out = {}
        for wid, info in self.store.workers().items():
            alive = now - float(info.get("seen", 0)) < WORKER_ALIVE_S
            if not alive and now - float(info.get("seen", 0)) > 86400:
                continue  # a day-old dead worker is history, not news
            out[wid] = {k: v for k, v in info.items() if k != "metrics"} | {"alive": alive}
        return out

    def overview(self) -> dict:
        """/health's `job_queue`: the backend, the depth, and every worker's jobs."""
        return {"backend": self.backend, **self.depth(), "workers": self.workers()}

    def metric_snapshots(self) -> list[list[dict]]:
        """Every worker's published metrics, oldest heartbeat first (the newest gauge value wins)."""
        rows = sorted(self.store.workers().values(), key=lambda w: float(w.get("seen", 0)))
        return [w["metrics"] for w in rows if w.get("metrics")]

    def status(self, project_id: int) -> dict:
        """The project's job as /health shows it (the same keys as the in-process JobManager's)."""
        pid = int(project_id)
        st = {**IDLE, "jobs_run": 0, "jobs_failed": 0, "coalesced_events": 0, "last_error": None,
              "last_job": None, "note": None, **self.store.status(pid)}
        st.update(self.store.counters(pid))
        owner = self.store.lease_owner(pid)
        waiting = self.store.pending_count(pid)
        if owner is None and (st["state"] not in ("idle", "retrying") or self.store.has_running(pid)):
            # its worker died mid-job (or is being replaced): the sweeper runs it again
            st["state"], st["note"] = "queued", "interrupted: its worker stopped; it runs again"
        if st["state"] == "idle" and (waiting or owner is not None):
            st["state"] = "queued"  # waiting for a worker, or claimed and about to report its phase
        st["worker"] = owner
        st["followup_queued"] = bool(waiting and owner)
        st["pending"] = f"{waiting} request(s)" if waiting else None
        if owner is None:
            st["running"] = None
        return st

    def projects(self) -> list[int]:
        return self.store.projects()

    def busy(self, project_id: int) -> bool:
        pid = int(project_id)
        return bool(self.store.pending_count(pid) or self.store.lease_owner(pid))

    def wait_idle(self, project_id: int, timeout: float = 60.0) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.busy(project_id) and self.status(project_id)["state"] in ("idle",):
                return True
            time.sleep(0.2)
        return False

    def shutdown(self) -> None:
        self._stop.set()
        self.store.close()

    # -- the worker side -------------------------------------------------------------------------
    def _task(self, project_id: int) -> str:
        return self.execute(int(project_id))

    def _owner(self) -> str:
        return f"{self.worker_id}:{threading.current_thread().name}"

    def execute(self, pid: int) -> str:
        """Run the project's pending requests as one job, if no other worker runs one now."""
        if self.runner is None:
            raise RuntimeError("this JobQueue has no runner: only worker processes execute jobs")
        owner, lease_s = self._owner(), self.settings.job_lease_s
        self._debounce(pid)
        requests = self.store.claim(pid, owner, lease_s)
        if requests is None:
            return "busy"  # the running job's end enqueues the follow-up for what waits
        if not requests:
            self.store.finish(pid, owner)
            return "nothing pending"
        request = JobRequest.merged([JobRequest.from_dict(r) for r in requests])
        desc = request.describe()
        stop, lost = threading.Event(), threading.Event()
        renewing = threading.Thread(target=self._renew, args=(pid, owner, lease_s, stop, lost), daemon=True,
                                    name=f"disal-lease-{pid}")
        with self._lock:
            self._current[owner] = pid
        renewing.start()
        publisher = _StatusPublisher(self.store, pid)
        publisher({"state": "fetching" if request.train or request.initial else "scoring",
                   "progress": {"done": 0, "total": 0}, "note": None, "running": desc, "started": time.time()},
                  force=True)
        ctx = JobContext(publisher, lambda: self.store.has_pending_train(pid),
                         lambda **board: self.open_shards(pid, owner, **board))
        t0 = time.time()
        log.info("project %s: job started on %s: %s (%d event requests)", pid, self.worker_id, desc, len(requests))
        outcome = "ok"
        try:
            summary = self.runner(pid, request, ctx) or {}
        except Exception as exc:  # noqa: BLE001 - a failed job must never kill the worker
            outcome = self._failed(pid, owner, requests, desc, exc, t0)
        else:
            elapsed = time.time() - t0
            log.info("project %s: job done in %.2fs on %s: %s", pid, elapsed, self.worker_id,
                     summary.get("outcome", "ok"))
            facts = {k: summary[k] for k in ("training_on_annotation", "webhook_auth_ok") if k in summary}
            publisher({**IDLE, **facts, "running": None, "attempt": 0, "retry_at": None, "last_error": None,
                       "last_job": {"at": time.time(), "job": desc, "seconds": round(elapsed, 3), **summary}},
                      force=True)
            self.store.incr(pid, "jobs_run")
            self._count("jobs_run")
            if self.metrics:
                self.metrics.jobs.labels(str(pid), "ok").inc()
                self.metrics.phase_seconds.labels("total").observe(elapsed)
            waiting = self.store.finish(pid, owner)
            if lost.is_set():
                log.warning("project %s: this job's lease ran out while it ran (another worker may have taken "
                            "its requests over; jobs are idempotent)", pid)
            if waiting > 0:  # events that arrived meanwhile: ONE follow-up for all of them
                log.info("project %s: %d request(s) arrived during the job: follow-up queued", pid, waiting)
                self.task(pid)
        finally:
            stop.set()
            with self._lock:
                self._current.pop(owner, None)
            self.publish_heartbeat()
        return outcome

    def worker_alive(self, worker: str) -> bool:
        return bool(self.workers().get(worker, {}).get("alive"))

    def open_shards(self, pid: int, owner: str, **board: Any) -> ShardBoard | None:
        """Post the job's pool as a shard board when other worker processes are alive to take shards."""
        helpers = [w for w, info in self.workers().items() if w != self.worker_id and info["alive"]]
        if not helpers:
            return None
        out = ShardBoard.post(self.store, self.settings.model_dir, project=pid, worker=self.worker_id, owner=owner,
                              worker_alive=self.worker_alive, **board)
        log.info("project %s: pool encoding sharded: %d shards of up to %d on board %s, for this worker and %d "
                 "other live worker(s)", pid, len(out.shards), board.get("size", 0), out.board, len(helpers))
        return out

    def help_with_shards(self) -> None:
        """The shard helper's beat (a background thread of every worker process)."""
        if self.shard_helper:
            self.shard_helper.help()

    def _shard_done(self) -> None:
        """Count a shard encoded for another job, and publish it at once: the web's /metrics and /health
        read heartbeats, and the job may end its round before the next timed beat."""
        self._count("shards_encoded")
        if self.metrics:
            self.metrics.shards.inc()
        self.publish_heartbeat()

    def _debounce(self, pid: int) -> None:
        """Wait until no event arrived for TRAIN_DEBOUNCE_S (at most TRAIN_DEBOUNCE_MAX_S since the
        first): a burst of events (a bulk import, several annotators at once) trains once, on all of
        its labels, instead of once per job-length slice of the burst."""
        s = self.settings
        while s.train_debounce_s > 0:
            span = self.store.pending_span(pid)
            if span is None:
                return
            now = time.time()
            quiet_for, waited = now - span[1], now - span[0]
            if quiet_for >= s.train_debounce_s or waited >= s.train_debounce_max_s:
                return
            time.sleep(min(s.train_debounce_s - quiet_for, 0.25))

    def _failed(self, pid: int, owner: str, requests: list[dict], desc: str, exc: Exception, t0: float) -> str:
        reason = f"{type(exc).__name__}: {exc}"
        status = self.store.status(pid)
        self.store.incr(pid, "jobs_failed")
        self._count("jobs_failed")
        if self.metrics:
            self.metrics.jobs.labels(str(pid), "failed").inc()
            self.metrics.errors.labels("job").inc()
        error = {"at": time.time(), "job": desc, "error": reason}
        if retryable(exc):
            attempt = int(status.get("attempt") or 0) + 1
            delay = min(self.settings.retry_max_delay_s, 2.0 ** (attempt - 1))
            self.store.update_status(pid, {"state": "retrying", "progress": IDLE["progress"], "attempt": attempt,
                                           "retry_at": time.time() + delay, "last_error": error, "running": None,
                                           "note": f"retry {attempt} in {delay:.0f}s: {reason}"})
            self.store.finish(pid, owner, requeue=requests)
            self.store.incr(pid, "retries")
            self._count("retries")
            self.task.schedule(args=(pid,), delay=delay)
            log.error("project %s: job failed after %.1fs: %s; retry %d in %.0fs (the previous version keeps "
                      "serving; the requests wait)", pid, time.time() - t0, reason, attempt, delay)
            return "retrying"
        self.store.update_status(pid, {**IDLE, "attempt": 0, "retry_at": None, "last_error": error, "running": None,
                                       "note": None})
        waiting = self.store.finish(pid, owner)
        log.error("project %s: job failed after %.1fs: %s; not retried (not a Label Studio failure); the previous "
                  "version keeps serving\n%s", pid, time.time() - t0, reason, traceback.format_exc(limit=6))
        if waiting > 0:
            self.task(pid)
        return "failed"

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def _renew(self, pid: int, owner: str, lease_s: float, stop: threading.Event, lost: threading.Event) -> None:
        while not stop.wait(lease_s / 5):
            try:
                if not self.store.renew(pid, owner, lease_s):
                    lost.set()
                    log.error("project %s: lost its job lease (the store restarted or another worker took over)", pid)
            except Exception as exc:  # noqa: BLE001 - a store hiccup (Redis restarting): try again next beat
                log.warning("project %s: could not renew the job lease: %s", pid, exc)

    def publish_heartbeat(self) -> None:
        from .metrics import snapshot

        with self._lock:
            info = {"host": socket.gethostname(), "pid": os.getpid(), "running": sorted(set(self._current.values())),
                    **self._counts}
        runtime = getattr(self.runner, "encoder_runtime", None)
        if callable(runtime):
            info["encoder_runtime"] = runtime()
        if self.metrics:
            info["metrics"] = snapshot(self.metrics.registry)
        self.store.heartbeat(self.worker_id, info)

    def sweep(self) -> list[int]:
        """Enqueue a task for every project whose requests wait with no live job: a job killed mid-way,
        a task lost with a restarted Redis, an event recorded just before its web process died."""
        now, out = time.time(), []
        for pid in self.store.needs_work():
            st = self.store.status(pid)
            if st.get("state") == "retrying" and float(st.get("retry_at") or 0) > now:
                continue  # a scheduled retry takes it
            span = self.store.pending_span(pid)
            if not self.store.has_running(pid) and span and now - span[0] < self.settings.train_debounce_max_s + 5:
                continue  # young requests: their task is waiting for a thread, or debouncing
            self.task(pid)
            out.append(pid)
        if out:
            log.info("sweeper: re-enqueued the jobs of projects %s (no live worker held them)", out)
        return out

    def background(self, every: float, fn: Callable[[], Any], name: str) -> threading.Thread:
        def loop() -> None:
            while not self._stop.wait(every):
                try:
                    fn()
                except Exception as exc:  # noqa: BLE001 - Redis restarting: keep going
                    log.warning("%s: %s", name, exc)

        t = threading.Thread(target=loop, name=name, daemon=True)
        t.start()
        return t

    def run_worker(self) -> None:
        """Block running huey's consumer, with the heartbeat and the sweeper beside it."""
        for first in (self.publish_heartbeat, self.sweep):  # the store may be restarting: the loops retry
            try:
                first()
            except Exception as exc:  # noqa: BLE001
                log.warning("worker %s: the job store does not answer yet: %s", self.worker_id, exc)
        self.background(HEARTBEAT_S, self.publish_heartbeat, "disal-heartbeat")
        self.background(SWEEP_S, self.sweep, "disal-sweeper")
        if self.shard_helper:
            self.background(SHARD_POLL_S, self.help_with_shards, "disal-shards")
        consumer = self.huey.create_consumer(workers=WORKER_THREADS, worker_type="thread", periodic=False,
                                             initial_delay=0.05, max_delay=0.5, backoff=1.15,
                                             check_worker_health=True)
        log.info("worker %s: taking jobs from %s (%d threads)", self.worker_id, self.backend, WORKER_THREADS)
        try:
            consumer.run()
        finally:
            self._stop.set()


class _StatusPublisher:
    """JobContext's `update`: writes the job's phase and progress to the store, at most every 0.5 s
    (progress comes per encoded batch; a Redis or SQLite write each time would cost more than it tells)."""

    def __init__(self, store: JobStore, pid: int, every: float = 0.5) -> None:
        self.store, self.pid, self.every = store, pid, every
        self._last = 0.0
        self._waiting: dict = {}

    def __call__(self, fields: dict, force: bool = False) -> None:
        self._waiting.update(fields)
        now = time.time()
        if force or "state" in fields or now - self._last >= self.every:
            try:
                self.store.update_status(self.pid, self._waiting)
            except Exception as exc:  # noqa: BLE001 - /health lags a moment; the job goes on
                log.warning("project %s: could not publish the job's progress: %s", self.pid, exc)
                return
            self._waiting, self._last = {}, now
