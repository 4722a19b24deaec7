"""Image classification against a real Label Studio 1.23.2, with the real EfficientNet-Lite0.

Two projects, as users have them:
- MNIST digits uploaded through Label Studio's import API (multipart files), so tasks hold
  `/data/upload/<project>/<file>` and every image needs the token to be read;
- the same kind of files on disk under a local-files storage (`/data/local-files/?d=...`), synced by
  Label Studio, plus one broken file that must cost only its own task.

Each goes connect -> cold-start queue -> annotations -> DISAL queue pushed -> /next serves its head.
"""

from __future__ import annotations

import time

import pytest

from disal.data import load_mnist5k
from disal.data.images import label_from_png_name, write_png_files
from scripts.local_services import import_files

from .helpers import BASIC_AUTH, annotate, health, tasks_of, wait_for, wait_idle_version

CLASSES = ["0", "1", "2", "3"]
CONFIG = ('<View><Image name="image" value="$image"/><Choices name="digit" toName="image" choice="single">'
          + "".join(f'<Choice value="{c}"/>' for c in CLASSES) + "</Choices></View>")
N_UPLOADED = 40
N_LOCAL = 24


def label_of(task: dict) -> str:
    """The digit, from the file name write_png_files gave it (Label Studio keeps it in the URL)."""
    return label_from_png_name(task["data"]["image"])


def new_project(ls, title: str) -> int:
    with ls.client() as c:
        r = c.post("/api/projects/", json={"title": title, "label_config": CONFIG,
                                           "start_training_on_annotation_update": True})
        assert r.status_code == 201, r.text
        return r.json()["id"]


def connect(ls, backend, pid: int) -> dict:
    with ls.client() as c:
        r = c.post("/api/ml/", json={"url": backend.url, "project": pid, "title": "DISAL",
                                     "auth_method": "BASIC_AUTH", "basic_auth_user": BASIC_AUTH[0],
                                     "basic_auth_pass": BASIC_AUTH[1]})
        assert r.status_code == 201, r.text
    return wait_idle_version(backend, pid, (None,), timeout=300)


def label_until_disal(ls, backend, pid: int, first: dict, per_class: int = 2) -> dict:
    """Annotate the tasks /next serves (the queue's head), with their true digit, until every class
    has `per_class` labels or 12 tasks are labeled; each annotation must reach a new pushed version."""
    seen = (None, first["model_version"])
    counts = {c: 0 for c in CLASSES}
    last = first
    for _ in range(12):
        with ls.client() as c:
            task = c.get(f"/api/projects/{pid}/next").json()
        digit = label_of(task)
        annotate(ls, task["id"], [digit], "digit", "image")
        counts[digit] += 1
        last = wait_idle_version(backend, pid, seen, timeout=240)
        seen += (last["model_version"],)
        if min(counts.values()) >= per_class:
            break
    return last


def check_queue(ls, backend, pid: int, version: dict) -> None:
    """The pushed DISAL queue covers every readable unlabeled task; /next serves its lowest score."""
    assert version["kind"] == "head" and version["task_type"] == "image_classification", version
    assert version["encoder"].startswith("efficientnet-lite0-"), version
    with ls.client() as c:
        proj = c.get(f"/api/projects/{pid}").json()
    assert proj["model_version"] == version["model_version"]
    tasks = tasks_of(ls, pid)
    scores, right, total = {}, 0, 0
    for t in tasks:
        if t["is_labeled"]:
            continue
        mine = [p for p in t["predictions"] if p["model_version"] == proj["model_version"]]
        if not mine:
            continue
        (item,) = mine[0]["result"]
        assert (item["from_name"], item["to_name"], item["type"]) == ("digit", "image", "choices")
        assert item["value"]["choices"][0] in CLASSES
        scores[t["id"]] = mine[0]["score"]
        total += 1
        right += item["value"]["choices"][0] == label_of(t)
    readable = [t for t in tasks if not t["is_labeled"] and "broken" not in t["data"]["image"]]
    assert len(scores) == len(readable), "every readable unlabeled image has a prediction of the current version"
    print(f"\n[image e2e] project {pid}: {len(scores)} queued, predicted digit right on {right}/{total} "
          f"unlabeled tasks after {version['labels']} labels")
    assert right / total > 1.5 / len(CLASSES), "the frozen features classify digits well above chance"
    with ls.client() as c:
        served = c.get(f"/api/projects/{pid}/next").json()["id"]
    assert scores[served] == min(scores.values()), "Label Studio serves the head of the DISAL queue"


def test_uploaded_images_go_from_connect_to_a_prioritized_queue(label_studio, backend, tmp_path):
    files = write_png_files(load_mnist5k(), tmp_path / "upload", N_UPLOADED, classes=CLASSES)
    pid = new_project(label_studio, "MNIST uploads e2e")
    with label_studio.client() as c:
        import_files(c, pid, [p for p, _ in files])
    tasks = tasks_of(label_studio, pid)
    assert len(tasks) == N_UPLOADED and all(t["data"]["image"].startswith(f"/data/upload/{pid}/") for t in tasks)

    t0 = time.time()
    first = connect(label_studio, backend, pid)
    print(f"\n[image e2e] uploads: connect -> cold-start queue over {first['queue_length']} images in "
          f"{time.time() - t0:.1f}s")
    assert first["kind"] == "coldstart" and first["queue_length"] == N_UPLOADED
    assert "skipped_tasks" not in first
    t0 = time.time()
    last = label_until_disal(label_studio, backend, pid, first)
    print(f"[image e2e] uploads: {last['labels']} annotations -> DISAL queue in {time.time() - t0:.1f}s")
    check_queue(label_studio, backend, pid, last)


def test_local_files_storage_and_a_broken_file_cost_one_task(label_studio, backend):
    folder = label_studio.local_files_root / "mnist-e2e"
    write_png_files(load_mnist5k(), folder, N_LOCAL, seed=1, classes=CLASSES)
    (folder / "broken-0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated, not an image")
    pid = new_project(label_studio, "MNIST local files e2e")
    with label_studio.client() as c:
        r = c.post("/api/storages/localfiles", json={"project": pid, "title": "digits", "path": str(folder),
                                                     "regex_filter": r".*\.png", "use_blob_urls": True})
        assert r.status_code == 201, r.text
        r = c.post(f"/api/storages/localfiles/{r.json()['id']}/sync")
        assert r.status_code == 200, r.text
    tasks = wait_for(lambda: (lambda ts: ts if len(ts) == N_LOCAL + 1 else None)(tasks_of(label_studio, pid)), 60,
                     "the local-files sync")
    assert all(t["data"]["image"].startswith("/data/local-files/?d=") for t in tasks), tasks[0]["data"]
    broken = next(t["id"] for t in tasks if "broken" in t["data"]["image"])

    first = connect(label_studio, backend, pid)
    assert first["kind"] == "coldstart" and first["queue_length"] == N_LOCAL
    skipped = first["skipped_tasks"]
    assert skipped["count"] == 1 and skipped["tasks"][0]["task"] == broken
    assert "not an image" in skipped["tasks"][0]["reason"] or "broken" in skipped["tasks"][0]["reason"]
    log = backend.log.read_text()
    assert f"unlabeled task {broken} skipped" in log, "a log line names the skipped task"
    last = label_until_disal(label_studio, backend, pid, first)
    check_queue(label_studio, backend, pid, last)
    assert health(backend, pid)["skipped_tasks"]["tasks"][0]["task"] == broken
