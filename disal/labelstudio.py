"""Every call the backend makes to Label Studio, with retries and backoff. Nothing else talks to it.

Built on `label-studio-sdk` 2.1.2 (`LabelStudio(base_url=..., api_key=...)`, both always explicit:
the SDK's defaults read the environment at import time and point at port 8000). Tests inject
`httpx_client=httpx.Client(transport=httpx.MockTransport(handler))`.

Retries are ours, not the SDK's (its own are switched off with max_retries=0) so that a connection
error, a timeout, a 429 or a 5xx are all retried the same way with exponential backoff, and a final
failure becomes one `LabelStudioError` that names the operation and never carries the token.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

log = logging.getLogger(__name__)

QUEUE_VIEW_TITLE = "DISAL queue"
UNCERTAINTY_SAMPLING = "Uncertainty sampling"
VERSION_PREFIX = "disal-"

_LABELED_QUERY = {"filters": {"conjunction": "and", "items": [
    {"filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number", "value": 0}]}}
_UNLABELED_FILTERS = {"conjunction": "and", "items": [
    {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0}]}


class LabelStudioError(RuntimeError):
    """Label Studio could not be reached or refused a call after retries; names the operation."""

    def __init__(self, operation: str, detail: str, status: int | None = None) -> None:
        super().__init__(f"Label Studio {operation} failed: {detail}")
        self.operation = operation
        self.status = status


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, httpx.TransportError):  # connect errors, timeouts, protocol errors
        return True
    if isinstance(exc, ApiError):
        return exc.status_code is None or exc.status_code >= 500 or exc.status_code in (408, 429)
    return False


_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _summarize_body(body: str) -> str:
    """An error body for a log line or /health: JSON as it is (cut), an HTML page only by its title."""
    head = body.lstrip()[:200].lower()
    if head.startswith(("<!doctype html", "<html")) or "<html" in head:
        m = _TITLE_RE.search(body)
        title = " ".join(m.group(1).split())[:100] if m else "no title"
        return f"an HTML page ({title})"
    return body[:300]


def _describe(exc: Exception) -> tuple[str, int | None]:
    if isinstance(exc, ApiError):
        body = exc.body if isinstance(exc.body, (str, dict, list)) else repr(exc.body)
        text = json.dumps(body)[:300] if not isinstance(body, str) else _summarize_body(body)
        return f"HTTP {exc.status_code}: {text}", exc.status_code
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})", None
    if isinstance(exc, httpx.TransportError):
        return f"unreachable ({type(exc).__name__}: {exc})", None
    return f"{type(exc).__name__}: {exc}", None


def _as_dict(obj: Any) -> dict:
    """SDK pydantic models -> plain dicts (extra fields kept)."""
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    return obj.dict()


@dataclass(frozen=True)
class CleanupPlan:
    """Which old versions' predictions to delete now, and the superseded-at ledger to keep."""

    delete: list[str]  # superseded more than the grace ago, oldest first
    waiting: dict[str, float]  # still within their grace: {version: seconds left}
    superseded: dict[str, float]  # the ledger to save: {version: superseded at}, listed versions only


def plan_version_cleanup(listed: Iterable[str], current: str, superseded: dict[str, float], now: float,
                         grace_s: float, prefix: str) -> CleanupPlan:
    """Lagged deletion of old versions' predictions, as a pure function of the ledger and the clock.

    Why lagged: a task open in Label Studio's UI was started from a prediction of the version that was
    current when it opened, and its Submit sends `parent_prediction: <id>`; once that prediction is
    deleted, Label Studio answers 400 and the annotation is lost. So a version's predictions go only
    when it was superseded more than `grace_s` ago. A listed version the ledger does not know (pushed
    before a restart, or by a push that failed halfway) counts as superseded now, when first seen.
    The current version and other backends' versions (not `prefix`) are never touched.
    """
    ledger: dict[str, float] = {}
    delete: list[str] = []
    waiting: dict[str, float] = {}
    for name in listed:
        if name == current or not name.startswith(prefix):
            continue
        at = float(superseded.get(name, now))
        ledger[name] = at
        left = at + grace_s - now
        if grace_s <= 0 or left < 0:  # grace 0: delete every older version at once (the old behaviour)
            delete.append(name)
        else:
            waiting[name] = left
    delete.sort(key=lambda n: (ledger[n], n))
    return CleanupPlan(delete=delete, waiting=waiting, superseded=ledger)



def training_on_annotation(project: dict) -> bool | None:
    """Label Studio's "Start model training on annotation submission" toggle (project Settings > Model).

    1.23 keeps it as the project's `min_annotations_to_start_training` (0 = off; the toggle writes 1)
    and serializes it as `start_training_on_annotation_update`. While it is on, Label Studio itself
    calls the ML backend's train (a START_TRAINING webhook) after every Nth annotation. None: the
    project carries neither field, so we cannot tell.
    """
    flag = project.get("start_training_on_annotation_update")
    if isinstance(flag, bool):
        return flag
    n = project.get("min_annotations_to_start_training")
    if isinstance(n, int) and not isinstance(n, bool):
        return n > 0
    return None


def basic_auth_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class LabelStudioClient:
    """A Label Studio connection for one base URL and token.

    retries: extra attempts after the first; backoff: first delay in seconds, doubled each retry.
    `sleep` is injectable so tests run the retry path without waiting.
    """

    def __init__(self, url: str, api_key: str, *, httpx_client: httpx.Client | None = None,
                 timeout: float = 30.0, retries: int = 4, backoff: float = 0.5, page_size: int = 500,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not url:
            raise LabelStudioError("connect", "no Label Studio URL: set LABEL_STUDIO_URL")
        if not api_key:
            raise LabelStudioError("connect", "no API key: set LABEL_STUDIO_API_KEY or reconnect the backend")
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.page_size = page_size
        self._sleep = sleep
        self._http = httpx_client or httpx.Client(timeout=timeout, follow_redirects=True)
        self.sdk = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout, max_retries=0,
                               httpx_client=self._http)

    def __repr__(self) -> str:  # never the token
        return f"LabelStudioClient({self.url!r})"

    # -- plumbing --------------------------------------------------------------------------------
    def _call(self, operation: str, fn: Callable[[], Any]) -> Any:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classified below
                detail, status = _describe(exc)
                if not _retryable(exc) or attempt == self.retries:
                    raise LabelStudioError(operation, detail + (f" (after {attempt + 1} attempts)" if attempt else ""),
                                           status) from exc
                log.warning("Label Studio %s: %s; retry %d/%d in %.1fs", operation, detail, attempt + 1,
                            self.retries, delay)
                self._sleep(delay)
                delay *= 2

    def _raw(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None) -> Any:
        """A request through the SDK's own authenticated httpx client, for endpoints the SDK lacks."""
        resp = self.sdk._client_wrapper.httpx_client.request(path, method=method, json=json_body, params=params,
                                                             request_options={"max_retries": 0})
        if not 200 <= resp.status_code < 300:
            try:
                body = resp.json()
            except ValueError:
                body = resp.text
            raise ApiError(status_code=resp.status_code, headers=dict(resp.headers), body=body)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    # -- projects --------------------------------------------------------------------------------
    def get_project(self, project_id: int) -> dict:
        """The project as a dict: label_config, model_version, sampling, title, ..."""
        return _as_dict(self._call(f"get project {project_id}", lambda: self.sdk.projects.get(id=project_id)))

    def set_model_version(self, project_id: int, version: str) -> None:
        """PATCH project.model_version: the Data Manager's prediction score only counts this version."""
        self._call(f"set model_version of project {project_id}",
                   lambda: self.sdk.projects.update(id=project_id, model_version=version))

    def set_uncertainty_sampling(self, project_id: int) -> None:
        """'Label All Tasks' then follows ascending prediction score (our queue priority)."""
        self._call(f"set sampling of project {project_id}",
                   lambda: self.sdk.projects.update(id=project_id, sampling=UNCERTAINTY_SAMPLING))

    # -- tasks -----------------------------------------------------------------------------------
    def iter_tasks(self, project_id: int, query: dict | None = None,
                   progress: Callable[[int, int], None] | None = None, fields: str = "all",
                   include: str | None = None) -> Iterator[dict]:
        """Every task matching `query`, page by page (each page retried on its own).

        fields="all" includes annotations and predictions; "task_only" is about 2x faster and still
        carries data and total_annotations; include="id,data,total_annotations" serializes only
        those and halves a page's time again (1.10 s vs 2.31 s per 1,000 tasks, 1.23.2).
        """
        q = json.dumps(query) if query else None
        page, seen, total = 1, 0, None
        while True:
            def fetch(p=page):
                return self.sdk.tasks.list(project=project_id, fields=fields, page=p, page_size=self.page_size,
                                           query=q, include=include)
            try:
                pager = self._call(f"list tasks of project {project_id} (page {page})", fetch)
            except LabelStudioError as exc:
                if exc.status == 404 and page > 1:  # Label Studio answers 404 past the last page
                    return
                raise
            items = pager.items or []
            total = getattr(pager.response, "total", None) if total is None else total
            for item in items:
                yield _as_dict(item)
            seen += len(items)
            if progress:
                progress(seen, total if total is not None else seen)
            if not items or len(items) < self.page_size or (total is not None and seen >= total):
                return
            page += 1

    def fetch_labeled_tasks(self, project_id: int, progress=None) -> list[dict]:
        """Tasks with at least one (non-skipped) annotation; callers still check each annotation."""
        return list(self.iter_tasks(project_id, _LABELED_QUERY, progress))

    def fetch_unlabeled_tasks(self, project_id: int, progress=None) -> list[dict]:
        """Tasks without a (non-skipped) annotation: the pool to score."""
        query = {"filters": _UNLABELED_FILTERS}
        out = []
        for task in self.iter_tasks(project_id, query, progress, fields="task_only",
                                    include="id,data,total_annotations"):
            if (task.get("total_annotations") or 0) > 0:  # the server ignored the filter: do not score labeled tasks
                continue
            out.append(task)
        return out

    def get_task(self, task_id: int) -> dict:
        return _as_dict(self._call(f"get task {task_id}", lambda: self.sdk.tasks.get(id=task_id)))

    def media_fetcher(self, timeout: float = 20.0, max_bytes: int = 20 * 1024 * 1024) -> "MediaFetcher":
        """Reads this project's media files (disal.media): Label Studio paths with this client's token,
        other hosts without it."""
        from .media import MediaFetcher

        def authorization() -> dict[str, str]:
            auth = self.sdk._client_wrapper.get_headers().get("Authorization")  # a PAT is refreshed here
            return {"Authorization": auth} if auth else {}

        return MediaFetcher(self.url, authorization, client=self._http, timeout=timeout, max_bytes=max_bytes)

    # -- predictions -----------------------------------------------------------------------------
    def import_predictions(self, project_id: int, predictions: Sequence[dict], chunk_size: int = 500,
                           progress: Callable[[int, int], None] | None = None) -> int:
        """Bulk import in chunks (one request per chunk, ~1 ms per prediction server-side)."""
        done = 0
        for s in range(0, len(predictions), chunk_size):
            chunk = list(predictions[s : s + chunk_size])
            self._call(f"import {len(chunk)} predictions into project {project_id}",
                       lambda c=chunk: self.sdk.projects.import_predictions(id=project_id, request=c))
            done += len(chunk)
            if progress:
                progress(done, len(predictions))
        return done

    def list_model_versions(self, project_id: int) -> dict[str, int]:
        """{model_version: prediction count}. Raw call: the SDK 2.1.2 has no model-versions endpoint."""
        data = self._call(f"list model versions of project {project_id}",
                          lambda: self._raw("GET", f"api/projects/{project_id}/model-versions/"))
        if isinstance(data, dict):
            return {str(k): int(v) if isinstance(v, (int, float)) else 0 for k, v in data.items()}
        if isinstance(data, list):  # some versions answer a list of {"model_version", "count"}
            return {str(d.get("model_version")): int(d.get("count") or 0) for d in data if isinstance(d, dict)}
        return {}

    def delete_model_version(self, project_id: int, version: str) -> None:
        """Delete one version's predictions. Raw call: the SDK 2.1.2 has no model-versions endpoint."""
        self._call(f"delete predictions of {version} in project {project_id}",
                   lambda: self._raw("DELETE", f"api/projects/{project_id}/model-versions/",
                                     json_body={"model_version": version}))

    def delete_old_versions(self, project_id: int, keep: str, superseded: dict[str, float] | None = None,
                            now: float | None = None, grace_s: float = 0.0, prefix: str = VERSION_PREFIX,
                            on_plan: Callable[[CleanupPlan], None] | None = None) -> CleanupPlan:
        """Delete the predictions of older versions this backend pushed that were superseded more than
        `grace_s` ago (see plan_version_cleanup); `keep` (the current version) and other backends'
        versions stay. `on_plan` receives the plan before anything is deleted, so the caller can save
        the ledger (first-seen versions included) even if a deletion then fails.
        """
        now = time.time() if now is None else now
        plan = plan_version_cleanup(self.list_model_versions(project_id), keep, superseded or {}, now, grace_s,
                                    prefix)
        if on_plan:
            on_plan(plan)
        for version in plan.delete:
            self.delete_model_version(project_id, version)
        return plan

    # -- Data Manager view -----------------------------------------------------------------------
    def ensure_queue_view(self, project_id: int, title: str = QUEUE_VIEW_TITLE) -> int:
        """A tab with the unlabeled tasks, ordered by ascending prediction score (= our priority)."""
        views = self._call(f"list views of project {project_id}", lambda: self.sdk.views.list(project=project_id))
        for view in views:
            v = _as_dict(view)
            if (v.get("data") or {}).get("title") == title:
                return int(v["id"])
        data = {"title": title, "filters": _UNLABELED_FILTERS, "ordering": ["tasks:predictions_score"]}
        view = self._call(f"create view in project {project_id}",
                          lambda: self.sdk.views.create(project=project_id, data=data))
        log.info("project %s: created Data Manager view %r", project_id, title)
        return int(_as_dict(view)["id"])

    # -- webhooks --------------------------------------------------------------------------------
    def ensure_webhook_auth(self, project_id: int, user: str, password: str,
                            backend_hosts: Sequence[str]) -> tuple[int, int]:
        """Make this backend's project webhook carry basic auth; returns (patched now, carrying it).

        The webhook Label Studio creates on connect points at `<backend url>/webhook` without an
        Authorization header, so annotation events would get 401. It is recognised by its host
        (`backend_hosts`: the Host Label Studio used to reach us, and BACKEND_URL), so another
        service's webhook never receives our credentials. Deliberately no ML-backend listing here:
        Label Studio answers GET /api/ml by calling our /setup again, which would loop.
        """
        header = basic_auth_header(user, password)
        hosts = {h.lower() for h in backend_hosts if h}
        hooks = self._call(f"list webhooks of project {project_id}",
                           lambda: self.sdk.webhooks.list(project=str(project_id)))
        patched = carrying = 0
        for hook in hooks:
            h = _as_dict(hook)
            url = httpx.URL(str(h.get("url") or ""))
            if url.netloc.decode().lower() not in hosts or not url.path.rstrip("/").endswith("/webhook"):
                continue
            headers = dict(h.get("headers") or {})
            if headers.get("Authorization") == header:
                carrying += 1
                continue
            headers["Authorization"] = header
            self._call(f"patch webhook {h.get('id')}", lambda i=h["id"], hd=headers: self.sdk.webhooks.update(
                id=int(i), headers=hd))
            patched += 1
            carrying += 1
        if patched:
            log.info("project %s: %d webhook(s) now carry basic auth", project_id, patched)
        return patched, carrying

    def close(self) -> None:
        try:
            self.sdk._client_wrapper.httpx_client.httpx_client.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass

