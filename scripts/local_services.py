"""Start and stop a real Label Studio 1.23 and the backend as local processes, bound to 127.0.0.1.

Used by `make demo` (scripts/demo.py) and by the end-to-end tests (tests/e2e). Each service runs in
its own process group so stopping it stops everything it spawned. Label Studio runs from its own
virtual environment (.ls-venv), as a separate service would in production.

The command line for a Label Studio of your own is scripts/labelstudio_server.py.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
LS_BIN = ROOT / ".ls-venv" / "bin" / "label-studio"
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
PYTHON = ROOT / ".venv" / "bin" / "python"
REDIS_SERVER = "/usr/bin/redis-server"  # Debian's redis-server (make install-system)

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


def _group_running(pgid: int) -> bool:
    """Whether process group `pgid` still has a live (non-zombie) member.

    Why not only `killpg(pgid, 0)`: it succeeds on a zombie, and the leader stays a zombie until
    its parent reaps it, so polling it alone waited the whole grace after every clean exit.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's group: it exists and we cannot look closer
        return True
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():  # no /proc (not Linux): killpg said it exists
        return True
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ')'
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _reap(pid: int, proc: subprocess.Popen | None) -> None:
    """Reap the group leader if it is our child and has exited (no-op otherwise)."""
    if proc is not None:
        proc.poll()
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (e.g. a pid file's server): its parent reaps it
        pass


def stop_process_group(pid: int, grace: float = 15.0, proc: subprocess.Popen | None = None) -> bool:
    """SIGTERM the process group `pid` leads, SIGKILL it after `grace` seconds. True if it was running.

    Returns as soon as no live member is left (zombies do not count); `proc`, the leader's Popen when
    we started it, is reaped on the way.
    """
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    t0 = time.monotonic()
    delay = 0.01
    while time.monotonic() - t0 < grace:
        _reap(pid, proc)
        if not _group_running(pid):
            _reap(pid, proc)  # it may have exited between the two looks
            return True
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def _stop(proc: subprocess.Popen | None, grace: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    stop_process_group(proc.pid, grace, proc)
    proc.wait(5)  # reap it


def _spawn(cmd: list[str], env: dict, cwd: Path, log: Path, health_url: str, timeout: float,
           auth=None) -> tuple[subprocess.Popen, float]:
    """Start `cmd` in its own process group, logging to `log`, and wait until `health_url` answers 200.

    A process that does not come up (it exits, times out, or Ctrl-C arrives) is stopped, never orphaned.
    """
    with open(log, "ab") as fh:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc, _wait_http(health_url, timeout, proc, log, auth=auth)
    except BaseException:
        _stop(proc)
        raise


def import_files(client: httpx.Client, project_id: int, paths: list[Path], batch: int = 100,
                 content_type: str = "image/png") -> None:
    """Upload files into a project as a user does (multipart POST /api/projects/{id}/import): each becomes
    a task whose data holds /data/upload/<project>/<file>. One form field per file, because Label Studio
    reads request.FILES.items() (one file per field name: a repeated "file" field keeps only the last)."""
    for s in range(0, len(paths), batch):
        files = [(f"file{k}", (Path(p).name, Path(p).read_bytes(), content_type))
                 for k, p in enumerate(paths[s: s + batch])]
        r = client.post(f"/api/projects/{project_id}/import", files=files)
        if r.status_code != 201:
            raise RuntimeError(f"importing files into project {project_id} failed: {r.status_code} {r.text[:300]}")


def _spawn_plain(cmd: list[str], env: dict | None, cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


class _Service:
    """A local process started by `start()` (in subclasses): stopped by `stop()` or leaving a `with`."""

    proc: subprocess.Popen | None

    def stop(self) -> None:
        _stop(self.proc)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LabelStudioServer(_Service):
    """A headless Label Studio with a known account and legacy API token."""

    def __init__(self, data_dir: Path, port: int = 8080, username: str = "admin@example.com",
                 password: str = "disal-demo-pass", token: str = "disal-demo-token-0001") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port, self.username, self.password, self.token = port, username, password, token
        self.url = f"http://127.0.0.1:{port}"
        self.log = self.data_dir / "labelstudio.log"
        # local-files storage serves files under this folder (/data/local-files/?d=<path relative to it>)
        self.local_files_root = self.data_dir / "local-files"
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
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.local_files_root),
        })
        return env

    def start(self, timeout: float = 240.0) -> "LabelStudioServer":
        if not LS_BIN.exists():
            raise FileNotFoundError(f"{LS_BIN} is missing: run `make install-ls`")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.local_files_root.mkdir(parents=True, exist_ok=True)
        self.proc, self.started_in = _spawn(
            [str(LS_BIN), "start", "--internal-host", "127.0.0.1", "-p", str(self.port), "--no-browser"],
            self.env(), self.data_dir, self.log, self.url + "/health", timeout)
        return self

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Token {self.token}"}, timeout=timeout)


class BackendServer(_Service):
    """The backend under gunicorn, exactly as `make serve` runs it (gunicorn.conf.py: one worker, threads)."""

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
        # `pytest --job-queue=redis`: every backend of the session runs its jobs through one Redis, each
        # under its own prefix (a backend restarted on the same MODEL_DIR and port keeps its prefix)
        tests_redis = os.environ.get("DISAL_TESTS_REDIS_URL")
        if tests_redis and "REDIS_URL" not in self.extra_env:
            tag = hashlib.sha1(str(self.model_dir).encode()).hexdigest()[:8]
            env.update({"REDIS_URL": tests_redis, "REDIS_PREFIX": f"t{self.port}-{tag}"})
        env.update(self.extra_env)
        return env

    def auth(self):
        e = self.env()
        return (e["BASIC_AUTH_USER"], e["BASIC_AUTH_PASS"]) if e.get("BASIC_AUTH_USER") else None

    def start(self, timeout: float = 120.0) -> "BackendServer":
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self.proc, self.started_in = _spawn(
            [str(GUNICORN), "--config", str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{self.port}",
             "_wsgi:app"],
            self.env(), ROOT, self.log, self.url + "/health", timeout, auth=self.auth())
        return self


class RedisServer(_Service):
    """Debian's redis-server on 127.0.0.1, its data (append-only file) in `data_dir`: a restart keeps the queue."""

    def __init__(self, data_dir: Path, port: int = 6379) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.log = self.data_dir / "redis.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "RedisServer":
        if not Path(REDIS_SERVER).exists():
            raise RuntimeError(f"{REDIS_SERVER} is missing: `make install-system` installs Debian's redis-server")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = _spawn_plain([REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
                                  str(self.data_dir), "--appendonly", "yes", "--save", "", "--daemonize", "no"],
                                 None, self.data_dir, self.log)
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        self.started_in = time.time() - t0
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on {self.port} within {timeout:.0f}s")

    def stop(self) -> None:  # SIGTERM: redis flushes its append-only file before exiting
        _stop(self.proc, grace=10.0)

    def restart(self, down_s: float = 0.0) -> "RedisServer":
        self.stop()
        time.sleep(down_s)
        return self.start()


class WorkerProcess(_Service):
    """One more job worker (`python -m disal.worker`, what `make worker` runs) with a backend's environment."""

    def __init__(self, backend: "BackendServer", log: Path | None = None) -> None:
        self.backend = backend
        self.log = Path(log) if log else backend.log.with_name(backend.log.stem + f"-worker-{id(self) % 10000}.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        self.proc = _spawn_plain([str(PYTHON), "-m", "disal.worker"], self.backend.env(), ROOT, self.log)
        return self

    def kill(self) -> None:
        """kill -9, as a crash or the OOM killer would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
