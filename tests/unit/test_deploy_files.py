"""What can be checked of the Docker files without a Docker engine (none runs on the CI machines)."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from disal.config import ENV_DOC
from disal.healthcheck import check

ROOT = Path(__file__).resolve().parents[2]


def env_names() -> set[str]:
    return {n.strip() for k in ENV_DOC for n in k.split("/")}


def test_compose_wires_label_studio_and_the_backend():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    ls, be = compose["services"]["label-studio"], compose["services"]["disal-backend"]
    assert ls["image"] == "heartexlabs/label-studio:1.23.2"
    # Label Studio may call a backend on a private address, and sends no telemetry
    for key, value in {"ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false",
                       "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true"}.items():
        assert ls["environment"][key] == value
    assert be["environment"]["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    assert set(be["environment"]) <= env_names(), "every backend variable is one the backend reads"
    # both services keep their state in named volumes
    redis = compose["services"]["redis"]
    assert {v.split(":")[0] for v in ls["volumes"] + be["volumes"] + redis["volumes"]} == set(compose["volumes"])
    assert any(v.endswith(":" + be["environment"]["MODEL_DIR"]) for v in be["volumes"])
    assert be["build"] == "."


def test_compose_runs_jobs_through_redis_with_a_scalable_worker_service():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    be, worker, redis = services["disal-backend"], services["disal-worker"], services["redis"]
    assert "--appendonly" in redis["command"], "Redis keeps the queue across its restarts"
    assert worker["command"] == ["python", "-m", "disal.worker"] and worker["image"] == be["image"]
    assert be["environment"]["REDIS_URL"] == worker["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert set(worker["environment"]) <= env_names()
    # workers read and write the same versions and feature cache as the web process
    assert worker["volumes"] == be["volumes"]
    assert "ports" not in worker, "a worker serves nothing: --scale needs no port"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^worker: install\n\t.*-m disal\.worker$", makefile, re.M)


def test_dockerfile_pins_cpu_torch_installs_the_requirements_and_runs_one_gunicorn_worker():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert "torch==2.13.0" in text and "TORCH_INDEX_URL" in text
    assert "pip install -r requirements.txt" in text and "pip install --no-deps -r requirements-data.txt" in text
    assert "--workers 1" in text and "_wsgi:app" in text
    assert "HF_HUB_OFFLINE=1" in text
    # every file the image copies exists
    for src in re.findall(r"^COPY (?:--chown=\S+ )?(.+?) \S+$", text, re.M):
        for name in src.split():
            assert (ROOT / name).exists(), name
    # the requirement pins agree with the image
    assert "torch==2.13.0" in (ROOT / "requirements.txt").read_text()


class _Handler(BaseHTTPRequestHandler):
    expected = None

    def do_GET(self):  # noqa: N802
        ok = self.path == "/health" and self.headers.get("Authorization") == self.expected
        self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("with_auth", [False, True])
def test_healthcheck_sends_credentials_when_set(monkeypatch, with_auth):
    _Handler.expected = "Basic dTpw" if with_auth else None
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = str(server.server_address[1])
        monkeypatch.delenv("BASIC_AUTH_USER", raising=False)
        monkeypatch.delenv("BASIC_AUTH_PASS", raising=False)
        if with_auth:
            assert check(port) == 1  # no credentials: 401 is unhealthy
            monkeypatch.setenv("BASIC_AUTH_USER", "u")
            monkeypatch.setenv("BASIC_AUTH_PASS", "p")
        assert check(port) == 0
    finally:
        server.shutdown()
    assert check(port) == 1  # nothing listens any more
