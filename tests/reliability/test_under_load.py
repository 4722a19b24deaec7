"""Against the backend exactly as `make serve` runs it (gunicorn, gunicorn.conf.py) on 127.0.0.1:
webhooks answered within Label Studio's 1 s while /predict is saturated and slow or half-open
clients hold connections; an oversized body refused before it is read; and a scan of every log line
(LOG_LEVEL=DEBUG) for the token, the password, their base64 forms and session cookies.

Label Studio is a fake on a real port (tests/fake_labelstudio.py behind harness.RecordingServer):
these cases need a server that answers instantly and sets cookies on demand.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from fake_labelstudio import LABELS, TOKEN, FakeLabelStudio, choices_config, topic_texts

from .harness import basic, bounded_loop, credential_leaks, percentile, read_log, secret_forms, serve_fake_labelstudio, \
    slow_clients

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from scripts.local_services import BackendServer, free_port  # noqa: E402

pytestmark = pytest.mark.slow

USER, PASSWORD = "ml-user", "pässwort-ü-123"
COOKIES = {"sessionid": "sess0123456789abcdefSECRET", "csrftoken": "csrf9876543210SECRET"}
LS_WEBHOOK_TIMEOUT = 1.0  # Label Studio's WEBHOOK_TIMEOUT: a slower answer is a lost event


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model_dir):
    fake = FakeLabelStudio(choices_config(LABELS))
    fake.add_tasks([t for t, _ in topic_texts(40)])
    ls = serve_fake_labelstudio(fake, cookies=COOKIES)
    root = tmp_path_factory.mktemp("under-load")
    backend = BackendServer(root / "model_dir", free_port(), extra_env={
        "MODEL_NAME": str(tiny_model_dir), "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": TOKEN,
        "BASIC_AUTH_USER": USER, "BASIC_AUTH_PASS": PASSWORD, "LOG_LEVEL": "DEBUG",
        "PREDICT_CONCURRENCY": "1", "PREDICT_WAIT_S": "0.2", "REQUEST_TIMEOUT_S": "2",
    }, log=root / "backend.log")
    backend.start()
    auth = (USER, PASSWORD)
    r = httpx.post(backend.url + "/setup", auth=auth, timeout=10, json={
        "project": "1.1767225600", "schema": fake.label_config, "hostname": ls.url, "access_token": TOKEN})
    assert r.status_code == 200, r.text
    t0 = time.time()
    while time.time() - t0 < 120:
        h = httpx.get(backend.url + "/health", auth=auth, timeout=10).json()["projects"].get("1", {})
        if h.get("model_version") and h.get("state") == "idle":
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"no first queue within 120 s: {h}")
    yield backend, ls, fake, auth
    backend.stop()
    ls.close()


def test_webhooks_answer_within_label_studios_second_while_predict_is_saturated_and_slow_clients_hold_sockets(stack):
    backend, _, _, auth = stack
    port = int(backend.url.rsplit(":", 1)[1])
    held = slow_clients(port, 16)  # half-open: headers that never end, bodies that never come
    big_texts = [" ".join(["markets shares profit bank football match film music"] * 2500)] * 100  # ~20k chars each
    predict_status: list[tuple[int, str | None]] = []
    stop = threading.Event()

    # bodies serialized up front: the measuring thread shares this process's GIL with the floods
    bodies = {(k, i): json.dumps({"project": "1.1767225600", "tasks": [
        {"id": 100000 + k * 1000 + i * 100 + j, "data": {"text": f"{k}-{i}-{j} " + t}}
        for j, t in enumerate(big_texts)]}).encode() for k in range(10) for i in range(3)}

    def flood(k: int) -> None:
        with httpx.Client(auth=auth, timeout=120) as c:
            for i in bounded_loop(3, 90):
                if stop.is_set():
                    return
                r = c.post(backend.url + "/predict", content=bodies[k, i],
                           headers={"Content-Type": "application/json"})
                predict_status.append((r.status_code, r.headers.get("Retry-After")))

    floods = [threading.Thread(target=flood, args=(k,), daemon=True) for k in range(10)]
    for t in floods:
        t.start()
    time.sleep(1.0)  # let the floods and slow clients take their threads
    latencies, failures = [], []
    with httpx.Client(auth=auth, timeout=LS_WEBHOOK_TIMEOUT) as hook:
        for i in bounded_loop(40, 60):
            action = "START_TRAINING" if i % 10 == 0 else "PROJECT_UPDATED"
            t0 = time.perf_counter()
            try:
                r = hook.post(backend.url + "/webhook", json={"action": action, "project": {"id": 1}})
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 201:
                    failures.append(f"{action}: HTTP {r.status_code} {r.text[:100]}")
            except httpx.TimeoutException:
                failures.append(f"{action}: no answer within {LS_WEBHOOK_TIMEOUT} s (Label Studio would drop it)")
            time.sleep(0.1)
    stop.set()
    for t in floods:
        t.join(120)
    for s in held:
        s.close()
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    print(f"\nwebhook under load: n={len(latencies)} p50={p50:.1f} ms p99={p99:.1f} ms max="
          f"{max(latencies) * 1000:.1f} ms; /predict answers: "
          f"{sorted({s for s, _ in predict_status})} ({sum(1 for s, _ in predict_status if s == 503)} x 503)")
    (Path(backend.log).parent / "webhook_under_load.json").write_text(json.dumps(
        {"n": len(latencies), "p50_ms": p50, "p99_ms": p99, "predict_status": predict_status}))
    assert not failures, failures
    assert len(latencies) == 40
    # /predict was bounded: each answer is a result or a 503 that says when to come back
    assert predict_status and all(s == 200 or (s == 503 and ra) for s, ra in predict_status), predict_status
    assert any(s == 503 for s, _ in predict_status), "10 concurrent /predict never met the concurrency bound"


def read_http_answer(s: socket.socket) -> str:
    """The whole answer: headers, then Content-Length bytes of body (which may come in a later segment:
    one recv() once returned the headers alone)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            return data.decode(errors="replace")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode(errors="replace")


def test_an_oversized_body_is_refused_before_it_is_read(stack):
    backend, _, _, auth = stack
    port = int(backend.url.rsplit(":", 1)[1])
    header = basic(*auth)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((f"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {header}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {50 * 1024 * 1024}\r\n\r\n").encode())
        s.sendall(b'{"action": "PROJECT_UPDATED", "pad": "' + b"x" * 65536)  # 50 MB announced, 64 KiB sent
        answer = read_http_answer(s)
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert "MAX_WEBHOOK_BYTES" in answer


def test_no_credential_reaches_a_log_line_at_debug(stack):
    backend, ls, fake, auth = stack
    # traffic that tempts a leak: wrong credentials, credentials in bodies, a round that talks to Label Studio
    for header in ("Basic " + "dG9rZW4=", f"Token {TOKEN}", "Bearer " + PASSWORD):
        r = httpx.get(backend.url + "/health", headers={"Authorization": header.encode("utf-8")}, timeout=5)
        assert r.status_code == 401
    httpx.post(backend.url + "/webhook", auth=auth, timeout=5, json={"action": "START_TRAINING", "project": {"id": 1},
                                                                      "token": TOKEN, "password": PASSWORD})
    fake.annotate(1, [LABELS[0]])
    fake.annotate(2, [LABELS[1]])
    httpx.post(backend.url + "/webhook", auth=auth, timeout=5, json={"action": "START_TRAINING", "project": {"id": 1}})
    t0 = time.time()
    while time.time() - t0 < 60:
        h = httpx.get(backend.url + "/health", auth=auth, timeout=10).json()["projects"]["1"]
        if h.get("kind") == "head" and h.get("state") == "idle":
            break
        time.sleep(0.5)
    lines = read_log(Path(backend.log))
    assert any("DEBUG" in line for line in lines), "the backend did not log at DEBUG"
    # the cookies really travelled (the backend's client sends them back), so the scan had something to find
    assert any(COOKIES["sessionid"] in r.headers.get("Cookie", "") for r in ls.requests)
    secrets = secret_forms(TOKEN) | secret_forms(PASSWORD, USER) | set(COOKIES.values())
    leaks = credential_leaks(lines, secrets)
    assert not leaks, leaks[:5]
