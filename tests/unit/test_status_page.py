"""The status page (GET /) and its learning-curve PNG, through the routes against a MockTransport
Label Studio, plus the closed-form leave-one-out estimate the curve plots."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_labelstudio import annotation_event, connect, topic_texts  # noqa: E402

from disal.learning_curve import MIN_LABELS, LearningCurve, loo_accuracy  # noqa: E402

N_TASKS = 40
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def annotate(client, model, fake, ids):
    topics = dict(zip(range(1, N_TASKS + 1), (t for _, t in topic_texts(N_TASKS))))
    for tid in ids:
        fake.annotate(tid, [topics[tid]])
        assert client.post("/webhook", json=annotation_event(fake, tid)).status_code == 201
        assert model.jobs.wait_idle(fake.project_id, 60)


def test_the_page_shows_version_regime_state_labels_queue_and_curve(backend, fake):
    client, model = backend
    connect(client, model, fake)
    annotate(client, model, fake, list(range(1, 9)))
    v = model.store(1).current()
    assert v.kind == "head"
    r = client.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    assert "<html" in page and 'http-equiv="refresh"' in page
    assert v.name in page
    assert "frozen encoder + linear head" in page  # no 'regime' in the meta: the head regime
    assert re.search(r'data-state="idle"', page) and "<progress" in page
    assert re.search(r"<th>labels used</th><td>8</td>", page)
    top = sorted(v.priority.items(), key=lambda kv: (kv[1], kv[0]))[:3]
    rows = re.findall(r"<tr><td>(\d+)</td><td>(?:<a [^>]*>)?(\d+)(?:</a>)?</td><td>([0-9.]+)</td></tr>", page)
    assert [(int(t), round(float(s), 4)) for _, t, s in rows[:3]] == [(t, round(s, 4)) for t, s in top]
    assert 'src="status/1/curve.png' in page
    # /health keeps its JSON
    assert client.get("/health").get_json()["projects"]["1"]["model_version"] == v.name


def test_every_head_round_adds_one_curve_point_and_the_png_plots_it(backend, fake):
    client, model = backend
    connect(client, model, fake)
    annotate(client, model, fake, list(range(1, 9)))
    curve = LearningCurve(model.store(1).dir)
    pts = curve.points()
    assert pts, "a head round with >= MIN_LABELS labels records a point"
    assert all(p["labels"] >= MIN_LABELS and 0.0 <= p["accuracy"] <= 1.0 for p in pts)
    assert [p["labels"] for p in pts] == sorted(p["labels"] for p in pts)
    assert pts[-1]["version"] == model.store(1).current().name
    assert model.store(1).current().meta["accuracy_estimate"]["accuracy"] == pts[-1]["accuracy"]
    json.loads((model.store(1).dir / "curve.json").read_text())  # explicit, serializable state
    r = client.get("/status/1/curve.png")
    assert r.status_code == 200 and r.mimetype == "image/png" and r.data.startswith(PNG_MAGIC)
    assert client.get("/status/99/curve.png").status_code == 404


def test_a_project_without_estimate_gets_a_placeholder_png_and_a_page_that_says_so(backend, fake):
    client, model = backend
    connect(client, model, fake)  # cold start only
    page = client.get("/").get_data(as_text=True)
    assert "no estimate yet" in page and "cold start" in page
    r = client.get("/status/1/curve.png")
    assert r.status_code == 200 and r.data.startswith(PNG_MAGIC)


def test_an_unknown_job_state_is_rendered_as_it_arrives(backend, fake, monkeypatch):
    client, model = backend
    connect(client, model, fake)
    real = model.health

    def health():
        h = real()
        h["projects"]["1"].update(state="encoding", progress={"done": 120, "total": 500})
        return h

    monkeypatch.setattr(model, "health", health)
    page = client.get("/").get_data(as_text=True)
    assert 'data-state="encoding"' in page and "encoding 120/500" in page
    assert '<progress class="bar" value="120" max="500">' in page


def test_the_page_and_the_png_need_basic_auth(backend_with, fake):
    client, model = backend_with(basic_auth_user="u", basic_auth_pass="p")
    assert client.get("/").status_code == 401
    assert client.get("/status/1/curve.png").status_code == 401
    ok = {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    assert client.get("/", headers=ok).status_code == 200


def test_html_in_a_job_note_is_escaped(backend, fake, monkeypatch):
    client, model = backend
    connect(client, model, fake)
    real = model.health

    def health():
        h = real()
        h["projects"]["1"]["error"] = "<script>alert(1)</script>"
        return h

    monkeypatch.setattr(model, "health", health)
    page = client.get("/").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_loo_accuracy_is_exact_leave_one_out():
    """The closed form equals refitting the ridge classifier N times without each row."""
    rng = np.random.default_rng(0)
    n, d, c = 24, 6, 3
    y = rng.integers(0, c, n)
    x = rng.normal(size=(n, d)) + 2.0 * np.eye(c, d)[y]
    est = loo_accuracy(x, y, c, ridge=0.3)
    correct = 0
    for i in range(n):
        keep = np.arange(n) != i
        # the closed form centres once on all N rows; refit with those same centred features
        mu_all = x.mean(0)
        xc = np.hstack([x[keep] - mu_all, np.ones((n - 1, 1))])
        lam = 0.3 * float(((x - mu_all) ** 2).sum(1).mean())
        reg = lam * np.eye(d + 1)
        reg[-1, -1] = 1e-8 * lam
        w = np.linalg.solve(xc.T @ xc + reg, xc.T @ np.eye(c)[y[keep]])
        pred = (np.append(x[i] - mu_all, 1.0) @ w).argmax()
        correct += int(pred == y[i])
    assert est["accuracy"] == correct / n and est["folds"] == n


def test_loo_accuracy_separates_signal_from_noise_and_needs_min_labels():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 200)
    signal = rng.normal(size=(200, 32)) + 3.0 * np.eye(4, 32)[y]
    noise = rng.normal(size=(200, 32))
    assert loo_accuracy(signal, y, 4)["accuracy"] > 0.8
    assert loo_accuracy(noise, y, 4)["accuracy"] < 0.45
    assert loo_accuracy(signal[:MIN_LABELS - 1], y[:MIN_LABELS - 1], 4) is None
    multi = (rng.random((50, 3)) > 0.5).astype(np.float32)
    est = loo_accuracy(rng.normal(size=(50, 8)) + 3 * multi @ np.eye(3, 8), multi, 3, multi_label=True)
    assert 0.0 <= est["accuracy"] <= 1.0
