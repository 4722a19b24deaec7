"""disal.jobs: one worker per project, one job at a time, bursts coalesce, failures never kill the worker."""

from __future__ import annotations

import threading
import time

import pytest

from disal.jobs import JobContext, JobManager, JobRequest
from disal.metrics import Metrics


class Recorder:
    """A runner that blocks until released, recording what each job was asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, JobRequest]] = []
        self.gate = threading.Event()
        self.started = threading.Event()
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()
        self.fail_with: Exception | None = None

    def __call__(self, project_id: int, request: JobRequest, ctx: JobContext) -> dict:
        with self.lock:
            self.calls.append((project_id, request))
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        ctx.set_state("training", 0, 10)
        ctx.progress(3, 10)
        self.started.set()
        self.gate.wait(10)
        with self.lock:
            self.running -= 1
        if self.fail_with:
            exc, self.fail_with = self.fail_with, None
            raise exc
        return {"outcome": "pushed"}


def train(reason="ANNOTATION_CREATED"):
    return JobRequest(train=True, reasons={reason: 1})


def test_submit_returns_at_once_and_the_job_runs_in_the_background():
    rec = Recorder()
    jobs = JobManager(rec)
    t0 = time.perf_counter()
    assert jobs.submit(1, train()) == "queued"
    assert time.perf_counter() - t0 < 0.05
    assert rec.started.wait(5)
    status = jobs.status(1)
    assert status["state"] == "training" and status["progress"] == {"done": 3, "total": 10}
    rec.gate.set()
    assert jobs.wait_idle(1, 5)
    assert jobs.status(1)["state"] == "idle" and jobs.status(1)["jobs_run"] == 1
    jobs.shutdown()


def test_a_burst_during_a_job_coalesces_into_one_follow_up():
    rec = Recorder()
    jobs = JobManager(rec, Metrics())
    jobs.submit(1, train())
    assert rec.started.wait(5)
    outcomes = [jobs.submit(1, train("ANNOTATION_UPDATED")) for _ in range(20)]
    outcomes.append(jobs.submit(1, JobRequest(new_task_ids={5, 6}, reasons={"TASKS_CREATED": 1})))
    outcomes.append(jobs.submit(1, JobRequest(train=True, force=True, reasons={"START_TRAINING": 1})))
    assert outcomes[0] == "queued" and set(outcomes[1:]) == {"coalesced"}
    assert jobs.status(1)["followup_queued"] is True
    rec.gate.set()
    assert jobs.wait_idle(1, 5)
    assert len(rec.calls) == 2  # the running job + ONE follow-up
    follow = rec.calls[1][1]
    assert follow.train and follow.force and follow.new_task_ids == {5, 6}
    assert follow.reasons == {"ANNOTATION_UPDATED": 20, "TASKS_CREATED": 1, "START_TRAINING": 1}
    assert rec.max_running == 1
    jobs.shutdown()


def test_projects_run_in_parallel_but_each_one_job_at_a_time():
    rec = Recorder()
    jobs = JobManager(rec)
    for pid in (1, 2, 3):
        jobs.submit(pid, train())
    deadline = time.time() + 5
    while rec.running < 3 and time.time() < deadline:
        time.sleep(0.01)
    assert rec.running == 3
    rec.gate.set()
    for pid in (1, 2, 3):
        assert jobs.wait_idle(pid, 5)
    assert sorted(p for p, _ in rec.calls) == [1, 2, 3]
    jobs.shutdown()


def test_a_failed_job_is_recorded_and_the_worker_keeps_going():
    rec = Recorder()
    metrics = Metrics()
    jobs = JobManager(rec, metrics)
    rec.fail_with = RuntimeError("Label Studio list tasks failed: unreachable")
    rec.gate.set()
    jobs.submit(1, train())
    assert jobs.wait_idle(1, 5)
    status = jobs.status(1)
    assert status["jobs_failed"] == 1 and status["state"] == "idle"
    assert "unreachable" in status["last_error"]["error"]
    assert b'disal_errors_total{where="job"} 1.0' in metrics.render()
    jobs.submit(1, train())  # the same worker runs the next job
    assert jobs.wait_idle(1, 5)
    status = jobs.status(1)
    assert status["jobs_run"] == 1 and status["last_error"] is None
    assert status["last_job"]["outcome"] == "pushed"
    jobs.shutdown()


def test_unknown_state_names_are_refused():
    seen = {}

    def runner(pid, req, ctx):
        try:
            ctx.set_state("thinking")
        except ValueError as exc:
            seen["error"] = str(exc)
        return {}

    jobs = JobManager(runner)
    jobs.submit(1, train())
    assert jobs.wait_idle(1, 5)
    assert "thinking" in seen["error"]
    jobs.shutdown()


def test_status_of_a_project_without_jobs_is_idle():
    jobs = JobManager(lambda *a: {})
    assert jobs.status(42)["state"] == "idle"
    assert jobs.wait_idle(42, 0.1)


def test_request_describe_names_what_and_why():
    req = JobRequest(train=True, force=True, new_task_ids={1, 2}, reasons={"START_TRAINING": 1})
    assert req.describe() == "train(forced) + score 2 new tasks (START_TRAINING x1)"


@pytest.mark.parametrize("n", [50])
def test_submit_from_many_threads_never_loses_a_request(n):
    rec = Recorder()
    jobs = JobManager(rec)
    jobs.submit(1, train())
    assert rec.started.wait(5)
    threads = [threading.Thread(target=jobs.submit, args=(1, JobRequest(new_task_ids={i}))) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec.gate.set()
    assert jobs.wait_idle(1, 5)
    assert rec.calls[1][1].new_task_ids == set(range(n))
    jobs.shutdown()


def test_train_pending_tells_a_running_job_that_a_retrain_waits_behind_it():
    """A long first round asks this between encoding chunks (disal.training_job): a pending /setup
    (initial only) or TASKS_CREATED does not make it stop, a pending annotation does."""
    seen: list[bool] = []
    step, checked = threading.Event(), threading.Event()

    def runner(project_id: int, request: JobRequest, ctx: JobContext) -> dict:
        if request.initial:
            for _ in range(3):
                assert step.wait(10)
                step.clear()
                seen.append(ctx.train_pending())
                checked.set()
        return {"outcome": "pushed"}

    jobs = JobManager(runner)
    jobs.submit(1, JobRequest(initial=True, reasons={"setup": 1}))
    for follow_up in (JobRequest(initial=True, reasons={"setup": 1}),
                      JobRequest(new_task_ids={5}, reasons={"TASKS_CREATED": 1}), train()):
        jobs.submit(1, follow_up)
        checked.clear()
        step.set()
        assert checked.wait(10)
    assert seen == [False, False, True]
    assert jobs.wait_idle(1, 10)
    jobs.shutdown()


def test_encoding_is_a_state_a_job_can_report():
    def runner(project_id: int, request: JobRequest, ctx: JobContext) -> dict:
        ctx.set_state("encoding", 120, 10_000, note="encoding texts")
        with pytest.raises(ValueError, match="unknown job state"):
            ctx.set_state("embedding")
        return {"outcome": "ok"}

    jobs = JobManager(runner)
    jobs.submit(1, train())
    assert jobs.wait_idle(1, 10)
    assert jobs.status(1)["last_job"]["outcome"] == "ok" and jobs.status(1)["jobs_failed"] == 0
    jobs.shutdown()
