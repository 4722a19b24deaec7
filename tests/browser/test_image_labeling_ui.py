"""Labeling an image project through Label Studio's own UI, like a person, in headless chromium.

MNIST digits uploaded as PNG files (served from /data/upload/, which the browser reads with the
user's session and the backend with its token). "Label All Tasks" must show the image itself (loaded,
not a broken icon), serve the head of the DISAL queue with its predicted digit pre-checked, and save
every Submit while the backend retrains between them.
"""

from __future__ import annotations

import os
import shutil

import httpx
import pytest
from selenium.webdriver.common.by import By

from disal.data import load_mnist5k
from disal.data.images import label_from_png_name, write_png_files
from e2e.helpers import wait_for
from scripts.local_services import import_files

from .conftest import BACKEND_AUTH, ROOT
from .test_labeling_ui import (RETRAIN_TIMEOUT, login, page_text, screen_task, snapshot, submit_and_watch,
                               visible_prechecked, wait_settled)

CLASSES = ["0", "1", "2", "3", "4"]
N_IMAGES = 30
UI_LABELS = 4
JS_IMAGE = """
// the task's picture as the browser decoded it (Label Studio may hand it a blob: URL it fetched itself)
const imgs = [...document.querySelectorAll('img')].filter(i => i.getBoundingClientRect().width > 100);
const img = imgs.find(i => i.naturalWidth === 28) || imgs[0];
return img ? [img.src.slice(0, 80), img.complete, img.naturalWidth, img.getBoundingClientRect().width] : null;
"""


def digit_of(ls, task_id: int) -> str:
    with ls.client() as c:
        url = c.get(f"/api/tasks/{task_id}").json()["data"]["image"]
    return label_from_png_name(url)


@pytest.fixture(scope="module")
def image_project(label_studio, ui_backend, tmp_path_factory):
    files = write_png_files(load_mnist5k(), tmp_path_factory.mktemp("mnist-ui"), N_IMAGES, seed=3, classes=CLASSES)
    cfg = ('<View><Image name="image" value="$image" width="200px"/><Choices name="digit" toName="image" '
           'choice="single" showInline="true">' + "".join(f'<Choice value="{c}"/>' for c in CLASSES)
           + "</Choices></View>")
    with label_studio.client() as c:
        pid = c.post("/api/projects/", json={"title": "MNIST (browser)", "label_config": cfg,
                                             "start_training_on_annotation_update": True}).json()["id"]
        import_files(c, pid, [p for p, _ in files])
        r = c.post("/api/ml/", json={"url": ui_backend.url, "project": pid, "title": "DISAL",
                                     "auth_method": "BASIC_AUTH", "basic_auth_user": BACKEND_AUTH[0],
                                     "basic_auth_pass": BACKEND_AUTH[1]})
        assert r.status_code == 201, r.text
        h = wait_settled(ui_backend, pid)
        tasks = c.get("/api/tasks/", params={"project": pid, "page_size": 100}).json()["tasks"]
    seeded: dict[str, int] = {}
    for t in tasks:  # two digits labeled through the API: the first UI task already has a classifier
        d = label_from_png_name(t["data"]["image"])
        if len(seeded) < 2 and d not in seeded:
            seeded[d] = t["id"]
    with label_studio.client() as c:
        for d, tid in seeded.items():
            r = c.post(f"/api/tasks/{tid}/annotations/", json={"result": [
                {"from_name": "digit", "to_name": "image", "type": "choices", "value": {"choices": [d]}}]})
            assert r.status_code == 201, r.text
    wait_for(lambda: httpx.get(ui_backend.url + "/health", auth=BACKEND_AUTH, timeout=10).json()["projects"]
             .get(str(pid), {}).get("kind") == "head", RETRAIN_TIMEOUT, "a trained head")
    wait_settled(ui_backend, pid, (h["model_version"],))
    return pid


def test_image_tasks_show_their_image_serve_the_queue_head_and_every_submit_saves(
        driver, artifacts, label_studio, ui_backend, image_project):
    pid, n = image_project, len(CLASSES)
    login(driver, label_studio)
    snap = snapshot(label_studio, pid)
    driver.get(f"{label_studio.url}/projects/{pid}/data")
    wait_for(lambda: next((b for b in driver.find_elements(By.TAG_NAME, "button")
                           if b.text.strip() == "Label All Tasks"), None), 60, "the Label All Tasks button").click()
    task = wait_for(lambda: screen_task(driver, n), 60, "the first image task on the labeling screen")
    labeled: set[int] = set()
    outcomes = []
    retrain_pending = False
    for i in range(UI_LABELS):
        # served by `snap.version`: the head of its queue, its predicted digit pre-checked, the image loaded
        assert task == snap.lowest(exclude=labeled), "Label Studio serves the head of the DISAL queue"
        img = wait_for(lambda: (lambda v: v if v and v[1] and v[2] > 0 else None)(driver.execute_script(JS_IMAGE)),
                       30, f"task {task}'s image to load in the browser")
        assert img[2] == 28 and img[3] > 100, f"the 28-pixel digit is shown, scaled up: {img}"
        assert visible_prechecked(driver) == snap.choices[task], "the predicted digit is pre-checked"
        if i == 1:
            artifacts.shot("image-labeling-screen")
            shutil.copyfile(artifacts.saved[-1], artifacts.dir / "ui-image-labeling.png")
        if retrain_pending:  # the previous submit's retrain finishes (and pushes) while this task is open
            wait_settled(ui_backend, pid, (snap.version,))
        snap = snapshot(label_studio, pid)  # the version that serves the next task
        out = submit_and_watch(driver, label_studio, task, digit_of(label_studio, task), n)
        outcomes.append(out)
        labeled.add(task)
        retrain_pending = True
        assert out.saved, f"submit {i + 1} of task {task} not saved: {out.message} (screenshots: {artifacts.dir})"
        assert out.next_task is not None, f"no next task after submit {i + 1}: {page_text(driver)[:300]!r}"
        task = out.next_task
    print(f"\nimage UI submits: {sum(o.saved for o in outcomes)}/{len(outcomes)} saved")
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(artifacts.dir / "ui-image-labeling.png", ROOT / "docs" / "ui-image-labeling.png")
