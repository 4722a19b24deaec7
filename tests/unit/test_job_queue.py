"""The durable queue's worker side (disal.job_queue.JobQueue.execute) with the real SQLite stores and
a runner of our own: retries with backoff, one follow-up for what arrived during a job, failures
that are not retried, the metrics a worker publishes, and a clear 503 when Redis is unreachable."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from disal.config import Settings
from disal.job_queue import JobQueue, retryable
from disal.jobs import JobRequest
from disal.labelstudio import LabelStudioError
from disal.metrics import Metrics, render_merged, snapshot


class Runner:
    def __init__(self, fail_with: list[Exception] | None = None, during=None) -> None:
        self.calls: list[JobRequest] = []
        self.fail_with = list(fail_with or [])
        self.during = during

    def __call__(self, pid, request, ctx):
        self.calls.append(request)
        ctx.set_state("training", 1, 2)
        if self.during:
            self.during()
        if self.fail_with:
            raise self.fail_with.pop(0)
        return {"outcome": "pushed", "training_on_annotation": True, "webhook_auth_ok": True}


def queue(tmp_path, runner=None, **settings) -> JobQueue:
    s = Settings(model_dir=tmp_path, train_debounce_s=0.0, **settings)
    return JobQueue(s, runner=runner, metrics=Metrics())


def test_events_coalesce_and_one_job_runs_them_all(tmp_path):
    runner = Runner()
    q = queue(tmp_path, runner)
    outcomes = [q.submit(5, JobRequest(train=True, reasons={"ANNOTATION_CREATED": 1})) for _ in range(4)]
    assert outcomes == ["queued", "coalesced", "coalesced", "coalesced"]
    assert q.huey.pending_count() == 1, "coalesced events enqueue no task of their own"
    assert q.execute(5) == "ok"
    assert len(runner.calls) == 1 and runner.calls[0].reasons == {"ANNOTATION_CREATED": 4}
    st = q.status(5)
    assert st["state"] == "idle" and st["jobs_run"] == 1 and st["coalesced_events"] == 3
    assert st["last_job"]["outcome"] == "pushed" and st["last_job"]["training_on_annotation"] is True
    assert q.execute(5) == "nothing pending"  # the task already enqueued finds nothing: idempotent


def test_an_event_during_a_job_gets_one_follow_up(tmp_path):
    q = queue(tmp_path)
    q.runner = Runner(during=lambda: [q.submit(5, JobRequest(train=True, reasons={"late": 1})) for _ in range(3)])
    q.submit(5, JobRequest(train=True, reasons={"first": 1}))
    q.huey.flush()
    assert q.execute(5) == "ok"
    assert q.huey.pending_count() == 1, "ONE follow-up task for the three late events"
    q.runner.during = None
    assert q.execute(5) == "ok"
    assert q.runner.calls[1].reasons == {"late": 3}


def test_a_label_studio_failure_is_retried_with_backoff_and_keeps_its_requests(tmp_path):
    runner = Runner(fail_with=[LabelStudioError("get project", "connection refused"),
                               LabelStudioError("get project", "connection refused")])
    q = queue(tmp_path, runner)
    q.submit(5, JobRequest(train=True, reasons={"START_TRAINING": 1}))
    q.huey.flush()
    assert q.execute(5) == "retrying"
    st = q.status(5)
    assert st["state"] == "retrying" and st["attempt"] == 1 and "connection refused" in st["last_error"]["error"]
    (retry,) = q.huey.pending()
    assert retry.eta is not None, "the retry is a delayed huey task"
    assert q.sweep() == [], "the sweeper leaves a project alone until its retry is due"
    assert q.execute(5) == "retrying"
    st = q.status(5)
    assert st["attempt"] == 2 and st["retry_at"] - time.time() > 1.0, "the second retry waits longer (2 s)"
    assert q.execute(5) == "ok"
    assert [r.reasons for r in runner.calls] == [{"START_TRAINING": 1}] * 3, "the same requests each time"
    st = q.status(5)
    assert st["state"] == "idle" and st["attempt"] == 0 and st["last_error"] is None
    assert st["jobs_failed"] == 2 and st["retries"] == 2 and st["jobs_run"] == 1


def test_any_other_failure_is_reported_and_not_retried(tmp_path, caplog):
    runner = Runner(fail_with=[ValueError("a bug")])
    q = queue(tmp_path, runner)
    q.submit(5, JobRequest(train=True))
    with caplog.at_level("ERROR"):
        assert q.execute(5) == "failed"
    assert "not retried" in caplog.text and "ValueError: a bug" in caplog.text
    st = q.status(5)
    assert st["state"] == "idle" and st["last_error"]["error"] == "ValueError: a bug"
    assert q.store.pending_count(5) == 0 and all(t.eta is None for t in q.huey.pending())
    assert retryable(LabelStudioError("x", "y")) and not retryable(ValueError())


def test_a_job_whose_worker_died_runs_again_after_its_lease(tmp_path):
    q = queue(tmp_path, Runner(), job_lease_s=2.0)
    q.submit(5, JobRequest(train=True, reasons={"ANNOTATION_CREATED": 1}))
    assert q.store.claim(5, "a-worker-killed-with-9", lease_s=0.3) is not None  # ... and never finishes
    assert q.status(5)["worker"] == "a-worker-killed-with-9"
    time.sleep(0.4)
    assert q.status(5)["state"] == "queued"
    q.huey.flush()
    assert q.sweep() == [5] and q.huey.pending_count() == 1
    assert q.execute(5) == "ok"
    assert q.runner.calls[0].reasons == {"ANNOTATION_CREATED": 1}


def test_only_one_job_per_project_runs_at_once(tmp_path):
    release = threading.Event()
    runner = Runner(during=lambda: release.wait(10))
    q = queue(tmp_path, runner)
    q.submit(5, JobRequest(train=True))
    first = threading.Thread(target=q.execute, args=(5,))
    first.start()
    time.sleep(0.3)
    q.submit(5, JobRequest(train=True))
    assert q.execute(5) == "busy"
    release.set()
    first.join(10)
    assert len(runner.calls) == 1 and q.store.pending_count(5) == 1


def test_a_worker_publishes_its_metrics_and_the_web_process_sums_them(tmp_path):
    worker_a, worker_b = queue(tmp_path, Runner()), queue(tmp_path, Runner())
    worker_a.submit(5, JobRequest(train=True))
    worker_a.execute(5)
    worker_b.submit(6, JobRequest(train=True))
    worker_b.execute(6)
    web = queue(tmp_path)
    snaps = web.metric_snapshots()
    assert len(snaps) == 2
    text = render_merged(Metrics().registry, snaps).decode()
    assert 'disal_jobs_total{outcome="ok",project="5"} 1.0' in text
    assert 'disal_job_phase_seconds_count{phase="total"} 2.0' in text
    assert set(web.workers()) == {worker_a.worker_id, worker_b.worker_id}
    assert all(w["alive"] and w["jobs_run"] == 1 for w in web.workers().values())


def test_merged_counters_add_up_and_gauges_take_the_newest():
    def registry(count: float, gauge: float):
        r = CollectorRegistry()
        Counter("x", "a counter", ["p"], registry=r).labels("1").inc(count)
        Gauge("g", "a gauge", registry=r).set(gauge)
        return r

    text = render_merged(registry(1, 10), [snapshot(registry(2, 20)), snapshot(registry(3, 30))]).decode()
    assert 'x_total{p="1"} 6.0' in text and "\ng 30.0" in text


def test_an_unreachable_redis_gets_a_503_naming_it(tmp_path):
    from disal.server import RequestError

    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from model import DisalModel

    s = Settings(model_dir=tmp_path, redis_url="redis://127.0.0.1:9/0")
    model = DisalModel(s, job_queue=JobQueue(s), resume=False)
    (model.store(5).dir).mkdir(parents=True)
    (model.store(5).dir / "project.json").write_text("{}")
    with pytest.raises(RequestError) as err:
        model.fit("START_TRAINING", {"project": {"id": 5}})
    assert err.value.status == 503 and "job queue (redis) is unreachable" in err.value.message


def test_a_job_that_lost_its_lease_says_so(tmp_path, caplog):
    def steal():  # another worker took the project over (this one was presumed dead)
        q.store._db().execute("UPDATE leases SET owner='another-worker' WHERE project=5")
        time.sleep(1.0)  # a renewal (every JOB_LEASE_S / 5 = 0.4 s) finds the lease gone

    q = queue(tmp_path, Runner(during=steal), job_lease_s=2.0)
    q.submit(5, JobRequest(train=True))
    with caplog.at_level("WARNING"):
        assert q.execute(5) == "ok"
    assert "lost its job lease" in caplog.text and "lease ran out while it ran" in caplog.text
    assert q.store.lease_owner(5) == "another-worker", "finish leaves the new owner's lease alone"
