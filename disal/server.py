"""The ML-backend protocol as Label Studio 1.23 speaks it, on Flask 3 (see ../shared/LABEL_STUDIO.md).

Routes: GET /health, POST /setup, POST /predict, POST /webhook, GET /versions, GET /metrics, and
for people GET / (the status page) and GET /status/<project>/curve.png.
Every route answers JSON (except /metrics: Prometheus text; / and the PNG), and bad input gets a 4xx with a
`message` naming what is wrong. With BASIC_AUTH_USER/PASS set, every route needs them.

The routes only parse, validate and hand over to the model object (model.py at the repo root),
which answers /webhook by queueing a background job: the web process never waits for training.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any, Protocol

from flask import Flask, Response, jsonify, request

from .status_page import curve_png_for, render_page

log = logging.getLogger(__name__)


class RequestError(Exception):
    """Bad input from the caller: becomes a 4xx JSON answer with `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BackendModel(Protocol):
    """What the routes need from the model object (model.DisalModel implements it)."""

    settings: Any
    metrics: Any

    def health(self) -> dict: ...
    def setup(self, payload: dict, host: str | None = None) -> dict: ...
    def predict_request(self, payload: dict) -> dict: ...
    def fit(self, event: str, data: dict) -> dict: ...
    def versions(self, project: str | None) -> dict: ...


def _json_body() -> dict:
    data = request.get_json(silent=True, force=True)
    if data is None:
        raise RequestError(400, "the request body is not valid JSON")
    if not isinstance(data, dict):
        raise RequestError(400, f"the request body must be a JSON object, got {type(data).__name__}")
    return data


def create_app(model: BackendModel) -> Flask:
    """The Flask app around one model object (one per process: jobs live in-process)."""
    app = Flask("disal")
    app.config["JSON_SORT_KEYS"] = False
    app.extensions["disal_model"] = model
    settings = model.settings

    @app.before_request
    def _auth() -> Response | None:
        if not settings.auth_enabled:
            return None
        auth = request.authorization
        ok = (auth is not None and auth.type == "basic"
              and hmac.compare_digest(str(auth.username or ""), settings.basic_auth_user)
              and hmac.compare_digest(str(auth.password or ""), settings.basic_auth_pass))
        if ok:
            return None
        model.metrics.errors.labels("auth").inc()
        resp = jsonify(status="error", message="authentication required")
        resp.status_code = 401
        resp.headers["WWW-Authenticate"] = 'Basic realm="disal-backend"'
        return resp

    @app.errorhandler(RequestError)
    def _request_error(exc: RequestError):
        model.metrics.errors.labels("request").inc()
        log.info("%s %s -> %d: %s", request.method, request.path, exc.status, exc.message)
        return jsonify(status="error", message=exc.message), exc.status

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
        if not (model.store(project_id).dir / "project.json").exists():
            raise RequestError(404, f"unknown project {project_id}")
        resp = Response(curve_png_for(model, project_id), mimetype="image/png")
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.post("/setup")
    def setup():
        return jsonify(model.setup(_json_body(), host=request.host))

    @app.post("/predict")
    def predict():
        t0 = time.perf_counter()
        out = model.predict_request(_json_body())
        model.metrics.predict_seconds.observe(time.perf_counter() - t0)
        return jsonify(out)

    @app.post("/webhook")
    def webhook():
        data = _json_body()
        action = data.get("action")
        if not isinstance(action, str) or not action:
            raise RequestError(400, "webhook payload has no 'action'")
        model.metrics.webhook_events.labels(action).inc()
        return jsonify(model.fit(action, data)), 201

    @app.get("/versions")
    def versions():
        return jsonify(model.versions(request.args.get("project")))

    @app.get("/metrics")
    def metrics():
        return Response(model.metrics.render(), mimetype="text/plain; version=0.0.4")

    return app
