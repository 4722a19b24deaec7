"""The backend's cost against a real Label Studio 1.23: rounds, latencies, push rate, memory.

For each pool size it starts a fresh backend (gunicorn, as `make serve` runs it) beside one real Label
Studio (own venv, 127.0.0.1), imports a project of that many real texts (Reuters R8 then BBC News,
cycled past 9,899), connects the backend and waits for the cold-start queue. Then:

- rounds: an annotation made through Label Studio's API -> webhook -> background job -> pushed queue,
  timed from the annotation POST until /health serves the new version (queue live: the
  predictions are in and project.model_version points at them) and until the job is done (old
  versions' predictions deleted); the phase split (fetch,
  encode, train, score, push, tidy) is the delta of the backend's own `disal_job_phase_seconds`;
- latencies while a training job runs: /webhook (an ANNOTATION_UPDATED event) and /predict for 1
  and 100 tasks, p50/p99, sequential requests on one kept-alive connection;
- predictions pushed per second (backend counter / push phase seconds);
- peak memory: the gunicorn worker's VmHWM after the measured rounds;
- trajectory size on disk per checkpoint of the served version;
- time to first queue: from connecting the backend until Label Studio serves a task of the first
  (possibly partial) queue, the timeline of the refined pushes until the whole pool is encoded, and
  (`--first-queue`) how soon annotations made during that encoding reach a trained queue.

`--task image`: the same for an image classification project. The pool is MNIST digits (the 5k subset,
cycled) written as PNG files and uploaded through Label Studio's import API, so every image is fetched
from /data/upload/ with the token; the cold start's phases then split fetch+decode+encode ("encode")
from train, score and push.

Usage: .venv/bin/python bench/service_cost.py --pools 1000,10000 --rounds 3 --out bench/out/service_cost.json
       .venv/bin/python bench/service_cost.py --task image --pools 1000 --rounds 3 --out bench/out/image_cost.json
       .venv/bin/python bench/service_cost.py --pools 1000,10000 --first-queue --out bench/out/first_queue.json
       .venv/bin/python bench/service_cost.py --pools 1000,10000 --rounds 3 --no-latency --env TRAIN_MODE=mlp \\
           --out bench/out/service_cost_mlp.json   # a regime's train/score seconds per round
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.local_services import BackendServer, LabelStudioServer, free_port, import_files  # noqa: E402

AUTH = ("disal-bench", "bench-secret-pass")
PHASES = ("fetch", "encode", "train", "score", "push", "tidy")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pool_texts(n: int) -> tuple[list[str], list[str], list[str]]:
    """n real texts with their source labels: R8 (train+test) then BBC, cycled if n > 9,899."""
    from disal.data import text_pool

    texts, labels = text_pool(("r8", "bbc"))
    classes = sorted(set(labels))
    idx = [i % len(texts) for i in range(n)]
    return [texts[i] for i in idx], [labels[i] for i in idx], classes


def label_config(classes: list[str], task: str = "text") -> str:
    choices = "".join(f'<Choice value="{c}"/>' for c in classes)
    obj = '<Image name="image" value="$image"/>' if task == "image" else '<Text name="text" value="$text"/>'
    return f'<View>{obj}<Choices name="label" toName="{task}" choice="single">{choices}</Choices></View>'


def pool_images(n: int, folder: Path) -> tuple[list[Path], list[str], list[str]]:
    """n MNIST PNG files (train+test of the 5k subset, cycled past 5,000: same pixels, new files)."""
    from disal.data import load_mnist5k
    from disal.data.images import save_png

    ds = load_mnist5k()
    images = np.concatenate([ds.train_images, ds.test_images])
    labels = np.concatenate([ds.train_labels, ds.test_labels])
    folder.mkdir(parents=True, exist_ok=True)
    paths, out_labels = [], []
    for k in range(n):
        i = k % len(images)
        label = ds.classes[int(labels[i])]
        path = folder / f"mnist-{k:06d}-{label}.png"
        save_png(images[i], path)
        paths.append(path)
        out_labels.append(label)
    return paths, out_labels, list(ds.classes)





def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms, dtype=float)
    return {"n": int(len(a)), "p50": round(float(np.percentile(a, 50)), 2), "p99": round(float(np.percentile(a, 99)), 2),
            "max": round(float(a.max()), 2)} if len(a) else {"n": 0}


def metric_sums(backend: BackendServer) -> dict:
    """Phase seconds sums and counters from the backend's /metrics."""
    text = httpx.get(backend.url + "/metrics", auth=AUTH, timeout=10).text
    out = {}
    for m in re.finditer(r'^disal_job_phase_seconds_sum\{phase="(\w+)"\} ([0-9.e+-]+)$', text, re.M):
        out[m.group(1)] = float(m.group(2))
    pushed = sum(float(v) for v in re.findall(r'^disal_predictions_pushed_total\{[^}]*\} ([0-9.e+-]+)$', text, re.M))
    out["predictions_pushed"] = pushed
    for m in re.finditer(r'^disal_media_seconds_total\{part="(\w+)"\} ([0-9.e+-]+)$', text, re.M):
        out[f"image_{m.group(1)}"] = float(m.group(2))  # image projects: the encode phase's download/model split
    return out


def worker_pid(master_pid: int) -> int:
    """gunicorn's worker: the child of the master process."""
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().split(") ")[1].split()[1]) == master_pid:
                    return int(p.name)
            except (OSError, IndexError, ValueError):
                continue
    raise RuntimeError(f"no gunicorn worker under pid {master_pid}")


def memory_mb(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    val = lambda k: int(re.search(rf"^{k}:\s+(\d+) kB", status, re.M).group(1)) / 1024  # noqa: E731
    return {"rss_mb": round(val("VmRSS"), 1), "peak_rss_mb": round(val("VmHWM"), 1)}


def project_health(backend: BackendServer, pid: int) -> dict:
    return httpx.get(backend.url + "/health", auth=AUTH, timeout=10).json().get("projects", {}).get(str(pid), {})


def wait_new_version(backend: BackendServer, pid: int, old: str | None, timeout: float,
                     idle: bool = True) -> dict:
    """Wait for a served version other than `old` (and, with idle, no job running)."""
    t0 = time.time()
    last_print = 0.0
    while time.time() - t0 < timeout:
        h = project_health(backend, pid)
        if h.get("error") and h.get("state") == "idle":
            raise RuntimeError(f"backend job failed: {h['error']} (log {backend.log})")
        if h.get("model_version") and h.get("model_version") != old and (h.get("state") == "idle" or not idle):
            return h
        if time.time() - last_print > 15:
            p = h.get("progress") or {}
            log(f"  backend {h.get('state')} {p.get('done')}/{p.get('total')} {h.get('job', {}).get('note', '')}")
            last_print = time.time()
        time.sleep(0.1)
    raise TimeoutError(f"no new version after {old} within {timeout:.0f}s")


def wait_drained(backend: BackendServer, pid: int, timeout: float) -> dict:
    """Wait until no job runs and none waits (events that arrived during a job queue a follow-up)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        h = project_health(backend, pid)
        if h.get("state") == "idle" and not h.get("job", {}).get("pending"):
            return h
        time.sleep(0.2)
    raise TimeoutError(f"project {pid} still busy after {timeout:.0f}s")


def watch(backend: BackendServer, pid: int, t0: float, done: Callable[[dict], bool], timeout: float,
          timeline: list[dict], since: float | None = None) -> dict:
    """Poll /health until `done(health)` (timeout counted from t0); append each newly served version
    to `timeline` with its time since `since` (default t0) and the part of the pool its queue
    covers (the first round pushes partial queues)."""
    last_print = 0.0
    while time.time() - t0 < timeout:
        h = project_health(backend, pid)
        if h.get("error") and h.get("state") == "idle":
            raise RuntimeError(f"backend job failed: {h['error']} (log {backend.log})")
        v = h.get("model_version")
        if v and (not timeline or timeline[-1]["version"] != v):
            part = h.get("partial") or {}
            timeline.append({"seconds": round(time.time() - (since or t0), 2), "version": v, "kind": h.get("kind"),
                             "labels": h.get("labels"), "queue_over": part.get("queue_over"),
                             "total": part.get("total"), "partial": bool(part)})
            log(f"  {timeline[-1]}")
        if done(h):
            return h
        if time.time() - last_print > 15:
            p = h.get("progress") or {}
            log(f"  backend {h.get('state')} {p.get('done')}/{p.get('total')} {(h.get('note') or '')[:90]}")
            last_print = time.time()
        time.sleep(0.1)
    raise TimeoutError(f"project {pid}: not done within {timeout:.0f}s (timeline {timeline})")


def served_by_label_studio(c: httpx.Client, pid: int, version: str, t0: float, timeout: float = 300) -> dict:
    """What Label Studio itself says about a pushed version: project.model_version and its prediction
    count; the time (since t0) from which the project samples by uncertainty (the backend sets it
    right after the push, with the "DISAL queue" view); and whether GET /next then serves a task
    carrying a disal prediction, i.e. the queue's head.

    Why not poll /next itself: each call locks the task it returns for this user, and Label Studio
    keeps returning that task until the lock expires, so a call made before the switch would tie
    the measurement to the lock's lifetime rather than to the backend.
    """
    project = c.get(f"/api/projects/{pid}/").json()
    counts = c.get(f"/api/projects/{pid}/model-versions/").json()
    if isinstance(counts, list):
        counts = {d.get("model_version"): d.get("count") for d in counts}
    out = {"project_model_version": project.get("model_version"), "predictions": counts.get(version),
           "served_seconds": None}
    deadline = time.time() + timeout
    while project.get("sampling") != "Uncertainty sampling":
        if time.time() > deadline:
            log(f"  project {pid} still samples {project.get('sampling')!r} after {timeout:.0f}s: {out}")
            return out
        time.sleep(0.2)
        project = c.get(f"/api/projects/{pid}/").json()
    out["served_seconds"] = round(time.time() - t0, 2)
    task = next_task(c, pid)
    preds = c.get("/api/predictions/", params={"task": task["id"]}).json()
    preds = preds.get("results", preds) if isinstance(preds, dict) else preds
    out["next_task"] = task["id"]
    out["served_version"] = next((p["model_version"] for p in preds
                                  if str(p.get("model_version", "")).startswith("disal-")), None)
    return out


def next_task(c: httpx.Client, pid: int) -> dict:
    """The task Label Studio serves an annotator next (uncertainty sampling over the pushed scores)."""
    r = c.get(f"/api/projects/{pid}/next")
    r.raise_for_status()
    return r.json()


TO_NAME = {"name": "text"}  # the object the <Choices> labels: "text", or "image" with --task image


def annotate(c: httpx.Client, task_id: int, label: str) -> None:
    r = c.post(f"/api/tasks/{task_id}/annotations/", json={"result": [
        {"from_name": "label", "to_name": TO_NAME["name"], "type": "choices", "value": {"choices": [label]}}]})
    if r.status_code != 201:
        raise RuntimeError(f"annotating task {task_id} failed: {r.status_code} {r.text[:300]}")


class Hammer(threading.Thread):
    """Sequential requests on one connection until stopped; keeps per-kind latencies in ms."""

    def __init__(self, backend: BackendServer, pid: int, label_of: dict[int, str], texts_of: dict[int, str],
                 label_config_xml: str) -> None:
        super().__init__(daemon=True)
        self.backend, self.pid, self.label_of, self.texts_of = backend, pid, label_of, texts_of
        self.config = label_config_xml
        self.stop_flag = threading.Event()
        self.lat: dict[str, list[float]] = {"webhook": [], "predict_1": [], "predict_100": [], "predict_1_new": []}
        self.errors: list[str] = []

    def run(self) -> None:
        ids = list(self.texts_of)
        rng = np.random.default_rng(0)
        new_id = 10**9
        with httpx.Client(base_url=self.backend.url, auth=AUTH, timeout=60) as c:
            while not self.stop_flag.is_set():
                tid = int(rng.choice(ids))
                ev = {"action": "ANNOTATION_UPDATED", "project": {"id": self.pid}, "task": {"id": tid},
                      "annotation": {"id": 1, "task": tid, "result": []}}
                self._timed(c, "webhook", "/webhook", ev, 201)
                task = {"id": tid, "project": self.pid, "data": self.texts_of[tid]}
                self._timed(c, "predict_1", "/predict", {"tasks": [task], "project": f"{self.pid}.0",
                                                          "label_config": self.config}, 200)
                new_id += 1  # an id the backend never scored: /predict must encode it
                new = {"id": new_id, "project": self.pid, "data": self.texts_of[tid]}
                self._timed(c, "predict_1_new", "/predict", {"tasks": [new], "project": f"{self.pid}.0",
                                                              "label_config": self.config}, 200)
                hundred = [{"id": int(t), "project": self.pid, "data": self.texts_of[int(t)]}
                           for t in rng.choice(ids, size=min(100, len(ids)), replace=False)]
                self._timed(c, "predict_100", "/predict", {"tasks": hundred, "project": f"{self.pid}.0",
                                                            "label_config": self.config}, 200)

    def _timed(self, c: httpx.Client, kind: str, path: str, body: dict, want: int) -> None:
        t0 = time.perf_counter()
        r = c.post(path, json=body)
        ms = (time.perf_counter() - t0) * 1000
        if r.status_code != want:
            self.errors.append(f"{path} -> {r.status_code}: {r.text[:200]}")
            return
        self.lat[kind].append(ms)


def annotate_during_encoding(c: httpx.Client, backend: BackendServer, pid: int, label_of: dict[int, str],
                             timeline: list[dict], since: float, k: int = 10) -> dict:
    """Label the next k tasks Label Studio serves from the partial first queue, then time how soon a
    queue trained on them is live (the long first round hands over to the retrain, see
    TrainingJob._progressive) and how much of the pool was encoded then."""
    t1 = time.time()
    for _ in range(k):
        tid = next_task(c, pid)["id"]
        annotate(c, tid, label_of[tid])
    t_last = time.time()
    h = watch(backend, pid, t1, lambda h: (h.get("labels") or 0) >= k, 1800, timeline, since)
    out = {"annotations": k, "annotating_seconds": round(t_last - t1, 2),
           "last_annotation_to_queue_seconds": round(time.time() - t_last, 2), "version": h["model_version"],
           "kind": h.get("kind"), "partial": h.get("partial")}
    log(f"  annotations during encoding: {out}")
    return out


def measure_pool(ls: LabelStudioServer, n: int, rounds: int, work: Path, latency: bool,
                 backend_env: dict | None = None, feature_cache: Path | None = None,
                 first_queue_only: bool = False, task: str = "text") -> dict:
    """Every measurement for one pool size, with a fresh backend (`backend_env` adds settings).

    `feature_cache`: a backend `features/` folder from an earlier run on the same tasks, copied in
    to skip the cold start's encoding (the measured rounds encode nothing either way).
    `first_queue_only`: measure the first round only (time to first queue, its refined pushes, and
    annotations made while it encodes), none of the later rounds.
    """
    if task == "image":
        paths, labels, classes = pool_images(n, work / f"images-{n}")
    else:
        texts, labels, classes = pool_texts(n)
    config = label_config(classes, task)
    model_dir = work / f"model-{n}"
    shutil.rmtree(model_dir, ignore_errors=True)
    if feature_cache:
        shutil.copytree(feature_cache, model_dir / "features")
    backend = BackendServer(model_dir, free_port(), ls, log=work / f"backend-{n}.log",
                            extra_env={"BASIC_AUTH_USER": AUTH[0], "BASIC_AUTH_PASS": AUTH[1],
                                       "LOG_LEVEL": "INFO", "USE_UNCERTAINTY_SAMPLING": "true",
                                       **(backend_env or {})})
    res: dict = {"pool": n, "task": task}
    log(f"pool {n}: starting the backend on {backend.url}")
    backend.start()
    try:
        wpid = worker_pid(backend.proc.pid)
        c = ls.client(timeout=600)
        pid = c.post("/api/projects/", json={"title": f"bench {n}", "label_config": config,
                                             "start_training_on_annotation_update": True}).json()["id"]
        t0 = time.time()
        if task == "image":
            import_files(c, pid, paths)
        else:
            for s in range(0, n, 2000):
                r = c.post(f"/api/projects/{pid}/import", json=[{"text": t, "source_label": y}
                                                                 for t, y in zip(texts[s:s + 2000], labels[s:s + 2000])])
                r.raise_for_status()
        res["import_seconds"] = round(time.time() - t0, 2)
        log(f"pool {n}: imported {n} tasks into project {pid} in {res['import_seconds']}s")
        tasks = []
        page = 1
        while True:
            # 500 per page: on SQLite, Label Studio 1.23 answers 500 ("Expression tree is too large (maximum
            # depth 1000)") for a page of 1,000+ tasks of uploaded files
            r = c.get("/api/tasks/", params={"project": pid, "page_size": 500, "page": page, "fields": "task_only"})
            if r.status_code == 404:
                break
            r.raise_for_status()
            batch = r.json()["tasks"]
            tasks += batch
            if len(batch) < 500:
                break
            page += 1
        if task == "image":  # the digit is in the uploaded file's name
            from disal.data.images import label_from_png_name

            label_of = {t["id"]: label_from_png_name(t["data"]["image"]) for t in tasks}
        else:
            label_of = {t["id"]: t["data"]["source_label"] for t in tasks}
        text_of = {t["id"]: {k: v for k, v in t["data"].items() if k in ("text", "image")} for t in tasks}

        t0 = time.time()
        r = c.post("/api/ml/", json={"url": f"{backend.url}", "project": pid, "title": "DISAL",
                                     "auth_method": "BASIC_AUTH", "basic_auth_user": AUTH[0],
                                     "basic_auth_pass": AUTH[1]})
        if r.status_code >= 300:
            raise RuntimeError(f"connecting failed: {r.status_code} {r.text[:300]}")
        timeline: list[dict] = []
        h = watch(backend, pid, t0, lambda h: bool(h.get("model_version")), 3600, timeline)
        res["first_queue_seconds"] = timeline[0]["seconds"]
        res["first_queue"] = {**timeline[0], **served_by_label_studio(c, pid, h["model_version"], t0)}
        res["first_queue_served_seconds"] = res["first_queue"]["served_seconds"]
        log(f"pool {n}: first queue {h['model_version']} live {res['first_queue_seconds']}s after connecting, "
            f"served by Label Studio (uncertainty sampling) from {res['first_queue_served_seconds']}s: "
            f"{res['first_queue']}")
        if first_queue_only and h.get("partial"):
            res["annotations_during_encoding"] = annotate_during_encoding(c, backend, pid, label_of, timeline, t0)
        h = watch(backend, pid, t0, lambda h: h.get("state") == "idle" and not h.get("partial")
                  and not (h.get("job") or {}).get("pending"), 3600, timeline)
        res["cold_start_seconds"] = round(time.time() - t0, 2)  # the whole pool encoded, the queue complete
        res["first_round_timeline"] = timeline
        res["cold_start_phases"] = {k: round(v, 2) for k, v in metric_sums(backend).items()}
        log(f"pool {n}: first queue after {res['first_queue_seconds']}s, complete queue {h['model_version']} "
            f"after {res['cold_start_seconds']}s ({len(timeline)} versions; phases {res['cold_start_phases']})")
        if first_queue_only:
            res["memory"] = memory_mb(wpid)
            c.close()
            return res

        # Bootstrap: label 10 tasks spread over the project (two classes or more), wait for the head rounds.
        for tid in sorted(label_of)[:: max(1, n // 10)][:10]:
            annotate(c, tid, label_of[tid])
        h = wait_new_version(backend, pid, h["model_version"], timeout=1800)
        wait_drained(backend, pid, timeout=1800)
        h = wait_new_version(backend, pid, None, timeout=1800)
        log(f"pool {n}: first head round served: {h['model_version']} ({h.get('labels')} labels)")

        measured = []
        for k in range(rounds):
            before = metric_sums(backend)
            old = project_health(backend, pid).get("model_version")
            tid = next_task(c, pid)["id"]
            t0 = time.perf_counter()
            annotate(c, tid, label_of[tid])
            h = wait_new_version(backend, pid, old, timeout=1800, idle=False)
            live = time.perf_counter() - t0
            h = wait_new_version(backend, pid, old, timeout=1800)
            total = time.perf_counter() - t0
            after = metric_sums(backend)
            phases = {p: round(after.get(p, 0) - before.get(p, 0), 3) for p in PHASES}
            pushed = after["predictions_pushed"] - before["predictions_pushed"]
            measured.append({"seconds": round(total, 3), "queue_live_seconds": round(live, 3), "phases": phases,
                             "pushed": pushed})
            log(f"pool {n}: round {k + 1}/{rounds}: annotation -> queue live {live:.2f}s, job done {total:.2f}s, "
                f"phases {phases}, "
                f"{pushed:.0f} predictions")
        res["rounds"] = measured
        res["round_seconds_median"] = float(np.median([m["seconds"] for m in measured]))
        res["queue_live_seconds_median"] = float(np.median([m["queue_live_seconds"] for m in measured]))
        res["phase_seconds_median"] = {p: float(np.median([m["phases"][p] for m in measured])) for p in PHASES}
        push_s = sum(m["phases"]["push"] for m in measured)
        res["push_per_second"] = round(sum(m["pushed"] for m in measured) / push_s, 1) if push_s else None

        if latency:
            # Latencies while a training job runs: force a round and hammer the routes until it ends.
            old = project_health(backend, pid).get("model_version")
            hammer = Hammer(backend, pid, label_of, text_of, config)
            r = httpx.post(backend.url + "/webhook", auth=AUTH, json={"action": "START_TRAINING", "project": {"id": pid}})
            assert r.status_code == 201, r.text
            hammer.start()
            wait_new_version(backend, pid, old, timeout=1800, idle=False)
            hammer.stop_flag.set()
            hammer.join(120)
            # the hammer's own webhook events queued follow-up rounds: let them finish before the next pool
            wait_drained(backend, pid, timeout=1800)
            res["latency_during_training_ms"] = {k: percentiles(v) for k, v in hammer.lat.items()}
            res["latency_errors"] = hammer.errors[:5]
            log(f"pool {n}: latencies during training (ms): {res['latency_during_training_ms']}")
            if hammer.errors:
                log(f"pool {n}: {len(hammer.errors)} request errors, first: {hammer.errors[0]}")
        res["memory"] = memory_mb(wpid)
        traj_files = list((model_dir).rglob("trajectory*"))
        res["trajectory_bytes"] = sum(f.stat().st_size for f in traj_files if f.is_file())
        log(f"pool {n}: backend memory {res['memory']}")
        c.close()
    finally:
        backend.stop()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pools", default="1000,10000", help="comma-separated pool sizes")
    ap.add_argument("--rounds", type=int, default=3, help="measured rounds per pool")
    ap.add_argument("--no-latency", action="store_true", help="skip the latency-under-training measurement")
    ap.add_argument("--feature-cache", type=Path, default=None,
                    help="copy this backend features/ folder in (same tasks, same Label Studio ids) to skip encoding")
    ap.add_argument("--first-queue", action="store_true",
                    help="measure only the first round: time to first queue, refined pushes, annotations during it")
    ap.add_argument("--task", choices=("text", "image"), default="text",
                    help="the project type: text (R8+BBC texts) or image (MNIST PNGs uploaded to Label Studio)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="a backend setting for every pool, e.g. --env TRAIN_MODE=mlp (repeatable)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "service")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "service_cost.json")
    args = ap.parse_args(argv)
    # `timeout` / kill send SIGTERM: exit through the finally blocks so Label Studio and the backend
    # (own process groups) are stopped too, never left running
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    pools = [int(p) for p in args.pools.split(",") if p.strip()]
    bad = [e for e in args.env if "=" not in e]
    if bad:
        ap.error(f"--env wants KEY=VALUE, got {bad}")
    backend_env = dict(e.split("=", 1) for e in args.env)
    TO_NAME["name"] = args.task
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    ls = LabelStudioServer(args.work / "labelstudio", free_port())
    log(f"starting Label Studio on {ls.url} (fresh data dir: migrations take ~40 s)")
    ls.start()
    results = {"machine": {"cpus": os.cpu_count()}, "env": backend_env, "pools": []}
    try:
        for n in pools:
            results["pools"].append(measure_pool(ls, n, args.rounds, args.work, latency=not args.no_latency,
                                                 backend_env=backend_env, feature_cache=args.feature_cache,
                                                 first_queue_only=args.first_queue, task=args.task))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))
    finally:
        ls.stop()
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
