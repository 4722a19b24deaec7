"""Start, stop and check a real Label Studio 1.23.2 (from .ls-venv) bound to 127.0.0.1.

As a library, it is `LabelStudioServer` from scripts/local_services.py (one implementation, shared
with `make demo` and the end-to-end tests), re-exported here:

    from scripts.labelstudio_server import LabelStudioServer
    with LabelStudioServer(data_dir, port=8081) as ls:       # polls /health; stops the process group
        httpx.get(ls.url + "/api/projects/", headers={"Authorization": f"Token {ls.token}"})

As a command line (a developer's Label Studio for trying the backend by hand):

    .venv/bin/python scripts/labelstudio_server.py start --port 8080 --data-dir .demo/labelstudio
        # foreground: Ctrl-C stops it
    .venv/bin/python scripts/labelstudio_server.py start --detach --port 8080 --data-dir /tmp/ls
        # returns once /health answers; the pid goes to <data-dir>/labelstudio.pid
    .venv/bin/python scripts/labelstudio_server.py status --data-dir /tmp/ls
    .venv/bin/python scripts/labelstudio_server.py stop --data-dir /tmp/ls

The environment Label Studio gets (see LabelStudioServer.env): LABEL_STUDIO_BASE_DATA_DIR, a known
account (LABEL_STUDIO_USERNAME / PASSWORD) and legacy token (LABEL_STUDIO_USER_TOKEN,
LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true), ML_BLOCK_LOCAL_IP=false and SSRF_PROTECTION_ENABLED=false
(a backend on 127.0.0.1), no outbound calls (SENTRY_DSN=, COLLECT_ANALYTICS=false,
LATEST_VERSION_CHECK=false), and none of the stray PORT / HOST / USERNAME / PASSWORD it would pick up.
Account and token apply when the data dir is first created: reuse a data dir with the same ones.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.local_services import LS_BIN, LabelStudioServer, free_port, stop_process_group  # noqa: E402

__all__ = ["LabelStudioServer", "LS_BIN", "free_port", "main"]

PIDFILE = "labelstudio.pid"


def _pidfile(data_dir: Path) -> Path:
    return Path(data_dir).resolve() / PIDFILE


def _read_pidfile(data_dir: Path) -> dict | None:
    path = _pidfile(data_dir)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = int(info.get("pid", 0))
    # only a live process that is still Label Studio counts (a pid can be reused after a reboot)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        cmdline = ""
    if pid <= 0 or "label-studio" not in cmdline:
        return None
    return info


def _server(args) -> LabelStudioServer:
    return LabelStudioServer(args.data_dir, args.port or free_port(), username=args.username,
                             password=args.password, token=args.token)


def cmd_start(args) -> int:
    info = _read_pidfile(args.data_dir)
    if info:
        print(f"already running: {json.dumps(info)}")
        return 0
    server = _server(args).start(timeout=args.timeout)  # a start that fails stops what it spawned
    info = {"pid": server.proc.pid, "url": server.url, "username": server.username, "token": server.token,
            "log": str(server.log)}
    print(f"Label Studio 1.23 at {server.url} (started in {server.started_in:.1f}s); "
          f"login {server.username} / {server.password}; API token {server.token}; log {server.log}", flush=True)
    if args.detach:
        _pidfile(args.data_dir).write_text(json.dumps(info))
        print(f"detached (pid {server.proc.pid}); stop it with: {Path(sys.argv[0]).name} stop --data-dir "
              f"{server.data_dir}", flush=True)
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print("Ctrl-C stops it", flush=True)
    try:
        while server.proc.poll() is None:
            time.sleep(1)
        print(f"Label Studio exited with {server.proc.returncode}; see {server.log}", flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def cmd_stop(args) -> int:
    info = _read_pidfile(args.data_dir)
    _pidfile(args.data_dir).unlink(missing_ok=True)
    if not info:
        print("not running")
        return 0
    stop_process_group(int(info["pid"]), args.grace)
    print(f"stopped Label Studio (pid {info['pid']}, {info['url']})")
    return 0


def cmd_status(args) -> int:
    import httpx

    info = _read_pidfile(args.data_dir)
    if not info:
        print("not running")
        return 1
    try:
        code = httpx.get(info["url"] + "/health", timeout=5).status_code
    except httpx.HTTPError as exc:
        code = f"unreachable ({exc.__class__.__name__})"
    print(f"running: pid {info['pid']} at {info['url']}, /health {code}")
    return 0 if code == 200 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="A local Label Studio 1.23.2 on 127.0.0.1 (from .ls-venv).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("start", "stop", "status"):
        p = sub.add_parser(name)
        p.add_argument("--data-dir", type=Path, default=ROOT / ".demo" / "labelstudio",
                       help="LABEL_STUDIO_BASE_DATA_DIR (default .demo/labelstudio)")
        if name == "start":
            p.add_argument("--port", type=int, default=8080, help="0 = a free port")
            p.add_argument("--username", default="admin@example.com")
            p.add_argument("--password", default="disal-demo-pass")
            p.add_argument("--token", default="disal-demo-token-0001", help="legacy API token (>= 5 chars)")
            p.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for /health")
            p.add_argument("--detach", action="store_true", help="return once /health answers; `stop` ends it")
        if name == "stop":
            p.add_argument("--grace", type=float, default=15.0, help="seconds between SIGTERM and SIGKILL")
    args = ap.parse_args(argv)
    return {"start": cmd_start, "stop": cmd_stop, "status": cmd_status}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
