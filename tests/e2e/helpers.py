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
