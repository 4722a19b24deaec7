"""`make demo`'s script on free ports: brings up a prioritized BBC News project and an MNIST image project
(uploaded PNG files), and a rerun reuses both."""

from __future__ import annotations

import subprocess
import sys

from scripts.local_services import ROOT, free_port


def run_demo(data_dir, ls_port, backend_port):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--data-dir", str(data_dir), "--ls-port", str(ls_port),
         "--backend-port", str(backend_port), "--tasks", "40", "--images", "30", "--exit-when-ready"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )


def test_demo_brings_up_a_prioritized_project_and_reuses_it(tmp_path):
    ls_port, be_port = free_port(), free_port()
    first = run_demo(tmp_path, ls_port, be_port)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "created project 1 with 40 BBC News articles" in first.stdout
    assert "created project 2 with 30 MNIST digit images (uploaded PNG files)" in first.stdout
    for pid in (1, 2):
        assert f"open   http://127.0.0.1:{ls_port}/projects/{pid}/data" in first.stdout
    assert first.stdout.count("queue disal-0001-coldstart") == 2, first.stdout[-2000:]
    assert "stopped Label Studio and the backend" in first.stdout
    second = run_demo(tmp_path, ls_port, be_port)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "created project" not in second.stdout and "connected the backend" not in second.stdout
    assert "annotations do not retrain" not in second.stdout  # created with the training toggle on
    assert second.stdout.count("queue disal-0001-coldstart") == 2  # the restarted backend serves them at once
