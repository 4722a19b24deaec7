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
import re
import threading
import time
from typing import Any, Callable

import httpx

from disal import credentials
from disal.config import Settings
from disal.credentials import CredentialsError, SetupToken
from disal.job_queue import JobQueue
from disal.jobs import JobManager, JobRequest
from disal.labelconfig import LabelSpec, TaskInputError, UnsupportedConfigError, parse_label_config
from disal.labelstudio import LabelStudioClient, LabelStudioError
from disal.metrics import Metrics, render_merged
from disal.redaction import REDACTOR
from disal.queue import prediction_for
from disal.server import RequestError
from disal.state import ProjectStore
from disal.tasks import Encoders, FeatureEncoder
from disal.training.head import HeadConfig
from disal.training_job import COLDSTART_NOTE, TrainingJob, partial_note, partial_of
from disal.training_job import TRAINING_OFF_NOTE

log = logging.getLogger("disal.model")

TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED")
EXTRA_PARAM_KEYS = ("use_uncertainty_sampling",)


MAX_PROJECT_ID = 2**63 - 1  # Label Studio's ids are Django BigAutoFields
_PROJECT_ID_RE = re.compile(r"[0-9]{1,19}")


def _json_kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def parse_project_id(value: Any, where: str) -> int:
    """Label Studio sends '<id>.<created ts>' (/setup, /predict), an int, or {'id': ...} (webhooks)."""
    if isinstance(value, dict):
        if "id" not in value:
            raise RequestError(400, f"{where}: missing project id (the 'project' object has no 'id')")
        value = value.get("id")
    if value is None:
        raise RequestError(400, f"{where}: missing project id")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RequestError(400, f"{where}: 'project' must be a Label Studio project id (an integer like 12, or "
                                f"'12.1712345678' as /setup sends it), got {_json_kind(value)}")
    if isinstance(value, int):
        pid = value
    else:
        head = value.strip().split(".", 1)[0]
        if not _PROJECT_ID_RE.fullmatch(head):
            raise RequestError(400, f"{where}: project {value[:40]!r} is not a Label Studio project id")
        pid = int(head)
    if not 1 <= pid <= MAX_PROJECT_ID:
        raise RequestError(400, f"{where}: project id {str(pid)[:40]} is out of range (Label Studio project ids "
                                "are positive integers)")
    return pid


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
    """One per process. `job_queue`: the durable queue whose worker processes run the jobs (what
    _wsgi.py serves); without one, jobs run in threads of this process (tests, notebooks).
    `httpx_client` (tests: a MockTransport Label Studio) and `adapter_factory` (tests: a tiny
    encoder) are injectable. `resume=False` (a worker process): no start-up jobs."""

    def __init__(self, settings: Settings | None = None, *, httpx_client: httpx.Client | None = None,
                 adapter_factory: Callable[[], object] | None = None, head_config: HeadConfig | None = None,
                 ls_sleep: Callable[[float], None] = time.sleep, warm_up: bool = False,
                 image_model_factory: Callable[[], object] | None = None, job_queue: JobQueue | None = None,
                 resume: bool = True) -> None:
        self.settings = settings or Settings.from_env()
        self.metrics = Metrics()
        # one encoder per project type (disal.tasks), built at first use; tests inject tiny models
        factories = {k: v for k, v in (("adapter_factory", adapter_factory),
                                       ("image_model_factory", image_model_factory)) if v is not None}
        self.encoders = Encoders(self.settings, metrics=self.metrics, **factories)
        self._httpx_client = httpx_client
        self._ls_sleep = ls_sleep
        self._stores: dict[int, ProjectStore] = {}
        # from /setup, with its host; kept in MODEL_DIR/projects/<id>/setup_token.json (0600) for restarts
        self._tokens: dict[int, SetupToken] = {}
        self._verified: set[tuple[int, str, str]] = set()  # (project, url, key) that Label Studio confirmed
        REDACTOR.add_secret(self.settings.label_studio_api_key)
        REDACTOR.add_secret(self.settings.basic_auth_pass, self.settings.basic_auth_user)
        self._clients: dict[tuple, LabelStudioClient] = {}
        self._lock = threading.Lock()
        self.job = TrainingJob(self.settings, self.encoders, self.store, self.client_for, self.metrics, head_config)
        self.queue = job_queue
        self.jobs: JobManager | JobQueue = job_queue or JobManager(self.job, self.metrics)
        self.started = time.time()
        if warm_up:  # load the encoder (and torch's optimizer) in the background: the first call is then fast
            threading.Thread(target=self._warm_up, name="disal-warm-up", daemon=True).start()
        if resume:
            self._resume_at_start()

    def _resume_at_start(self) -> None:
        """A restarted backend serves the latest good version at once, and goes on where it stopped:
        a first round stopped mid-way resumes; with the durable queue, every project also gets a
        catch-up round, which retrains only if its labels in Label Studio changed meanwhile (the
        job compares them with its version's) and retries until Label Studio answers."""
        for pid in self._known_projects():
            v = self.store(pid).current()
            if v is None:
                continue
            self.metrics.queue_length.labels(str(pid)).set(len(v.priority))
            log.info("project %s: serving %s (%s, %d labels)", pid, v.name, v.kind, len(v.labels))
            part = partial_of(v)
            if part and self._can_reach(pid):  # stopped mid first round: go on encoding
                log.info("project %s: its queue covers %d/%d tasks: resuming the first round", pid,
                         part["encoded"], part["total"])
                self.jobs.submit(pid, JobRequest(initial=True, reasons={"resume partial queue": 1}))
            elif part:
                log.info("project %s: its queue covers %d/%d tasks; the first round resumes at Label "
                         "Studio's next /setup or annotation (no credentials for its Label Studio yet)", pid,
                         part["encoded"], part["total"])
            elif self.queue is not None and self._can_reach(pid):
                log.info("project %s: catch-up round queued (labels made while the backend was down)", pid)
                self.jobs.submit(pid, JobRequest(train=True, reasons={"catch-up at start-up": 1}))

    @property
    def encoder(self) -> FeatureEncoder:
        """The text projects' encoder (the default type; image projects: `encoders.for_type`)."""
        return self.encoders.for_type("text_classification")

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

    def _can_reach(self, project_id: int) -> bool:
        """Whether the credentials rule gives this project a (URL, key) now, without calling anyone."""
        try:
            self.credentials_for(project_id)
        except LabelStudioError:
            return False
        return True

    def _setup_token(self, project_id: int) -> SetupToken | None:
        """The project's /setup token, from its file (MODEL_DIR/projects/<id>/setup_token.json, 0600)."""
        # read each time: a worker process learns a token that /setup brought to the web process
        saved = self.store(project_id).load_setup_token()
        if saved is None:
            return self._tokens.get(project_id)
        token = SetupToken(*saved)
        if self._tokens.get(project_id) != token:
            self._tokens[project_id] = token
            REDACTOR.add_secret(token.token)
        return token

    def credentials_for(self, project_id: int, pinned_host: str | None = None,
                        token: SetupToken | None = None) -> tuple[str, str]:
        """(url, key) for a project by the rule in disal.credentials; LabelStudioError if none is allowed."""
        if pinned_host is None:
            pinned_host = self.store(project_id).load_info().get("hostname")
        try:
            return credentials.resolve(self.settings.label_studio_url, self.settings.label_studio_api_key,
                                       pinned_host, token or self._setup_token(project_id))
        except CredentialsError as exc:
            raise LabelStudioError("connect", str(exc)) from None

    def _client(self, url: str, key: str, *, timeout: float | None = None, retries: int | None = None
                ) -> LabelStudioClient:
        s = self.settings
        timeout = s.ls_timeout if timeout is None else timeout
        retries = s.ls_retries if retries is None else retries
        cache_key = (url, key, timeout, retries)
        with self._lock:
            client = self._clients.get(cache_key)
            if client is None:
                client = LabelStudioClient(url, key, httpx_client=self._httpx_client, timeout=timeout,
                                           retries=retries, backoff=s.ls_backoff, page_size=s.page_size,
                                           sleep=self._ls_sleep)
                self._clients[cache_key] = client
            return client

    def client_for(self, project_id: int) -> LabelStudioClient:
        """The Label Studio client for a project: the configured URL, or the host /setup pinned."""
        url, key = self.credentials_for(project_id)
        return self._client(url, key)

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
    def setup(self, payload: dict, host: str | None = None, authenticated: bool = False) -> dict:
        """Validate the request and the label config, confirm the project with Label Studio, remember
        it, and start the first queue if there is none. Nothing is stored for a request that fails."""
        if "project" not in payload:
            raise RequestError(400, "setup: missing 'project'")
        pid = parse_project_id(payload.get("project"), "setup")
        if "schema" not in payload:
            raise RequestError(400, "setup: missing 'schema' (the label config)")
        schema = payload.get("schema")
        if not isinstance(schema, str):
            raise RequestError(400, f"setup: 'schema' must be the label config as an XML string, got {_json_kind(schema)}")
        try:
            spec = parse_label_config(schema)
        except UnsupportedConfigError as exc:
            raise RequestError(422, str(exc)) from None
        raw_token, raw_host = payload.get("access_token"), payload.get("hostname")
        for key, value in (("access_token", raw_token), ("hostname", raw_host)):
            if value is not None and not isinstance(value, str):
                raise RequestError(400, f"setup: '{key}' must be a string, got {_json_kind(value)}")
        store = self.store(pid)
        info = store.load_info()
        hostname = None
        if raw_host and raw_host.strip():
            try:
                hostname = credentials.normalize_host_url(raw_host)
            except CredentialsError as exc:
                raise RequestError(400, f"setup: 'hostname' {exc}") from None
        pinned = info.get("hostname")
        if pinned:
            try:
                pinned = credentials.normalize_host_url(pinned)
            except CredentialsError:
                pinned = None  # an unusable stored host pins nothing; this request's host replaces it
        if not self.settings.label_studio_url and pinned and hostname and hostname != pinned and not authenticated:
            raise RequestError(409, f"setup: project {pid} is bound to the Label Studio at {pinned} (learnt from its "
                                    f"first /setup); an unauthenticated /setup cannot move it to {hostname}. Set "
                                    "LABEL_STUDIO_URL, or BASIC_AUTH_USER/PASS so that /setup is authenticated")
        bound = hostname or pinned
        token = SetupToken(bound, raw_token) if raw_token else None
        if token is None and (prev := self._setup_token(pid)) is not None and prev.host == bound:
            token = prev  # Label Studio repeats /setup; the token that came with this host stays paired with it
        self._verify_project(pid, bound, token)
        if token is not None:
            REDACTOR.add_secret(token.token)
            if self._tokens.get(pid) != token:
                store.save_setup_token(token.host, token.token)
            self._tokens[pid] = token
        hostname = bound
        hosts = list(info.get("backend_hosts") or [])
        if host and host not in hosts:  # how Label Studio reaches us: identifies our webhook
            hosts = (hosts + [host])[-5:]
        new_info = {"spec": spec.as_dict(), "hostname": hostname, "backend_hosts": hosts,
                    "extra_params": _extra_params(payload.get("extra_params"))}
        if new_info != {k: info.get(k) for k in new_info}:
            store.save_info({**info, **new_info, "setup_at": time.time()})
        current = store.current()
        if (current is None or partial_of(current) is not None
                or (self.settings.auth_enabled and not self._webhook_auth_ok(pid))):
            # the first queue (or finishing a partial one after a restart), or making sure the webhook
            # carries basic auth: in the background
            self.jobs.submit(pid, JobRequest(initial=True, reasons={"setup": 1}))
        return {"model_version": current.name if current else None, "status": "ok"}

    def _verify_project(self, pid: int, host: str | None, token: SetupToken | None) -> None:
        """GET the project from Label Studio before any state exists for it: a 4xx naming the problem
        for a project Label Studio does not have, a refused token or an unreachable host."""
        try:
            url, key = self.credentials_for(pid, pinned_host=host, token=token)
        except LabelStudioError as exc:
            raise RequestError(422, f"setup: {str(exc).split(': ', 1)[-1]}") from None
        if (pid, url, key) in self._verified:
            return
        client = self._client(url, key, timeout=self.settings.setup_verify_timeout_s, retries=0)
        try:
            client.get_project(pid)
        except LabelStudioError as exc:
            if exc.status == 404:
                raise RequestError(404, f"setup: project {pid} does not exist in the Label Studio at {url}") from None
            if exc.status in (401, 403):
                raise RequestError(422, f"setup: the Label Studio at {url} refused the access token for project "
                                        f"{pid} (HTTP {exc.status})") from None
            raise RequestError(422, f"setup: could not confirm project {pid} with the Label Studio at {url}: "
                                    f"{str(exc).split(': ', 1)[-1]}") from None
        self._verified.add((pid, url, key))

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
        if len(tasks) > self.settings.predict_max_tasks:
            raise RequestError(413, f"predict: {len(tasks)} tasks in one request; at most "
                                    f"{self.settings.predict_max_tasks} (PREDICT_MAX_TASKS). The backend pushes "
                                    "the queue's predictions itself after every round")
        spec = self._spec_for(project_id, label_config)
        version = self.store(project_id).current()
        # read with the project's own Label Studio credentials (images); none needed for text
        try:
            ls = self.client_for(project_id) if spec.task_type != "text_classification" else None
        except LabelStudioError:
            ls = None  # only Label Studio paths need it: MediaFetcher names the missing URL per task
        io = self.job.task_io(spec, ls)
        ids: list[int | None] = []
        texts: list = []
        bad: list[str] = []
        for i, task in enumerate(tasks):
            if not isinstance(task, dict):
                bad.append(f"item {i} is not a task object")
                continue
            tid = task.get("id")
            try:
                texts.append(io.read(task, spec))
                ids.append(int(tid) if isinstance(tid, int) or (isinstance(tid, str) and tid.isdigit()) else None)
            except TaskInputError as exc:
                bad.append(str(exc))
        if bad:
            raise RequestError(422, "predict: " + "; ".join(bad[:20]) + (f" (and {len(bad) - 20} more)" if len(bad) > 20 else ""))
        if version is None:
            return {"results": [], "model_version": None,
                    "message": f"project {project_id} has no model version yet (the first queue is being built)"}
        if not tasks:
            return {"results": [], "model_version": version.name}
        if version.spec.task_type != spec.task_type:  # the config changed type: the next round retrains for it
            return {"results": [], "model_version": version.name,
                    "message": f"project {project_id}: the label config is now {spec.task_type}, the current version "
                               f"{version.name} is {version.spec.task_type}; the next round retrains for the new config"}
        t0 = time.perf_counter()
        res = io.encode(ids, texts, save=False)
        if res.failed:  # an unreadable image: a 422 naming the task, as for a task without its input
            why = [f"task {tasks[p].get('id')}: {r}" for p, r in sorted(res.failed.items())]
            for line in why:
                log.warning("project %s: predict: %s", project_id, line)
            raise RequestError(422, "predict: " + "; ".join(why[:20]) + (f" (and {len(why) - 20} more)" if len(why) > 20 else ""))
        priorities, probs = self.job.place(version, ids, res.features, inputs=texts)  # top-N reads the texts
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
                payloads = {int(t["id"]): t for t in tasks
                            if isinstance(t, dict) and type(t.get("id")) is int and t["id"] > 0}  # not True, not -1
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
            outcome = self._submit(pid, req, event)
            return {"status": outcome, "action": event, "project": pid}
        return {"status": "ignored", "action": event}

    def _submit(self, pid: int, req: JobRequest, event: str) -> str:
        try:
            return self.jobs.submit(pid, req)
        except Exception as exc:  # noqa: BLE001 - the job store (Redis) is unreachable: say so, never a 500
            log.error("project %s: %s could not be queued: the job store does not answer (%s: %s); the labels stay "
                      "in Label Studio and the next round that runs trains on them", pid, event, type(exc).__name__, exc)
            self.metrics.errors.labels("job_queue").inc()
            raise RequestError(503, f"{event}: the job queue ({getattr(self.jobs, 'backend', 'threads')}) is "
                                    "unreachable; the labels stay in Label Studio and the next round trains on them",
                               headers={"Retry-After": "5"}) from None

    # -- /health, /metrics and /versions ---------------------------------------------------------
    def _webhook_auth_ok(self, pid: int) -> bool:
        if self.queue is not None:  # the worker that ran the project's last job saw it
            return bool((self.jobs.status(pid).get("last_job") or {}).get("webhook_auth_ok"))
        return pid in self.job.webhook_ok

    def _training_toggle(self, pid: int, job: dict) -> tuple[bool, bool | None]:
        """(known, on): Label Studio's training toggle as the project's last job read it."""
        if self.queue is not None:
            last = job.get("last_job") or {}
            return "training_on_annotation" in last, last.get("training_on_annotation")
        return pid in self.job.training_toggle, self.job.training_toggle.get(pid)

    def render_metrics(self) -> bytes:
        """This process's metrics, plus, with the durable queue, every worker's and the queue's."""
        if self.queue is None:
            return self.metrics.render()
        from prometheus_client.metrics_core import GaugeMetricFamily

        overview = self.queue.overview()
        depth = GaugeMetricFamily("disal_job_queue_depth", "Durable queue: tasks waiting (queued), retries "
                                  "scheduled (scheduled), projects with requests waiting (projects)", labels=["kind"])
        depth.add_metric(["queued"], overview["queued_tasks"])
        depth.add_metric(["scheduled"], overview["scheduled_tasks"])
        depth.add_metric(["projects"], overview["projects_waiting"])
        alive = GaugeMetricFamily("disal_job_workers", "Job worker processes whose heartbeat is fresh")
        alive.add_metric([], sum(1 for w in overview["workers"].values() if w["alive"]))
        per = GaugeMetricFamily("disal_worker_jobs", "Jobs each worker process ran, by outcome",
                                labels=["worker", "outcome"])
        for wid, w in sorted(overview["workers"].items()):
            for outcome in ("jobs_run", "jobs_failed", "retries"):
                per.add_metric([wid, outcome.removeprefix("jobs_")], w.get(outcome, 0))
        return render_merged(self.metrics.registry, self.queue.metric_snapshots(), [depth, alive, per])

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
                             classes=v.meta.get("classes"), task_type=v.spec.task_type,
                             regime=v.meta.get("regime") or ("head" if v.kind == "head" else None),
                             encoder=v.meta.get("encoder"))
                for key in ("hidden_cache", "regime_note"):  # top-N: its cache's size; why a project trains the head
                    if v.meta.get(key):
                        entry[key] = v.meta[key]
                skipped = v.meta.get("skipped") or {}
                if skipped.get("count"):  # tasks whose input (an image) could not be read: named, with why
                    entry["skipped_tasks"] = skipped
                if v.kind == "coldstart":
                    entry["note"] = COLDSTART_NOTE.format(n=len(v.meta.get("classes") or []))
                partial = partial_of(v)
                if partial:  # the served queue covers the tasks encoded when it was pushed; the job's count is newer
                    p, encoded = job["progress"], partial["encoded"]
                    if job["state"] == "encoding" and p.get("total") == partial["total"]:
                        encoded = max(encoded, p["done"])
                    entry["partial"] = {"encoded": encoded, "total": partial["total"], "queue_over": partial["encoded"]}
                    note = partial_note(encoded, partial["total"])
                    entry["note"] = f"{note}; {entry['note']}" if entry.get("note") else note
            known, on = self._training_toggle(pid, job)
            if known:  # Label Studio's training toggle, as the last job read it
                entry["training_on_annotation"] = on
                if on is False:
                    entry["training_note"] = TRAINING_OFF_NOTE.format(id=pid)
            if job.get("last_error"):
                entry["error"] = job["last_error"]["error"]
            projects[str(pid)] = entry
        out = {"status": "UP", "model_class": type(self).__name__, "strategy": self.settings.strategy,
                "encoder": self.encoder.model_id,
                "encoders": {t: e.model_id for t, e in self.encoders.built().items()},
                "encoder_runtime": self.job.encoder_runtime(),
                "train_mode": self.settings.train_mode, "warm_start": self.settings.warm_start,
                "uptime_s": round(time.time() - self.started, 1),
                "projects": projects}
        out["job_queue"] = self.queue.overview() if self.queue is not None else {"backend": "threads"}
        return out

    def versions(self, project: str | None = None) -> dict:
        """The versions that served (their push succeeded); a version killed mid-push never appears."""
        pids = [parse_project_id(project, "versions")] if project else self._known_projects()
        if project and not self.is_known(pids[0]):
            raise RequestError(404, f"versions: unknown project {pids[0]}; connect the backend (POST /setup) first")
        versions: list[str] = []
        current = {}
        for pid in pids:
            store = self.store(pid)
            versions += store.pushed_versions()
            v = store.current()
            current[str(pid)] = v.name if v else None
        out = {"versions": versions, "current": current}
        if project:
            out["model_version"] = current.get(str(pids[0]))
        return out

    def close(self) -> None:
        self.jobs.shutdown()
