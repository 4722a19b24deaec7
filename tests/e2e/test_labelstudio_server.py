"""scripts/labelstudio_server.py as a command line: start --detach, status, stop, with stray
PORT / HOST / USERNAME / PASSWORD in the environment that Label Studio would otherwise pick up."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

from scripts.local_services import ROOT, free_port

CLI = [sys.executable, str(ROOT / "scripts" / "labelstudio_server.py")]


def cli(*args, env=None, timeout=300):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def test_start_detach_status_stop_with_a_known_account_despite_stray_variables(tmp_path):
    port, data = free_port(), tmp_path / "ls"
    stray = dict(os.environ, PORT="1", HOST="bogus.invalid", USERNAME="nobody", PASSWORD="wrong-pass",
                 LABEL_STUDIO_PORT="2", LABEL_STUDIO_HOST="http://bogus.invalid")
    t0 = time.time()
    started = cli("start", "--detach", "--port", str(port), "--data-dir", str(data), "--username",
                  "cli@example.com", "--password", "cli-pass-123", "--token", "cli-token-12345", env=stray)
    try:
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        print(f"\nlabelstudio_server start --detach: {time.time() - t0:.1f}s (fresh data dir: migrations)")
        url = f"http://127.0.0.1:{port}"
        assert f"Label Studio 1.23 at {url}" in started.stdout
        assert (data / "labelstudio.pid").exists()
        headers = {"Authorization": "Token cli-token-12345"}
        me = httpx.get(url + "/api/current-user/whoami", headers=headers, timeout=30)
        assert me.status_code == 200, me.text
        assert me.json()["email"] == "cli@example.com"
        version = httpx.get(url + "/api/version", headers=headers, timeout=30).json()
        assert "1.23.2" in str(version.get("release") or version), version
        assert httpx.get(url + "/api/projects/", timeout=30).status_code == 401, "no anonymous access"
        # a second start on the same data dir sees the running one
        again = cli("start", "--detach", "--port", str(port), "--data-dir", str(data))
        assert again.returncode == 0 and "already running" in again.stdout
        status = cli("status", "--data-dir", str(data))
        assert status.returncode == 0 and "/health 200" in status.stdout, status.stdout
    finally:
        stopped = cli("stop", "--data-dir", str(data))
    assert stopped.returncode == 0 and "stopped Label Studio" in stopped.stdout, stopped.stdout + stopped.stderr
    assert not (data / "labelstudio.pid").exists()
    assert cli("status", "--data-dir", str(data)).returncode == 1
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=3)
        raise AssertionError("Label Studio still answers after stop")
    except httpx.TransportError:
        pass
