"""Fault tests of the durable job queue with real parts: a real Label Studio, the backend under
gunicorn with its embedded worker plus one more worker process, and (redis mode) a real
redis-server. Every case runs in both modes where it applies: the embedded SQLite queue in
MODEL_DIR, and Redis (REDIS_URL).

What each case does and observes:
- storm: 500 annotation webhooks from 8 threads: every one answered 2xx, at most 3 trainings, and
  the final version trained on every label in Label Studio;
- kill -9 of the worker that runs a first round (mid-encoding): the other worker runs the job again
  after its lease ends, and no version is served before a whole one is written;
- Label Studio down for 60 s after an event: the job is retried with backoff, /health says so, and
  the round completes once Label Studio is back, with no manual step;
- Redis restarted between events (redis mode): the queue and the workers carry on;
- backend restart with annotations made while it was down: one catch-up round trains on them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from scripts.local_services import BackendServer, WorkerProcess, free_port

from e2e.helpers import wait_for
from fake_labelstudio import LABELS, choices_config, topic_texts

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

LEASE_S = 6


def _env(tiny_model_dir, mode: str, redis_server, **extra) -> dict:
    env = {"MODEL_NAME": str(tiny_model_dir), "BASIC_AUTH_USER": "", "BASIC_AUTH_PASS": "", "LOG_LEVEL": "INFO",
           "JOB_LEASE_S": str(LEASE_S), "RETRY_MAX_DELAY_S": "5", "WORKERS": "1", "FIRST_QUEUE_SECONDS": "1000"}
    # explicit in both modes, so that `pytest --job-queue=redis` leaves these tests their own queue
    env["REDIS_URL"] = redis_server.url if mode == "redis" else ""
    env.update(extra)
    return env


@pytest.fixture(params=["sqlite", "redis"])
def mode(request):
    if request.param == "redis":
        import redis

        server = request.getfixturevalue("redis_server")
        redis.Redis.from_url(server.url).flushall()  # no task of an earlier test's backend is left
    return request.param


@pytest.fixture
def redis_or_none(request, mode):
    return request.getfixturevalue("redis_server") if mode == "redis" else None


class Deployment:
    """A backend (gunicorn + its embedded worker) and `extra` more worker processes, stopped at the end."""

    def __init__(self, tmp_path, label_studio, env: dict, extra: int = 1, name: str = "backend") -> None:
        self.ls = label_studio
        self.backend = BackendServer(tmp_path / "model_dir", free_port(), label_studio, extra_env=env,
                                     log=tmp_path / f"{name}.log")
        self.extra = [WorkerProcess(self.backend, log=tmp_path / f"{name}-worker{i}.log") for i in range(extra)]

    def start(self) -> "Deployment":
        self.backend.start()
        for w in self.extra:
            w.start()
        return self

    def stop(self) -> None:
        for w in self.extra:
            w.stop()
        self.backend.stop()

    def health(self) -> dict:
        r = httpx.get(self.backend.url + "/health", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def project(self, pid: int) -> dict:
        return self.health()["projects"].get(str(pid), {})

    def metric(self, name: str, **labels) -> float:
        text = httpx.get(self.backend.url + "/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            m = re.match(rf"{name}(\{{[^}}]*\}})? (\S+)$", line)
            if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
                total += float(m.group(2))
        return total

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in [self.backend.log] + [w.log for w in self.extra]
                       if p.exists())


def new_project(ls, dep: Deployment, n: int, title: str, texts=None) -> tuple[int, dict[int, str]]:
    data = texts or [{"text": t, "gold": g} for t, g in topic_texts(n, seed=n)]
    with ls.client() as c:
        pid = c.post("/api/projects/", json={"title": title, "label_config": choices_config(LABELS),
                                             "start_training_on_annotation_update": True}).json()["id"]
        assert c.post(f"/api/projects/{pid}/import", json=data).status_code == 201
        r = c.post("/api/ml/", json={"url": dep.backend.url, "project": pid, "title": "DISAL"})
        assert r.status_code == 201, r.text
        tasks = c.get("/api/tasks/", params={"project": pid, "fields": "all", "page_size": 5000}).json()["tasks"]
    return pid, {t["id"]: t["data"]["gold"] for t in tasks}


def annotate(ls, task_ids, gold: dict[int, str]) -> None:
    with ls.client() as c:
        for tid in task_ids:
            r = c.post(f"/api/tasks/{tid}/annotations/", json={"result": [
                {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [gold[tid]]}}]})
            assert r.status_code == 201, r.text


def labeled_count(ls, pid: int) -> int:
    with ls.client() as c:
        return c.get(f"/api/projects/{pid}/").json()["num_tasks_with_annotations"]


def idle_with(dep: Deployment, pid: int, labels: int, timeout: float = 180) -> dict:
    """Wait until the project is idle, nothing pending, serving a version trained on `labels` labels."""
    def ready():
        h = dep.project(pid)
        job = h.get("job") or {}
        return h if (h.get("state") == "idle" and h.get("labels") == labels and not job.get("pending")) else None

    return wait_for(ready, timeout, f"project {pid} idle with a version on {labels} labels")


def first_queue(dep: Deployment, pid: int, timeout: float = 180) -> dict:
    return wait_for(lambda: (h := dep.project(pid)).get("model_version") and h.get("state") == "idle" and h,
                    timeout, f"project {pid}'s first queue")


def trained_project(ls, dep: Deployment, n: int, labeled: int, title: str) -> tuple[int, dict[int, str], list[int]]:
    """A project of n tasks with its first queue, then `labeled` of them annotated and trained on."""
    pid, gold = new_project(ls, dep, n, title)
    first_queue(dep, pid)
    ids = sorted(gold)
    annotate(ls, ids[:labeled], gold)
    idle_with(dep, pid, labeled)
    return pid, gold, ids


def test_a_storm_of_500_events_trains_at_most_3_times_on_every_label(tmp_path, label_studio, tiny_model_dir, mode,
                                                                      redis_or_none):
    dep = Deployment(tmp_path, label_studio, _env(tiny_model_dir, mode, redis_or_none)).start()
    try:
        pid, gold, ids = trained_project(label_studio, dep, 60, 6, f"storm {mode}")
        before = dep.metric("disal_trainings_total", project=pid)

        annotate(label_studio, ids[6:12], gold)  # Label Studio's own webhooks join the storm
        event = {"action": "ANNOTATION_CREATED", "project": {"id": pid}, "task": {"id": ids[0]},
                 "annotation": {"id": 1, "result": []}}
        statuses: list[int] = []
        t0 = time.time()
        with httpx.Client(base_url=dep.backend.url, timeout=10) as client, ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: client.post("/webhook", json=event).status_code, range(500)))
        sent_in = time.time() - t0
        assert len(statuses) == 500 and all(200 <= s < 300 for s in statuses), sorted(set(statuses))
        h = idle_with(dep, pid, 12)
        trainings = dep.metric("disal_trainings_total", project=pid) - before
        print(f"\n{mode}: 500 events sent in {sent_in:.1f}s; {trainings:.0f} training(s); "
              f"coalesced {h['job']['coalesced_events']}")
        assert 1 <= trainings <= 3, f"{trainings} trainings for one storm"
        assert h["labels"] == labeled_count(label_studio, pid) == 12
        workers = dep.health()["job_queue"]["workers"]
        assert sum(w["alive"] for w in workers.values()) == 2, workers
        assert dep.metric("disal_job_workers") == 2
    finally:
        dep.stop()


def test_kill_9_of_a_worker_mid_job_reruns_it_and_serves_no_half_written_version(tmp_path, label_studio, mode,
                                                                                 redis_or_none, tiny_model_dir):
    from disal.data import load_bbc

    # the packaged MiniLM encoder and 300 BBC texts: a first round long enough (encoding) to kill mid-way
    env = _env(tiny_model_dir, mode, redis_or_none, MODEL_NAME="")
    dep = Deployment(tmp_path, label_studio, env).start()
    try:
        ds = load_bbc()
        texts = [{"text": t, "gold": LABELS[i % 3]} for i, t in enumerate(ds.train_texts[:300])]
        pid, _ = new_project(label_studio, dep, 0, f"kill -9 {mode}", texts=texts)
        h = wait_for(lambda: (p := dep.project(pid)).get("state") == "encoding"
                     and p["progress"]["done"] > 0 and p, 120, "the first round encoding")
        owner = h["job"]["worker"]
        victim = int(owner.split(":")[1])
        assert h.get("model_version") is None
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        seen = set()

        def served():
            p = dep.project(pid)
            seen.add(p.get("model_version"))
            return p.get("model_version") and p.get("state") == "idle" and p

        done = wait_for(served, 300, "the killed first round to run again")
        rerun_after = time.time() - killed_at
        assert seen - {None} == {done["model_version"]}, f"only the finished version is ever served: {seen}"
        folder = dep.backend.model_dir / "projects" / str(pid) / "versions" / done["model_version"]
        meta = json.loads((folder / "meta.json").read_text())  # written last: the version is whole
        assert meta["name"] == done["model_version"] and done["queue_length"] == 300
        assert (folder / "queue.json").exists() and (folder / "pushed.json").exists()
        logs = dep.logs()
        assert f"project {pid}: job started on" in logs
        assert len(re.findall(rf"project {pid}: job started on", logs)) >= 2, "the job ran again"
        print(f"\n{mode}: killed worker {victim}; the first round ran again and served after {rerun_after:.1f}s")
    finally:
        dep.stop()


def test_label_studio_down_for_60s_recovers_with_no_manual_step(tmp_path, label_studio, tiny_model_dir, mode,
                                                                redis_or_none):
    dep = Deployment(tmp_path, label_studio, _env(tiny_model_dir, mode, redis_or_none), extra=0).start()
    try:
        pid, gold, ids = trained_project(label_studio, dep, 30, 4, f"ls down {mode}")
        v = dep.project(pid)["model_version"]
        label_studio.stop()
        try:
            # START_TRAINING, as Label Studio sent it just before going down: the job cannot reach it
            r = httpx.post(dep.backend.url + "/webhook", json={"action": "START_TRAINING", "project": {"id": pid}},
                           timeout=10)
            assert r.status_code == 201 and r.json()["status"] == "queued", r.text
            h = wait_for(lambda: (p := dep.project(pid)).get("state") == "retrying" and p, 60, "a retrying job")
            assert "Label Studio" in h["job"]["last_error"]["error"]
            time.sleep(60)
            h = dep.project(pid)
            assert h["state"] in ("retrying", "fetching"), h
            assert h["job"]["attempt"] >= 3, "retried with backoff while Label Studio was down"
            assert h["model_version"] == v, "the previous version keeps serving"
        finally:
            label_studio.start()
        h = wait_for(lambda: (p := dep.project(pid)).get("model_version") != v and p.get("state") == "idle" and p,
                     120, "the retried round after Label Studio came back")
        assert h["labels"] == 4 and not h.get("error")
        print(f"\n{mode}: {h['job']['retries']} retries while Label Studio was down; recovered with {h['model_version']}")
    finally:
        dep.stop()


def test_redis_restarted_mid_queue(tmp_path, label_studio, tiny_model_dir, redis_server):
    import redis

    redis.Redis.from_url(redis_server.url).flushall()
    dep = Deployment(tmp_path, label_studio, _env(tiny_model_dir, "redis", redis_server)).start()
    try:
        pid, gold = new_project(label_studio, dep, 30, "redis restart")
        first_queue(dep, pid)
        ids = sorted(gold)
        annotate(label_studio, ids[:3], gold)  # events queued ...
        redis_server.restart(down_s=3)  # ... and Redis goes away and comes back (its append-only file kept them)
        annotate(label_studio, ids[3:6], gold)
        h = idle_with(dep, pid, 6, timeout=120)
        assert h["labels"] == labeled_count(label_studio, pid) == 6
        wait_for(lambda: sum(w["alive"] for w in dep.health()["job_queue"]["workers"].values()) == 2, 30,
                 "both workers alive after the restart")
    finally:
        dep.stop()


def test_a_restarted_backend_catches_up_on_annotations_made_while_it_was_down(tmp_path, label_studio,
                                                                             tiny_model_dir, mode, redis_or_none):
    env = _env(tiny_model_dir, mode, redis_or_none)
    dep = Deployment(tmp_path, label_studio, env).start()
    try:
        pid, gold, ids = trained_project(label_studio, dep, 30, 3, f"restart {mode}")
        before = dep.metric("disal_trainings_total", project=pid)  # the dead workers' counts stay in the sum
    finally:
        dep.stop()
    annotate(label_studio, ids[3:8], gold)  # Label Studio's webhooks fail: nobody listens
    port = dep.backend.port
    dep2 = Deployment(tmp_path, label_studio, env, name="backend-restarted")
    dep2.backend.port, dep2.backend.url = port, f"http://127.0.0.1:{port}"  # the URL Label Studio knows
    dep2.start()
    try:
        h = idle_with(dep2, pid, 8, timeout=120)
        assert dep2.metric("disal_trainings_total", project=pid) - before == 1, "one catch-up round"
        assert "catch-up round queued" in dep2.backend.log.read_text()
        assert h["labels"] == labeled_count(label_studio, pid) == 8
    finally:
        dep2.stop()
