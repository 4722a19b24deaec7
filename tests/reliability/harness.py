"""The reliability suite's harness: fake Label Studios on real 127.0.0.1 ports, bounded request
loops, and a log scan for credentials. The fault tests (durable jobs) reuse it.

Every helper here sends traffic only to 127.0.0.1, and every loop is bounded in count and time.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable

import httpx

# (method, path, headers, body) -> (status, JSON-able or bytes[, extra response headers])
Responder = Callable[[str, str, dict, bytes], tuple]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict
    body: bytes


@dataclass
class RecordingServer:
    """An HTTP server on 127.0.0.1 that answers with `respond(method, path, headers, body)` and records
    every request (method, path, headers, body) it received."""

    respond: Responder
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items()}
                outer.requests.append(Recorded(self.command, self.path, headers, body))
                answer = outer.respond(self.command, self.path, headers, body)
                status, payload = answer[0], answer[1]
                extra = answer[2] if len(answer) > 2 else {}
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

            def log_message(self, *args) -> None:  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def authorizations(self) -> list[str]:
        return [r.headers.get("Authorization", "") for r in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_fake_labelstudio(fake, cookies: dict[str, str] | None = None) -> RecordingServer:
    """A tests/fake_labelstudio.FakeLabelStudio on a real port (for a backend in another process).

    `cookies` are set on every answer, as Label Studio's session and CSRF cookies are: a log scan can
    then prove they never reach a log line."""
    extra = {"Set-Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()) + "; Path=/"} if cookies else {}

    def respond(method: str, path: str, headers: dict, body: bytes) -> tuple:
        url = "http://fake" + path
        req = httpx.Request(method, url, headers=headers, content=body)
        resp = fake.handle(req)
        return resp.status_code, resp.content, extra

    return RecordingServer(respond)


def basic(user: str, password: str, encoding: str = "utf-8") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode(encoding)).decode()


def secret_forms(secret: str, user: str | None = None) -> set[str]:
    """A secret as it could appear in a log: plain, base64, and base64 of user:secret (UTF-8 and Latin-1)."""
    forms = {secret, base64.b64encode(secret.encode()).decode()}
    if user:
        for enc in ("utf-8", "latin-1"):
            try:
                forms.add(base64.b64encode(f"{user}:{secret}".encode(enc)).decode())
            except UnicodeEncodeError:
                pass
    return forms


_COOKIE_RE = re.compile(r"(?i)\b(sessionid|csrftoken)=(?!\[redacted\])[^;\s'\",)]+")


def credential_leaks(lines: Iterable[str], secrets: Iterable[str]) -> list[str]:
    """Every log line that holds a secret form or a session/CSRF cookie value."""
    forms = [s for s in secrets if s]
    bad = []
    for line in lines:
        if any(s in line for s in forms) or _COOKIE_RE.search(line):
            bad.append(line.rstrip()[:300])
    return bad


def slow_clients(port: int, n: int, path: str = "/webhook") -> list[socket.socket]:
    """`n` connections that each send half a request (headers announce a body that never comes)."""
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{{".encode())
        else:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())  # headers never end
        socks.append(s)
    return socks


def percentile(values: list[float], q: float) -> float:
    vals = sorted(values)
    if not vals:
        return float("nan")
    k = min(len(vals) - 1, max(0, int(round(q / 100 * (len(vals) - 1)))))
    return vals[k]


def read_log(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def bounded_loop(count: int, seconds: float):
    """range(count) that also stops after `seconds`: every request loop in this suite is bounded twice."""
    t0 = time.time()
    for i in range(count):
        if time.time() - t0 > seconds:
            return
        yield i
