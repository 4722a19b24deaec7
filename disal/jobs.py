"""Background jobs: one worker thread per project, one job at a time, bursts coalesced.

Why: Label Studio sends webhooks with a 1 s timeout and never retries them, and people annotate in
bursts. The web process only records what is wanted (`submit`, microseconds, never blocks on a
job); the project's worker thread runs it. Everything that arrives while a job runs merges into ONE
pending request, which runs after the current job. A job that raises is logged with its reason,
counted, shown in /health, and the worker carries on: the previous model version keeps serving
(nothing is lost: annotations live in Label Studio and are fetched again by the next job).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from .metrics import Metrics

log = logging.getLogger(__name__)

# "fetching": reading tasks from Label Studio (n/N tasks); "encoding": the frozen encoder embeds
# texts (n/N texts); at a cold start this is most of the job,
# and a first queue over the texts encoded so far is pushed while it goes on (disal.training_job)
STATES = ("idle", "queued", "fetching", "encoding", "training", "scoring", "pushing", "tidying")


@dataclass
class JobRequest:
    """What a project's next job must do; merging two requests keeps everything either asked for."""

    train: bool = False  # fetch labels and retrain (annotation events, START_TRAINING)
    force: bool = False  # retrain even with fewer new labels than MIN_ANNOTATIONS_TO_TRAIN
    initial: bool = False  # build the first queue if the project has no version yet (/setup)
    new_task_ids: set[int] = field(default_factory=set)  # TASKS_CREATED: score these with the current model
    new_tasks: dict[int, dict] = field(default_factory=dict)  # their payloads (id -> task), when the event had them
    reasons: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.reasons = Counter(self.reasons)  # callers pass plain dicts; merging must add counts

    def merge(self, other: "JobRequest") -> None:
        self.train |= other.train
        self.force |= other.force
        self.initial |= other.initial
        self.new_task_ids |= other.new_task_ids
        self.new_tasks.update(other.new_tasks)
        self.reasons.update(other.reasons)

    def to_dict(self) -> dict:
        """JSON-able, for the durable queue (disal.job_queue): ids as ints, reasons as a plain dict."""
        return {"train": self.train, "force": self.force, "initial": self.initial,
                "new_task_ids": sorted(self.new_task_ids),
                "new_tasks": {str(k): v for k, v in self.new_tasks.items()}, "reasons": dict(self.reasons)}

    @classmethod
    def from_dict(cls, data: dict) -> "JobRequest":
        return cls(train=bool(data.get("train")), force=bool(data.get("force")), initial=bool(data.get("initial")),
                   new_task_ids={int(i) for i in data.get("new_task_ids") or ()},
                   new_tasks={int(k): v for k, v in (data.get("new_tasks") or {}).items()},
                   reasons=dict(data.get("reasons") or {}))

    @classmethod
    def merged(cls, requests: "list[JobRequest]") -> "JobRequest":
        out = cls()
        for r in requests:
            out.merge(r)
        return out

    def describe(self) -> str:
        parts = ["train" + ("(forced)" if self.force else "")] if self.train else []
        if self.initial:
            parts.append("initial")
        if self.new_task_ids:
            parts.append(f"score {len(self.new_task_ids)} new tasks")
        why = ", ".join(f"{k} x{v}" for k, v in sorted(self.reasons.items()))
        return f"{' + '.join(parts) or 'nothing'} ({why})"


class JobContext:
    """Handed to the runner: report the phase and progress counts that /health shows.

    `update(fields)` records them where /health reads them: the thread's info dict (in-process jobs)
    or the job store (a worker process, disal.job_queue). `train_pending()` says whether a retrain
    waits behind this job.
    """

    def __init__(self, update: Callable[[dict], None], train_pending: Callable[[], bool],
                 open_shards: Callable[..., Any] | None = None) -> None:
        self._update = update
        self._train_pending = train_pending
        self._open_shards = open_shards

    def set_state(self, state: str, done: int = 0, total: int = 0, note: str | None = None) -> None:
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        fields: dict[str, Any] = {"state": state, "progress": {"done": int(done), "total": int(total)},
                                  "phase_started": time.time()}
        if note is not None:
            fields["note"] = note
        self._update(fields)

    def progress(self, done: int, total: int) -> None:
        self._update({"progress": {"done": int(done), "total": int(total)}})

    def note(self, text: str) -> None:
        self._update({"note": text})

    def train_pending(self) -> bool:
        """True when a retrain waits behind this job (an annotation arrived meanwhile).

        A long progressive first round asks this between encoding chunks: once it has pushed a
        queue it stops early, so the waiting round runs now on the features cached so far instead
        of after the whole pool is encoded (the cache persists per task id; encoding resumes there).
        """
        return self._train_pending()

    def open_shards(self, **board: Any) -> Any:
        """A posted disal.pool_shards.ShardBoard for this job's pool, or None when no other worker
        process is alive to take shards (in-process jobs, a lone worker): then the job encodes alone."""
        return self._open_shards(**board) if self._open_shards else None


Runner = Callable[[int, JobRequest, JobContext], dict]


class ProjectWorker:
    """The thread that runs one project's jobs, one at a time."""

    def __init__(self, project_id: int, runner: Runner, metrics: Metrics | None, on_change: Callable[[], None]) -> None:
        self.project_id = project_id
        self.runner = runner
        self.metrics = metrics
        self._on_change = on_change
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.pending: JobRequest | None = None
        self.running: JobRequest | None = None
        self.stopping = False
        self.info: dict[str, Any] = {"state": "idle", "progress": {"done": 0, "total": 0}, "jobs_run": 0,
                                     "jobs_failed": 0, "coalesced_events": 0, "last_error": None, "last_job": None,
                                     "note": None}
        self.thread = threading.Thread(target=self._loop, name=f"disal-project-{project_id}", daemon=True)
        self.thread.start()

    def _update(self, fields: dict) -> None:
        with self.lock:
            self.info.update(fields)

    def _train_pending(self) -> bool:
        with self.lock:
            return self.pending is not None and self.pending.train

    def submit(self, request: JobRequest) -> str:
        """Record the request and return at once: 'queued' or 'coalesced' (merged into a pending one)."""
        with self.cond:
            if self.pending is None:
                self.pending = request
                outcome = "queued"
            else:
                self.pending.merge(request)
                self.info["coalesced_events"] += 1
                outcome = "coalesced"
            if self.running is None:
                self.info["state"] = "queued"
            self.cond.notify()
        self._on_change()
        return outcome

    def snapshot(self) -> dict:
        with self.lock:
            out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.info.items()}
            out["followup_queued"] = self.pending is not None and self.running is not None
            out["pending"] = self.pending.describe() if self.pending else None
            out["running"] = self.running.describe() if self.running else None
            return out

    def busy(self) -> bool:
        with self.lock:
            return self.pending is not None or self.running is not None

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()

    def _loop(self) -> None:
        while True:
            with self.cond:
                while self.pending is None and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
                request, self.pending = self.pending, None
                self.running = request
                self.info["state"] = "fetching" if request.train or request.initial else "scoring"
            self._on_change()
            self._run(request)
            with self.cond:
                self.running = None
                self.info["state"] = "queued" if self.pending is not None else "idle"
                self.info["progress"] = {"done": 0, "total": 0}
                self.cond.notify_all()
            self._on_change()

    def _run(self, request: JobRequest) -> None:
        t0 = time.time()
        desc = request.describe()
        log.info("project %s: job started: %s", self.project_id, desc)
        try:
            summary = self.runner(self.project_id, request, JobContext(self._update, self._train_pending)) or {}
        except Exception as exc:  # noqa: BLE001 - a failed job must never kill the worker
            reason = f"{type(exc).__name__}: {exc}"
            log.error("project %s: job failed after %.1fs: %s; the previous version keeps serving\n%s",
                      self.project_id, time.time() - t0, reason, traceback.format_exc(limit=6))
            with self.lock:
                self.info["jobs_failed"] += 1
                self.info["last_error"] = {"at": time.time(), "job": desc, "error": reason}
            if self.metrics:
                self.metrics.jobs.labels(str(self.project_id), "failed").inc()
                self.metrics.errors.labels("job").inc()
            return
        elapsed = time.time() - t0
        log.info("project %s: job done in %.2fs: %s", self.project_id, elapsed, summary.get("outcome", "ok"))
        with self.lock:
            self.info["jobs_run"] += 1
            self.info["last_job"] = {"at": time.time(), "job": desc, "seconds": round(elapsed, 3), **summary}
            self.info["last_error"] = None
        if self.metrics:
            self.metrics.jobs.labels(str(self.project_id), "ok").inc()
            self.metrics.phase_seconds.labels("total").observe(elapsed)


class JobManager:
    """Per-project workers, created on first use."""

    def __init__(self, runner: Runner, metrics: Metrics | None = None) -> None:
        self.runner = runner
        self.metrics = metrics
        self._workers: dict[int, ProjectWorker] = {}
        self._lock = threading.Lock()

    def _worker(self, project_id: int) -> ProjectWorker:
        with self._lock:
            w = self._workers.get(project_id)
            if w is None:
                w = self._workers[project_id] = ProjectWorker(project_id, self.runner, self.metrics,
                                                              self._update_gauge)
            return w

    def _update_gauge(self) -> None:
        if self.metrics:
            with self._lock:
                workers = list(self._workers.values())
            self.metrics.jobs_waiting.set(sum(1 for w in workers if w.pending is not None))

    def submit(self, project_id: int, request: JobRequest) -> str:
        return self._worker(int(project_id)).submit(request)

    def status(self, project_id: int) -> dict:
        with self._lock:
            w = self._workers.get(int(project_id))
        if w is None:
            return {"state": "idle", "progress": {"done": 0, "total": 0}, "jobs_run": 0, "jobs_failed": 0,
                    "last_error": None, "last_job": None, "note": None, "followup_queued": False,
                    "pending": None, "running": None, "coalesced_events": 0}
        return w.snapshot()

    def projects(self) -> list[int]:
        with self._lock:
            return sorted(self._workers)

    def busy(self, project_id: int) -> bool:
        with self._lock:
            w = self._workers.get(int(project_id))
        return bool(w and w.busy())

    def wait_idle(self, project_id: int, timeout: float = 60.0) -> bool:
        """Block until the project has no running or pending job (tests, shutdown). True if idle."""
        with self._lock:
            w = self._workers.get(int(project_id))
        if w is None:
            return True
        deadline = time.time() + timeout
        with w.cond:
            while w.pending is not None or w.running is not None:
                left = deadline - time.time()
                if left <= 0:
                    return False
                w.cond.wait(left)
        return True

    def shutdown(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            w.stop()
