"""What every end-to-end test does against the real services: poll, read /health, read tasks, annotate."""

from __future__ import annotations

import time

import httpx

BASIC_AUTH = ("disal-ml", "e2e-secret-pass")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.3):
    """Poll `predicate` until it returns something truthy; fail naming `what` and the last value."""
    t0, last = time.time(), None
    while time.time() - t0 < timeout:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def health(backend, pid: int | None = None, auth=BASIC_AUTH) -> dict:
    """The backend's /health, or one project's entry of it."""
    r = httpx.get(backend.url + "/health", auth=auth, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    return body if pid is None else body.get("projects", {}).get(str(pid), {})


def wait_idle_version(backend, pid: int, not_in: tuple, timeout: float = 300, auth=BASIC_AUTH) -> dict:
    """Wait until the project is idle with a model version not in `not_in`; fail fast on a job error."""
    def ready():
        h = health(backend, pid, auth)
        # /health names a failed job's reason under "error" (cleared by the next successful job)
        assert not (h.get("error") and h.get("state") == "idle"), f"backend job failed: {h['error']}"
        return h if h.get("model_version") not in not_in and h.get("state") == "idle" else None

    return wait_for(ready, timeout, f"an idle project with a version other than {not_in}")


def tasks_of(ls, pid: int) -> list[dict]:
    with ls.client() as c:
        r = c.get("/api/tasks/", params={"project": pid, "fields": "all", "page_size": 1000})
        r.raise_for_status()
        return r.json()["tasks"]


def annotate(ls, task_id: int, choices: list[str], from_name: str, to_name: str) -> None:
    with ls.client() as c:
        r = c.post(f"/api/tasks/{task_id}/annotations/",
                   json={"result": [{"from_name": from_name, "to_name": to_name, "type": "choices",
                                     "value": {"choices": choices}}]})
        assert r.status_code == 201, r.text


def connect_bbc_project(label_studio, backend, title: str, n_tasks: int, seed: int) -> tuple[int, dict, tuple]:
    """A project of `n_tasks` seeded BBC texts (each with its gold label in data.gold), connected to
    `backend` (no basic auth); returns (project id, gold label by task id, versions seen so far)."""
    import numpy as np

    from disal.data import load_bbc

    ds = load_bbc()
    idx = np.random.default_rng(seed).choice(len(ds.train_texts), n_tasks, replace=False)
    cfg = ('<View><Text name="text" value="$text"/><Choices name="topic" toName="text" choice="single">'
           + "".join(f'<Choice value="{c}"/>' for c in ds.classes) + "</Choices></View>")
    with label_studio.client() as c:
        pid = c.post("/api/projects/", json={"title": title, "label_config": cfg,
                                             "start_training_on_annotation_update": True}).json()["id"]
        r = c.post(f"/api/projects/{pid}/import",
                   json=[{"text": ds.train_texts[i], "gold": ds.classes[int(ds.train_labels[i])]} for i in idx])
        assert r.status_code == 201, r.text
        r = c.post("/api/ml/", json={"url": backend.url, "project": pid, "title": title})
        assert r.status_code == 201, r.text
    seen = (None, wait_idle_version(backend, pid, (None,), auth=None)["model_version"])
    gold = {t["id"]: t["data"]["gold"] for t in tasks_of(label_studio, pid)}
    return pid, gold, seen


def label_what_next_serves(label_studio, backend, pid: int, gold: dict, seen: tuple, times: int) -> tuple[dict, tuple]:
    """Annotate the task Label Studio's /next serves with its gold label, `times` times, waiting for
    each retrained version; returns (the last project health, versions seen)."""
    h = {}
    for _ in range(times):
        with label_studio.client() as c:
            tid = c.get(f"/api/projects/{pid}/next").json()["id"]
        annotate(label_studio, tid, [gold[tid]], "topic", "text")
        h = wait_idle_version(backend, pid, seen, auth=None)
        seen += (h["model_version"],)
    return h, seen


def served_is_queue_head(label_studio, pid: int) -> None:
    """Every unlabeled task has a prediction of the current version, and /next serves the lowest score."""
    tasks = tasks_of(label_studio, pid)
    with label_studio.client() as c:
        version = c.get(f"/api/projects/{pid}").json()["model_version"]
        served = c.get(f"/api/projects/{pid}/next").json()["id"]
    scores = {t["id"]: p["score"] for t in tasks if not t["is_labeled"]
              for p in t["predictions"] if p["model_version"] == version}
    assert len(scores) == sum(not t["is_labeled"] for t in tasks)
    assert scores[served] == min(scores.values()), "Label Studio serves the head of the pushed queue"
