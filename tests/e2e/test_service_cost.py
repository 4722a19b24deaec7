"""bench/service_cost.py against the real Label Studio, on a small pool, and the PUSH_TOP_K queue it relies on.

The benchmark itself runs at 1k/10k tasks (`make bench`); here it runs on 60 tasks so the script
cannot rot, and its numbers are checked for shape and consistency, never against wall-clock limits.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import service_cost  # noqa: E402

from .helpers import annotate, wait_idle_version  # noqa: E402


def test_service_cost_measures_rounds_phases_latency_and_memory_on_a_small_pool(label_studio, tmp_path):
    res = service_cost.measure_pool(label_studio, 60, rounds=2, work=tmp_path, latency=True,
                                    backend_env={"PUSH_TOP_K": "20"})
    assert res["pool"] == 60 and len(res["rounds"]) == 2
    for r in res["rounds"]:
        assert 0 < r["queue_live_seconds"] <= r["seconds"]
        assert r["pushed"] == 20, "PUSH_TOP_K=20 caps every round's push at the queue's first 20 tasks"
        assert r["phases"]["push"] > 0 and r["phases"]["fetch"] > 0
    assert res["push_per_second"] > 0
    lat = res["latency_during_training_ms"]
    for kind in ("webhook", "predict_1", "predict_1_new", "predict_100"):
        assert lat[kind]["n"] >= 1 and 0 < lat[kind]["p50"] <= lat[kind]["p99"] <= lat[kind]["max"]
    assert not res["latency_errors"], res["latency_errors"]
    assert res["memory"]["peak_rss_mb"] >= res["memory"]["rss_mb"] > 50
    assert res["trajectory_bytes"] > 0
    first = res["first_queue"]
    assert 0 < res["first_queue_seconds"] <= res["first_queue_served_seconds"]
    assert first["project_model_version"] == first["version"] and first["served_version"].startswith("disal-")


def test_first_queue_mode_times_a_partial_first_queue_and_annotations_made_while_it_encodes(label_studio,
                                                                                             tmp_path):
    """FIRST_QUEUE_SECONDS=0: the first queue is pushed after one encoding chunk (partial), Label Studio
    serves a task of it, annotations made during the encoding reach a queue, and the round completes."""
    res = service_cost.measure_pool(label_studio, 300, rounds=0, work=tmp_path, latency=False,
                                    backend_env={"FIRST_QUEUE_SECONDS": "0"}, first_queue_only=True)
    first = res["first_queue"]
    assert first["partial"] and first["total"] == 300 and 0 < first["queue_over"] < 300
    assert first["predictions"] == first["queue_over"], "exactly the encoded tasks carry a prediction"
    assert first["project_model_version"] == first["version"] and first["served_seconds"] is not None
    timeline = res["first_round_timeline"]
    assert timeline[0]["version"] == first["version"] and not timeline[-1]["partial"]
    assert [t["seconds"] for t in timeline] == sorted(t["seconds"] for t in timeline)
    during = res["annotations_during_encoding"]  # measured whenever the first queue is partial
    assert during["annotations"] == 10 and during["last_annotation_to_queue_seconds"] > 0
    assert any(t["labels"] >= 10 for t in timeline), "a queue trained on those annotations was served"
    assert res["first_queue_seconds"] <= res["cold_start_seconds"]


def test_push_top_k_queue_in_label_studio_serves_and_sorts_the_pushed_head_first(label_studio, tmp_path):
    """With fewer predictions than tasks, Label Studio must still serve the queue's head: /next
    (uncertainty sampling) returns the lowest pushed score, and the DISAL view lists pushed tasks first."""
    from scripts.local_services import BackendServer, free_port

    auth = service_cost.AUTH
    texts, labels, classes = service_cost.pool_texts(40)
    backend = BackendServer(tmp_path / "model_dir", free_port(), label_studio, log=tmp_path / "backend.log",
                            extra_env={"BASIC_AUTH_USER": auth[0], "BASIC_AUTH_PASS": auth[1], "PUSH_TOP_K": "8",
                                       "USE_UNCERTAINTY_SAMPLING": "true"})
    backend.start()
    try:
        with label_studio.client() as c:
            pid = c.post("/api/projects/", json={"title": "push top k",
                                                 "label_config": service_cost.label_config(classes),
                                                 "start_training_on_annotation_update": True}).json()["id"]
            c.post(f"/api/projects/{pid}/import", json=[{"text": t, "source_label": y}
                                                        for t, y in zip(texts, labels)]).raise_for_status()
            tasks = c.get("/api/tasks/", params={"project": pid, "page_size": 100}).json()["tasks"]
            r = c.post("/api/ml/", json={"url": backend.url, "project": pid, "title": "DISAL",
                                         "auth_method": "BASIC_AUTH", "basic_auth_user": auth[0],
                                         "basic_auth_pass": auth[1]})
            assert r.status_code < 300, r.text
        h = wait_idle_version(backend, pid, (None,), auth=auth)
        by_label: dict[str, int] = {}
        for t in tasks:
            by_label.setdefault(t["data"]["source_label"], t["id"])
        for tid in list(by_label.values())[:3]:
            annotate(label_studio, tid, [next(t["data"]["source_label"] for t in tasks if t["id"] == tid)],
                     "label", "text")
            h = wait_idle_version(backend, pid, (h["model_version"],), auth=auth)
        assert h["kind"] == "head"
        version = h["model_version"]
        with label_studio.client() as c:
            all_tasks = c.get("/api/tasks/", params={"project": pid, "page_size": 100, "fields": "all"}).json()["tasks"]
            scores = {t["id"]: p["score"] for t in all_tasks for p in t["predictions"] if p["model_version"] == version}
            assert len(scores) == 8, "only the queue's first PUSH_TOP_K tasks carry a prediction"
            served = c.get(f"/api/projects/{pid}/next").json()["id"]
            assert served == min(scores, key=scores.get)
            view = next(v for v in c.get("/api/dm/views/", params={"project": pid}).json()
                        if v["data"].get("title") == "DISAL queue")
            listed = c.get("/api/tasks/", params={"project": pid, "view": view["id"], "page_size": 100,
                                                  "fields": "task_only"}).json()["tasks"]
        order = [t["id"] for t in listed]
        assert order[:8] == sorted(scores, key=scores.get), "pushed tasks first, by priority; the rest after"
        # /predict still answers for a task outside the pushed head, from the served version
        rest = next(t for t in order[8:])
        text = next(t["data"]["text"] for t in all_tasks if t["id"] == rest)
        r = httpx.post(backend.url + "/predict", auth=auth, json={"tasks": [{"id": rest, "data": {"text": text}}],
                                                                   "project": f"{pid}.0"})
        assert r.status_code == 200 and r.json()["results"][0]["score"] > max(scores.values())
    finally:
        backend.stop()
