"""The Label Studio-facing model class: setup, predict(tasks, context), fit(event, data).

The familiar shape of Label Studio ML backends, wired to the DISAL pieces:
- `setup` reads the project's label config with the SDK's LabelInterface (disal.labelconfig) and
  remembers it; a project with no model version yet gets its first queue built in the background.
- `predict` answers any number of tasks in batches from the current model version: the predicted
  choice with its probability, and `score` = the task's queue priority (lower = label first).
- `fit` routes webhook events to the project's background worker (disal.jobs): annotation events
  and START_TRAINING retrain, TASKS_CREATED scores the new tasks, everything else is ignored.

Nothing here trains or talks to Label Studio on the request thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

import httpx

from disal.config import Settings
from disal.jobs import JobManager, JobRequest
from disal.labelconfig import LabelSpec, TaskTextError, UnsupportedConfigError, parse_label_config, task_text
from disal.labelstudio import LabelStudioClient
from disal.metrics import Metrics
from disal.queue import prediction_for
from disal.server import RequestError
from disal.state import ProjectStore
from disal.training.head import HeadConfig
from disal.training_job import COLDSTART_NOTE, Encoder, TrainingJob

log = logging.getLogger("disal.model")

TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED")
EXTRA_PARAM_KEYS = ("use_uncertainty_sampling",)


def parse_project_id(value: Any, where: str) -> int:
    """Label Studio sends '<id>.<created ts>' (/setup, /predict), an int, or {'id': ...} (webhooks)."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool) or value is None:
        raise RequestError(400, f"{where}: missing project id")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        head = value.strip().split(".", 1)[0]
        if head.isdigit():
            return int(head)
    raise RequestError(400, f"{where}: project {value!r} is not a Label Studio project id")


def _extra_params(raw: Any) -> dict:
    if isinstance(raw, str) and raw.strip():
        try:
            raw = json.loads(raw)
        except ValueError:
            raise RequestError(400, "extra_params is not valid JSON") from None
    if not isinstance(raw, dict):
        return {}
    return {k: raw[k] for k in EXTRA_PARAM_KEYS if k in raw}


class DisalModel:
    """One per process. `httpx_client` (tests: a MockTransport Label Studio) and `adapter_factory`
    (tests: a tiny encoder) are injectable."""

    def __init__(self, settings: Settings | None = None, *, httpx_client: httpx.Client | None = None,
                 adapter_factory: Callable[[], object] | None = None, head_config: HeadConfig | None = None,
                 ls_sleep: Callable[[float], None] = time.sleep, warm_up: bool = False) -> None:
        self.settings = settings or Settings.from_env()
        self.metrics = Metrics()
        self.encoder = Encoder(self.settings, adapter_factory)
        self._httpx_client = httpx_client
        self._ls_sleep = ls_sleep
        self._stores: dict[int, ProjectStore] = {}
        self._tokens: dict[int, str] = {}  # from /setup; memory only, never logged or written
        self._clients: dict[tuple, LabelStudioClient] = {}
        self._lock = threading.Lock()
        self.job = TrainingJob(self.settings, self.encoder, self.store, self.client_for, self.metrics, head_config)
        self.jobs = JobManager(self.job, self.metrics)
        self.started = time.time()
        if warm_up:  # load the encoder and torch's optimizer in the background: the first round is then fast
            threading.Thread(target=self._warm_up, name="disal-warm-up", daemon=True).start()
        for pid in self._known_projects():  # a restarted backend serves the latest good version at once
            v = self.store(pid).current()
            if v is not None:
                self.metrics.queue_length.labels(str(pid)).set(len(v.priority))
                log.info("project %s: serving %s (%s, %d labels)", pid, v.name, v.kind, len(v.labels))

    def _warm_up(self) -> None:
        try:
            self.job.warm_up()
        except Exception as exc:  # noqa: BLE001 - the first job will load it again and report the error
            log.error("warm-up failed: %s", exc)
            self.metrics.errors.labels("warm_up").inc()

    # -- plumbing --------------------------------------------------------------------------------
    def store(self, project_id: int) -> ProjectStore:
        with self._lock:
            s = self._stores.get(project_id)
            if s is None:
                s = self._stores[project_id] = ProjectStore(self.settings.model_dir, project_id)
            return s

    def _known_projects(self) -> list[int]:
        root = self.settings.model_dir / "projects"
        if not root.exists():
            return []
        return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / "project.json").exists())

    def is_known(self, project_id: int) -> bool:
        return (self.store(project_id).dir / "project.json").exists()

    def client_for(self, project_id: int) -> LabelStudioClient:
        """The Label Studio client for a project: env settings first, then what /setup told us."""
        info = self.store(project_id).load_info()
        url = self.settings.label_studio_url or info.get("hostname")
        key = self.settings.label_studio_api_key or self._tokens.get(project_id)
        cache_key = (url, key)
        with self._lock:
            client = self._clients.get(cache_key)
            if client is None:
                s = self.settings
                client = LabelStudioClient(url, key, httpx_client=self._httpx_client, timeout=s.ls_timeout,
                                           retries=s.ls_retries, backoff=s.ls_backoff, page_size=s.page_size,
                                           sleep=self._ls_sleep)
                self._clients[cache_key] = client
            return client

    def _spec_for(self, project_id: int, label_config: Any) -> LabelSpec:
        if isinstance(label_config, str) and label_config.strip():
            try:
                return parse_label_config(label_config)
            except UnsupportedConfigError as exc:
                raise RequestError(422, str(exc)) from None
        spec = self.store(project_id).load_info().get("spec")
        if spec:
            return LabelSpec.from_dict(spec)
        raise RequestError(404, f"unknown project {project_id}: connect the backend (POST /setup) first")

    # -- /setup ----------------------------------------------------------------------------------
    def setup(self, payload: dict, host: str | None = None) -> dict:
        """Validate the label config, remember the project, start the first queue if there is none."""
        if "project" not in payload:
            raise RequestError(400, "setup: missing 'project'")
        pid = parse_project_id(payload.get("project"), "setup")
        if "schema" not in payload:
            raise RequestError(400, "setup: missing 'schema' (the label config)")
        try:
            spec = parse_label_config(payload.get("schema"))
        except UnsupportedConfigError as exc:
            raise RequestError(422, str(exc)) from None
        token = payload.get("access_token")
        if isinstance(token, str) and token:
            self._tokens[pid] = token
        store = self.store(pid)
        info = store.load_info()
        hostname = payload.get("hostname") if isinstance(payload.get("hostname"), str) else info.get("hostname")
        hosts = list(info.get("backend_hosts") or [])
        if host and host not in hosts:  # how Label Studio reaches us: identifies our webhook
            hosts = (hosts + [host])[-5:]
        new_info = {"spec": spec.as_dict(), "hostname": hostname, "backend_hosts": hosts,
                    "extra_params": _extra_params(payload.get("extra_params"))}
        if new_info != {k: info.get(k) for k in new_info}:
            store.save_info({**info, **new_info, "setup_at": time.time()})
        current = store.current()
        if current is None or (self.settings.auth_enabled and pid not in self.job.webhook_ok):
            # the first queue, or making sure the webhook carries basic auth: in the background
            self.jobs.submit(pid, JobRequest(initial=True, reasons={"setup": 1}))
        return {"model_version": current.name if current else None, "status": "ok"}

    # -- /predict --------------------------------------------------------------------------------
    def predict_request(self, payload: dict) -> dict:
        tasks = payload.get("tasks")
        if not isinstance(tasks, list):
            raise RequestError(400, "predict: 'tasks' must be a list of tasks")
        project = payload.get("project")
        if project is None:
            project = next((t.get("project") for t in tasks if isinstance(t, dict) and t.get("project")), None)
        pid = parse_project_id(project, "predict")
        return self.predict(tasks, (payload.get("params") or {}).get("context") if isinstance(payload.get("params"), dict)
                            else None, project_id=pid, label_config=payload.get("label_config"))

    def predict(self, tasks: list[dict], context: Any = None, *, project_id: int | None = None,
                label_config: str | None = None) -> dict:
        """One result per task, in order: predicted choice + probability, score = queue priority.

        `context` (interactive pre-annotation) is accepted and not used: the queue is not interactive.
        """
        if project_id is None:
            project_id = parse_project_id(next((t.get("project") for t in tasks if isinstance(t, dict)
                                                and t.get("project")), None), "predict")
        spec = self._spec_for(project_id, label_config)
        ids: list[int | None] = []
        texts: list[str] = []
        bad: list[str] = []
        for i, task in enumerate(tasks):
            if not isinstance(task, dict):
                bad.append(f"item {i} is not a task object")
                continue
            tid = task.get("id")
            try:
                texts.append(task_text(task, spec, self.settings.max_text_chars))
                ids.append(int(tid) if isinstance(tid, int) or (isinstance(tid, str) and tid.isdigit()) else None)
            except TaskTextError as exc:
                bad.append(str(exc))
        if bad:
            raise RequestError(422, "predict: " + "; ".join(bad[:20]) + (f" (and {len(bad) - 20} more)" if len(bad) > 20 else ""))
        version = self.store(project_id).current()
        if version is None:
            return {"results": [], "model_version": None,
                    "message": f"project {project_id} has no model version yet (the first queue is being built)"}
        if not tasks:
            return {"results": [], "model_version": version.name}
        t0 = time.perf_counter()
        feats = self.encoder.features(ids, texts, save=False)
        priorities, probs = self.job.place(version, ids, feats)
        out_spec = version.spec
        results = [prediction_for(None, out_spec, float(priorities[i]), version.name,
                                  None if probs is None else probs[i]) for i in range(len(tasks))]
        self.metrics.predicted_tasks.inc(len(tasks))
        log.info("project %s: predicted %d tasks with %s in %.3fs", project_id, len(tasks), version.name,
                 time.perf_counter() - t0)
        return {"results": results, "model_version": version.name}

    # -- /webhook --------------------------------------------------------------------------------
    def fit(self, event: str, data: dict) -> dict:
        """Route one webhook event: queue a job (answers in microseconds) or acknowledge and ignore."""
        if event in TRAIN_EVENTS or event == "START_TRAINING" or event == "TASKS_CREATED":
            if "project" not in data:
                raise RequestError(400, f"{event}: missing 'project'")
            pid = parse_project_id(data.get("project"), event)
            if not self.is_known(pid):
                raise RequestError(404, f"{event}: unknown project {pid}; connect the backend (POST /setup) first")
            if event == "TASKS_CREATED":
                tasks = data.get("tasks")
                if not isinstance(tasks, list):
                    raise RequestError(400, "TASKS_CREATED: 'tasks' must be a list")
                payloads = {int(t["id"]): t for t in tasks if isinstance(t, dict) and isinstance(t.get("id"), int)}
                if len(payloads) != len(tasks):
                    raise RequestError(400, "TASKS_CREATED: every task needs an integer 'id'")
                req = JobRequest(new_task_ids=set(payloads), new_tasks=payloads, reasons={event: 1})
                if self.store(pid).current() is None:
                    req.initial = True
            else:
                if event in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED") and not isinstance(data.get("annotation"), dict):
                    raise RequestError(400, f"{event}: missing 'annotation'")
                if event == "ANNOTATIONS_DELETED" and not isinstance(data.get("annotations"), list):
                    raise RequestError(400, f"{event}: missing 'annotations' list")
                req = JobRequest(train=True, force=event == "START_TRAINING", reasons={event: 1})
            outcome = self.jobs.submit(pid, req)
            return {"status": outcome, "action": event, "project": pid}
        return {"status": "ignored", "action": event}

    # -- /health and /versions -------------------------------------------------------------------
    def health(self) -> dict:
        projects = {}
        for pid in sorted(set(self._known_projects()) | set(self.jobs.projects())):
            v = self.store(pid).current()
            job = self.jobs.status(pid)
            entry = {"model_version": v.name if v else None, "state": job["state"], "progress": job["progress"],
                     "job": job}
            if v is not None:
                entry.update(kind=v.kind, cold_start=v.kind == "coldstart", labels=len(v.labels),
                             queue_length=len(v.priority), strategy=v.meta.get("strategy"),
                             classes=v.meta.get("classes"))
                if v.kind == "coldstart":
                    entry["note"] = COLDSTART_NOTE.format(n=len(v.meta.get("classes") or []))
            if job.get("last_error"):
                entry["error"] = job["last_error"]["error"]
            projects[str(pid)] = entry
        return {"status": "UP", "model_class": type(self).__name__, "strategy": self.settings.strategy,
                "encoder": self.encoder.model_id, "uptime_s": round(time.time() - self.started, 1),
                "projects": projects}

    def versions(self, project: str | None = None) -> dict:
        pids = [parse_project_id(project, "versions")] if project else self._known_projects()
        versions: list[str] = []
        current = {}
        for pid in pids:
            store = self.store(pid)
            versions += store.list_versions()
            v = store.current()
            current[str(pid)] = v.name if v else None
        out = {"versions": versions, "current": current}
        if project:
            out["model_version"] = current.get(str(pids[0]))
        return out

    def close(self) -> None:
        self.jobs.shutdown()
