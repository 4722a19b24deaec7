"""The ML-backend protocol as Label Studio 1.23 speaks it, on Flask 3 (see ../shared/LABEL_STUDIO.md).

Routes: GET /health, POST /setup, POST /predict, POST /webhook, GET /versions, GET /metrics, and
for people GET / (the status page) and GET /status/<project>/curve.png.
Every route answers JSON (except /metrics: Prometheus text; / and the PNG), and bad input gets a 4xx with a
`message` naming what is wrong. With BASIC_AUTH_USER/PASS set, every route needs them.

The routes only parse, validate and hand over to the model object (model.py at the repo root),
which answers /webhook by queueing a background job: the web process never waits for training.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import ClientDisconnected, HTTPException

from .auth import BasicAuth

from .status_page import curve_png_for, render_page

log = logging.getLogger(__name__)


class RequestError(Exception):
    """Bad input from the caller: becomes a 4xx JSON answer with `message` (and optional headers)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class BackendModel(Protocol):
    """What the routes need from the model object (model.DisalModel implements it)."""

    settings: Any
    metrics: Any

    def health(self) -> dict: ...
    def setup(self, payload: dict, host: str | None = None, authenticated: bool = False) -> dict: ...
    def predict_request(self, payload: dict) -> dict: ...
    def fit(self, event: str, data: dict) -> dict: ...
    def versions(self, project: str | None) -> dict: ...
    def render_metrics(self) -> bytes: ...


# Body limits per route (bytes come from Settings): Label Studio's real payloads are a label config
# (/setup), up to 5,000 serialized tasks in one TASKS_CREATED (/webhook), and every task the user
# selected for "Retrieve Predictions" (/predict).
_BODY_LIMITS = {"/predict": ("max_predict_bytes", "MAX_PREDICT_BYTES"),
                "/webhook": ("max_webhook_bytes", "MAX_WEBHOOK_BYTES")}
_DEFAULT_LIMIT = ("max_request_bytes", "MAX_REQUEST_BYTES")

# Label Studio 1.23's webhook actions (webhooks/models.py); anything else is counted as "other".
LABEL_STUDIO_ACTIONS = frozenset((
    "PROJECT_CREATED", "PROJECT_UPDATED", "PROJECT_DELETED", "TASKS_CREATED", "TASKS_DELETED",
    "ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED",
    "LABEL_LINK_CREATED", "LABEL_LINK_UPDATED", "LABEL_LINK_DELETED", "START_TRAINING",
    "REVIEW_CREATED", "REVIEW_UPDATED", "REVIEWS_DELETED"))


def json_depth_exceeds(obj: Any, limit: int) -> bool:
    """True if `obj` nests deeper than `limit` (iterative: a deep document cannot overflow the stack)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def parse_json_body(raw: bytes, max_depth: int) -> dict:
    """The body as a JSON object, or a RequestError naming what is wrong with it."""
    if not raw.strip():
        raise RequestError(400, "the request body is empty; send a JSON object")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise RequestError(400, f"the request body nests deeper than {max_depth} levels (MAX_JSON_DEPTH)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the request body is not valid JSON ({exc.__class__.__name__}: {exc})"[:300]) from None
    if not isinstance(data, dict):
        raise RequestError(400, f"the request body must be a JSON object, got {type(data).__name__}")
    if json_depth_exceeds(data, max_depth):
        raise RequestError(400, f"the request body nests deeper than {max_depth} levels (MAX_JSON_DEPTH)")
    return data


def _json_body(max_depth: int = 64) -> dict:
    try:
        raw = request.get_data(cache=False)
    except (TimeoutError, ClientDisconnected):  # the worker's read deadline (REQUEST_TIMEOUT_S) or a hang-up
        raise RequestError(408, "the request body did not arrive in time (REQUEST_TIMEOUT_S)") from None
    return parse_json_body(raw, max_depth)


class PredictGate:
    """At most `limit` /predict requests compute at once; another waits `wait_s`, then gets 503.

    Why: /predict can take seconds to minutes (encoding new texts), and request threads are shared
    with /webhook, which Label Studio gives 1 s and never retries.
    """

    def __init__(self, limit: int, wait_s: float) -> None:
        self._sem = threading.BoundedSemaphore(limit)
        self.limit, self.wait_s = limit, wait_s

    def __enter__(self) -> "PredictGate":
        if not self._sem.acquire(timeout=self.wait_s):
            retry = max(1, int(round(self.wait_s * 2)))
            raise RequestError(503, f"busy: {self.limit} /predict request(s) are being computed "
                                    f"(PREDICT_CONCURRENCY); retry in {retry} s", {"Retry-After": str(retry)})
        return self

    def __exit__(self, *exc) -> None:
        self._sem.release()


def create_app(model: BackendModel) -> Flask:
    """The Flask app around one model object (one per process; its jobs run in worker processes)."""
    app = Flask("disal")
    app.config["JSON_SORT_KEYS"] = False
    app.extensions["disal_model"] = model
    settings = model.settings
    basic_auth = BasicAuth(settings.basic_auth_user, settings.basic_auth_pass) if settings.auth_enabled else None
    predict_gate = PredictGate(settings.predict_concurrency, settings.predict_wait_s)
    max_depth = settings.max_json_depth

    @app.before_request
    def _auth() -> Response | None:
        if basic_auth is None or basic_auth.check(request.headers.get("Authorization")):
            return None
        model.metrics.errors.labels("auth").inc()
        resp = jsonify(status="error", message="authentication required")
        resp.status_code = 401
        resp.headers["WWW-Authenticate"] = 'Basic realm="disal-backend"'
        return resp

    @app.before_request
    def _body_limit() -> None:
        """413 before a byte of an oversized body is read (also caps chunked bodies while they stream)."""
        field, env = _BODY_LIMITS.get(request.path, _DEFAULT_LIMIT)
        limit = int(getattr(settings, field))
        request.max_content_length = limit
        if request.content_length is not None and request.content_length > limit:
            raise RequestError(413, f"the request body is {request.content_length} bytes; {request.path} accepts "
                                    f"at most {limit} ({env})")

    @app.errorhandler(RequestError)
    def _request_error(exc: RequestError):
        model.metrics.errors.labels("request").inc()
        log.info("%s %s -> %d: %s", request.method, request.path, exc.status, exc.message)
        resp = jsonify(status="error", message=exc.message)
        resp.status_code = exc.status
        for k, v in exc.headers.items():
            resp.headers[k] = v
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        """Werkzeug's own 4xx (a malformed request, a hang-up) keep their status, as JSON."""
        return jsonify(status="error", message=f"{exc.name}: {exc.description}"), exc.code or 400

    @app.errorhandler(413)
    def _too_large(exc):
        field, env = _BODY_LIMITS.get(request.path, _DEFAULT_LIMIT)
        return jsonify(status="error", message=f"the request body is larger than {request.path} accepts "
                                               f"({getattr(settings, field)} bytes, {env})"), 413

    @app.errorhandler(404)
    def _not_found(exc):
        return jsonify(status="error", message=f"no route {request.method} {request.path}"), 404

    @app.errorhandler(405)
    def _bad_method(exc):
        return jsonify(status="error", message=f"{request.method} is not allowed on {request.path}"), 405

    @app.errorhandler(Exception)
    def _internal(exc: Exception):
        model.metrics.errors.labels("internal").inc()
        log.exception("%s %s failed", request.method, request.path)
        return jsonify(status="error", message=f"internal error: {type(exc).__name__}: {exc}"), 500

    @app.get("/health")
    def health():
        return jsonify(model.health())

    @app.get("/")
    def status_page():
        """A person's view of training (disal.status_page); /health stays the machines' JSON."""
        return Response(render_page(model), mimetype="text/html")

    @app.get("/status/<int:project_id>/curve.png")
    def curve_png(project_id: int):
        # checked on disk first: an unknown id must not create a store in memory
        if not (Path(model.settings.model_dir) / "projects" / str(project_id) / "project.json").exists():
            raise RequestError(404, f"unknown project {project_id}")
        resp = Response(curve_png_for(model, project_id), mimetype="image/png")
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.post("/setup")
    def setup():
        return jsonify(model.setup(_json_body(max_depth), host=request.host, authenticated=basic_auth is not None))

    @app.post("/predict")
    def predict():
        payload = _json_body(max_depth)
        with predict_gate:
            t0 = time.perf_counter()
            out = model.predict_request(payload)
            model.metrics.predict_seconds.observe(time.perf_counter() - t0)
        return jsonify(out)

    @app.post("/webhook")
    def webhook():
        data = _json_body(max_depth)
        if "action" not in data:
            raise RequestError(400, "webhook payload has no 'action'")
        action = data.get("action")
        if not isinstance(action, str) or not action.strip():
            raise RequestError(400, f"webhook 'action' must be a non-empty string like 'ANNOTATION_CREATED', "
                                    f"got {json.dumps(action)[:50]}")
        if len(action) > 64:
            raise RequestError(400, f"webhook 'action' is {len(action)} characters long; Label Studio's are short "
                                    "names like 'ANNOTATION_CREATED'")
        # a bounded label set: arbitrary action strings must not grow /metrics without end
        model.metrics.webhook_events.labels(action if action in LABEL_STUDIO_ACTIONS else "other").inc()
        return jsonify(model.fit(action, data)), 201

    @app.get("/versions")
    def versions():
        return jsonify(model.versions(request.args.get("project")))

    @app.get("/metrics")
    def metrics():
        return Response(model.render_metrics(), mimetype="text/plain; version=0.0.4")

    return app
