"""Start and stop a real Label Studio 1.23 and the backend as local processes, bound to 127.0.0.1.

Used by `make demo` (scripts/demo.py) and by the end-to-end tests (tests/e2e). Each service runs in
its own process group so stopping it stops everything it spawned. Label Studio runs from its own
virtual environment (.ls-venv), as a separate service would in production.

    python scripts/local_services.py labelstudio --port 8080 --data-dir .demo/labelstudio
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
LS_BIN = ROOT / ".ls-venv" / "bin" / "label-studio"
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"

# Label Studio reads LABEL_STUDIO_X, then HEARTEX_X, then plain X: never let these leak in.
_STRAY = ("PORT", "HOST", "USERNAME", "PASSWORD", "DEBUG", "DJANGO_DB", "DATABASE_URL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path, auth=None) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{url}: the process exited with {proc.returncode} before answering; log tail:\n{tail}")
        try:
            if httpx.get(url, timeout=2, auth=auth).status_code == 200:
                return time.time() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s (log: {log})")


def _stop(proc: subprocess.Popen | None, grace: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


class LabelStudioServer:
    """A headless Label Studio with a known account and legacy API token."""

    def __init__(self, data_dir: Path, port: int = 8080, username: str = "admin@example.com",
                 password: str = "disal-demo-pass", token: str = "disal-demo-token-0001") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port, self.username, self.password, self.token = port, username, password, token
        self.url = f"http://127.0.0.1:{port}"
        self.log = self.data_dir / "labelstudio.log"
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in _STRAY and not k.startswith(("LABEL_STUDIO_", "HEARTEX_"))}
        env.update({
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            "LABEL_STUDIO_USERNAME": self.username,
            "LABEL_STUDIO_PASSWORD": self.password,
            "LABEL_STUDIO_USER_TOKEN": self.token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "ML_BLOCK_LOCAL_IP": "false",          # the backend is on 127.0.0.1
            "SSRF_PROTECTION_ENABLED": "false",    # otherwise connect is refused and webhooks dropped
            "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false",
            "LATEST_VERSION_CHECK": "false",
        })
        return env

    def start(self, timeout: float = 240.0) -> "LabelStudioServer":
        if not LS_BIN.exists():
            raise FileNotFoundError(f"{LS_BIN} is missing: run `make install-ls`")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [str(LS_BIN), "start", "--internal-host", "127.0.0.1", "-p", str(self.port), "--no-browser"],
            env=self.env(), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            cwd=self.data_dir,
        )
        fh.close()  # the child has its own copy
        try:
            self.started_in = _wait_http(self.url + "/health", timeout, self.proc, self.log)
        except BaseException:
            self.stop()  # never leave a half-started Label Studio behind (a timeout, Ctrl-C)
            raise
        return self

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Token {self.token}"}, timeout=timeout)

    def stop(self) -> None:
        _stop(self.proc)

    def __enter__(self) -> "LabelStudioServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class BackendServer:
    """The backend under gunicorn, exactly as `make serve` runs it (one worker, threads)."""

    def __init__(self, model_dir: Path, port: int = 9090, label_studio: LabelStudioServer | None = None,
                 extra_env: dict | None = None, log: Path | None = None) -> None:
        self.model_dir = Path(model_dir).resolve()
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ls = label_studio
        self.extra_env = dict(extra_env or {})
        self.log = Path(log) if log else self.model_dir.parent / f"backend-{port}.log"
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict:
        env = dict(os.environ)
        env.update({"MODEL_DIR": str(self.model_dir), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        if self.ls is not None:
            env.update({"LABEL_STUDIO_URL": self.ls.url, "LABEL_STUDIO_API_KEY": self.ls.token})
        env.update(self.extra_env)
        return env

    def auth(self):
        e = self.env()
        return (e["BASIC_AUTH_USER"], e["BASIC_AUTH_PASS"]) if e.get("BASIC_AUTH_USER") else None

    def start(self, timeout: float = 120.0) -> "BackendServer":
        self.model_dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [str(GUNICORN), "--workers", "1", "--threads", "8", "--bind", f"127.0.0.1:{self.port}",
             "--timeout", "120", "--graceful-timeout", "10", "_wsgi:app"],
            env=self.env(), cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        fh.close()
        try:
            self.started_in = _wait_http(self.url + "/health", timeout, self.proc, self.log, auth=self.auth())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        _stop(self.proc)

    def __enter__(self) -> "BackendServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run a local Label Studio 1.23 until Ctrl-C.")
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("labelstudio")
    ls.add_argument("--port", type=int, default=8080)
    ls.add_argument("--data-dir", type=Path, default=ROOT / ".demo" / "labelstudio")
    args = p.parse_args(argv)
    server = LabelStudioServer(args.data_dir, args.port).start()
    print(f"Label Studio at {server.url} (login {server.username} / {server.password}, token {server.token}); "
          "Ctrl-C stops it", flush=True)
    try:
        while server.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
