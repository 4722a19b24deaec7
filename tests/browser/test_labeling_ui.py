"""Labeling through Label Studio's own UI, like a person, in headless chromium against a real Label
Studio 1.23.2 and the backend with its default settings (uncertainty sampling on).

The API-only end-to-end tests cannot see what the UI does: an open task's prediction becomes its
annotation's `parent_prediction`, so a backend that deletes that prediction while the task is open
makes Submit fail ("Annotation is not saved"). These tests open tasks with "Label All Tasks", let
retrains and clean-ups happen while a task is open, click a choice and Submit, and check:
every submit saved; the next task served is the lowest-score unlabeled task of the version that
served it; the pre-annotation (the pre-checked choice) is the version's prediction; the status page
renders with a progress state. One task stays open across three retrains.

The tests run in file order and share one project and one browser, as one person's session would.
On failure they save PNG screenshots under tmp/artifacts/ (the path is printed); on success the
labeling screen, the queue and the status page go to docs/ui-*.png for the README when
UPDATE_DOCS_SCREENSHOTS=1 is set (they are always kept under tmp/artifacts/).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By

from disal.data import load_bbc
from e2e.helpers import wait_for  # one poller for the e2e and browser suites

from .conftest import BACKEND_AUTH, ROOT

N_TASKS = 40
UI_LABELS = 10  # tasks labeled through the UI with a retrain while each is open
OPEN_ACROSS = 3  # retrains that happen while one task stays open
DOCS = ROOT / "docs"
RETRAIN_TIMEOUT = 240.0
STATE: dict = {}

JS_TASK_ID = """
const el = document.querySelector('.lsf-current-task__task-id');
if (!el || !el.firstChild) return null;
return el.firstChild.textContent.trim();
"""
JS_CHOICES = """
return [...document.querySelectorAll('.lsf-choices input[type=checkbox]')]
    .map(e => [e.name, e.checked]);
"""
JS_CHECKED_VISIBLE = """
const out = [];
for (const e of document.querySelectorAll('.lsf-choices input[type=checkbox]')) {
  if (!e.checked) continue;
  const label = e.closest('label');
  const r = label.getBoundingClientRect();
  const top = document.elementFromPoint(r.left + Math.min(r.width / 2, 20), r.top + r.height / 2);
  out.push([e.name, !!top && label.contains(top)]);
}
return out;
"""


# -- what the services say -----------------------------------------------------------------------
def backend_health(backend, pid: int) -> dict:
    r = httpx.get(backend.url + "/health", auth=BACKEND_AUTH, timeout=10)
    r.raise_for_status()
    return r.json()["projects"].get(str(pid), {})


def wait_settled(backend, pid: int, not_in: tuple = (), timeout: float = RETRAIN_TIMEOUT) -> dict:
    """The project idle, nothing pending, with a version not in `not_in` (fails fast on a job error)."""
    def ready():
        h = backend_health(backend, pid)
        job = h.get("job") or {}
        assert not (h.get("error") and h.get("state") == "idle"), f"backend job failed: {h['error']}"
        ok = (h.get("state") == "idle" and not job.get("pending") and not job.get("running")
              and h.get("model_version") and h.get("model_version") not in not_in)
        return h if ok else None

    return wait_for(ready, timeout, f"an idle project with a version other than {not_in}")


@dataclass
class Snapshot:
    """The queue Label Studio serves from: project.model_version and each unlabeled task's prediction."""

    version: str
    scores: dict[int, float] = field(default_factory=dict)
    choices: dict[int, list[str]] = field(default_factory=dict)

    def lowest(self, exclude: set[int] = frozenset()) -> int:
        left = {t: s for t, s in self.scores.items() if t not in exclude}
        return min(left, key=lambda t: (left[t], t))


def snapshot(ls, pid: int) -> Snapshot:
    with ls.client() as c:
        version = c.get(f"/api/projects/{pid}").json()["model_version"]
        tasks = c.get("/api/tasks/", params={"project": pid, "fields": "all", "page_size": 1000}).json()["tasks"]
    snap = Snapshot(version)
    for t in tasks:
        if t["is_labeled"]:
            continue
        mine = [p for p in t["predictions"] if p["model_version"] == version]
        if mine:
            snap.scores[t["id"]] = float(mine[0]["score"])
            snap.choices[t["id"]] = [c for r in mine[0]["result"] for c in r.get("value", {}).get("choices", [])]
    return snap


def annotations_of(ls, task_id: int) -> list[dict]:
    with ls.client() as c:
        r = c.get(f"/api/tasks/{task_id}/annotations/")
        r.raise_for_status()
        return [a for a in r.json() if not a.get("was_cancelled")]


def gold_of(ls, task_id: int) -> str:
    with ls.client() as c:
        return c.get(f"/api/tasks/{task_id}").json()["data"]["gold"]


def annotate_api(ls, task_id: int, label: str) -> None:
    with ls.client() as c:
        r = c.post(f"/api/tasks/{task_id}/annotations/", json={"result": [
            {"from_name": "topic", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]})
        assert r.status_code == 201, r.text


# -- what the browser shows ----------------------------------------------------------------------
def login(driver, ls) -> None:
    driver.get(ls.url + "/user/login/")
    driver.find_element(By.NAME, "email").send_keys(ls.username)
    driver.find_element(By.NAME, "password").send_keys(ls.password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(lambda: "/user/login" not in driver.current_url, 30, "the login to finish")


def js(driver, script: str):
    try:
        return driver.execute_script(script)
    except (StaleElementReferenceException, WebDriverException):
        return None


def screen_task(driver, n_choices: int) -> int | None:
    """The id of the task on the labeling screen once its choices are rendered, else None."""
    tid = js(driver, JS_TASK_ID)
    choices = js(driver, JS_CHOICES) or []
    if tid and tid.isdigit() and len(choices) == n_choices:
        return int(tid)
    return None


def checked(driver) -> list[str]:
    return [name for name, on in (js(driver, JS_CHOICES) or []) if on]


def visible_prechecked(driver) -> list[str]:
    """Scroll the choices into view as a person would, then the checked choices a person can see
    (on screen and not covered by the bottom bar or a dialog)."""
    js(driver, "const c = document.querySelector('.lsf-choices'); if (c) c.scrollIntoView({block: 'center'});")
    time.sleep(0.2)
    return [name for name, seen in (js(driver, JS_CHECKED_VISIBLE) or []) if seen]


def page_text(driver) -> str:
    return js(driver, "return document.body ? document.body.innerText : ''") or ""


def click_choice(driver, label: str) -> None:
    """Scroll the choice into view (a long article pushes it under the bottom bar), then click it."""
    box = driver.find_element(By.CSS_SELECTOR, f'.lsf-choices input[type=checkbox][name="{label}"]')
    target = box.find_element(By.XPATH, "./ancestor::label[1]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", target)
    target.click()


def choose_and_submit(driver, label: str) -> None:
    """Click `label` unless it is already the (pre-)checked choice, as a person would, then Submit."""
    if checked(driver) != [label]:
        click_choice(driver, label)
        wait_for(lambda: checked(driver) == [label], 10, f"only {label!r} checked")
    driver.find_element(By.CSS_SELECTOR, "button[data-testid=bottombar-submit-button]").click()


@dataclass
class SubmitOutcome:
    task: int
    saved: bool
    message: str
    next_task: int | None


def submit_and_watch(driver, ls, task_id: int, label: str, n_choices: int, timeout: float = 45.0) -> SubmitOutcome:
    """Submit the open task; watch for the UI's error, the next task, and the annotation in Label Studio."""
    choose_and_submit(driver, label)
    t0 = time.time()
    error = ""
    nxt = None
    while time.time() - t0 < timeout:
        text = page_text(driver)
        if "not saved" in text.lower():
            error = next((ln for ln in text.splitlines() if "not saved" in ln.lower()), "not saved")
            break
        cur = screen_task(driver, n_choices)
        if cur is not None and cur != task_id:
            nxt = cur
            break
        if "no more tasks" in text.lower() or "all tasks" in text.lower() and "labeled" in text.lower():
            break
        time.sleep(0.2)
    saved = bool(annotations_of(ls, task_id))
    if nxt is not None:  # a late error message still counts against this submit
        time.sleep(0.5)
        if "not saved" in page_text(driver).lower():
            error = error or "Annotation is not saved"
    return SubmitOutcome(task_id, saved and not error, error, nxt)


# -- the project ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def project(label_studio, ui_backend):
    """The demo's shape: BBC News texts, one Choices over a Text, connected with basic auth, and two
    labels of different classes through the API so the first UI task already has a classifier."""
    ds = load_bbc()
    rng = np.random.default_rng(7)
    idx = rng.choice(len(ds.train_texts), N_TASKS, replace=False)
    cfg = ('<View><Text name="text" value="$text"/><Choices name="topic" toName="text" choice="single">'
           + "".join(f'<Choice value="{c}"/>' for c in ds.classes) + "</Choices></View>")
    with label_studio.client() as c:
        # "Start model training on annotation submission" on, as in the demo: every submit retrains
        pid = c.post("/api/projects/", json={"title": "BBC News (browser)", "label_config": cfg,
                                             "start_training_on_annotation_update": True}).json()["id"]
        r = c.post(f"/api/projects/{pid}/import",
                   json=[{"text": ds.train_texts[i], "gold": ds.classes[int(ds.train_labels[i])]} for i in idx])
        assert r.status_code == 201, r.text
        r = c.post("/api/ml/", json={"url": ui_backend.url, "project": pid, "title": "DISAL",
                                     "auth_method": "BASIC_AUTH", "basic_auth_user": BACKEND_AUTH[0],
                                     "basic_auth_pass": BACKEND_AUTH[1]})
        assert r.status_code == 201, r.text
    h = wait_settled(ui_backend, pid)
    seeded: dict[str, int] = {}
    with label_studio.client() as c:
        tasks = c.get("/api/tasks/", params={"project": pid, "fields": "all", "page_size": 1000}).json()["tasks"]
    for t in tasks:
        if len(seeded) < 2 and t["data"]["gold"] not in seeded:
            seeded[t["data"]["gold"]] = t["id"]
    for label, tid in seeded.items():
        annotate_api(label_studio, tid, label)
    wait_for(lambda: backend_health(ui_backend, pid).get("kind") == "head", RETRAIN_TIMEOUT, "a trained head")
    wait_settled(ui_backend, pid, (h["model_version"],))
    return {"id": pid, "classes": list(ds.classes)}


def test_ten_ui_submits_with_a_retrain_while_each_task_is_open(driver, artifacts, label_studio, ui_backend,
                                                               project):
    pid, n_choices = project["id"], len(project["classes"])
    t_start = time.time()
    login(driver, label_studio)
    snap = snapshot(label_studio, pid)
    driver.get(f"{label_studio.url}/projects/{pid}/data")
    button = wait_for(lambda: next((b for b in driver.find_elements(By.TAG_NAME, "button")
                                    if b.text.strip() == "Label All Tasks"), None), 60, "the Label All Tasks button")
    button.click()
    outcomes: list[SubmitOutcome] = []
    served_checks: list[tuple[int, int, str]] = []
    prechecked: list[tuple[int, list[str], list[str]]] = []
    labeled: set[int] = set()
    task = wait_for(lambda: screen_task(driver, n_choices), 60, "the first task on the labeling screen")
    after_reload = retrain_pending = False
    for i in range(UI_LABELS):
        # served by `snap.version`: the lowest score among the unlabeled tasks, with its prediction pre-checked
        # (after a reload Label Studio first serves the task this user still holds: no queue check then)
        if not after_reload:
            served_checks.append((task, snap.lowest(exclude=labeled), snap.version))
        after_reload = False
        prechecked.append((task, visible_prechecked(driver), snap.choices.get(task, [])))
        if i == 2:
            artifacts.shot("labeling-screen")
            shutil.copyfile(artifacts.saved[-1], artifacts.dir / "ui-labeling.png")
        if retrain_pending:  # the retrain the previous submit started finishes (and cleans up) while this task is open
            wait_settled(ui_backend, pid, (snap.version,))
        snap = snapshot(label_studio, pid)  # the version that will serve the next task
        out = submit_and_watch(driver, label_studio, task, gold_of(label_studio, task), n_choices)
        outcomes.append(out)
        labeled.add(task)
        retrain_pending = out.saved  # a submit that did not save sends no annotation event
        if not out.saved:
            artifacts.shot(f"submit-{i + 1}-failed")
            driver.refresh()  # what a person must do; the UI keeps failing otherwise
            nxt = wait_for(lambda: screen_task(driver, n_choices), 60, "a task after the reload")
            if nxt == task:  # the failed task is served again: label it once more, check nothing about it
                labeled.discard(task)
            snap = snapshot(label_studio, pid)
            task, after_reload = nxt, True
            continue
        assert out.next_task is not None, f"no next task after submit {i + 1}: {page_text(driver)[:300]!r}"
        task = out.next_task
    STATE.update(snap=snap, task=task, labeled=labeled, retrain_pending=retrain_pending)
    ok = sum(o.saved for o in outcomes)
    print(f"\nUI submits with a retrain while each task was open: {ok}/{len(outcomes)} saved "
          f"in {time.time() - t_start:.0f}s")
    failed = [(o.task, o.message) for o in outcomes if not o.saved]
    assert not failed, f"{len(failed)} of {len(outcomes)} submits were not saved: {failed} (screenshots: {artifacts.dir})"
    wrong = [(t, want, v) for t, want, v in served_checks if t != want]
    assert not wrong, f"served task != lowest-score unlabeled task of the serving version: {wrong}"
    for tid, shown, predicted in prechecked:
        assert predicted, f"task {tid}: no prediction of the serving version"
        assert shown == predicted, (f"task {tid}: a person sees {shown or 'nothing'} pre-checked, the "
                                    f"prediction is {predicted}")
    STATE["labeling_png"] = artifacts.dir / "ui-labeling.png"


def test_a_task_kept_open_across_three_retrains_saves(driver, artifacts, label_studio, ui_backend, project):
    if "task" not in STATE:
        pytest.skip("needs the labeling session of the previous test")
    pid, n_choices = project["id"], len(project["classes"])
    task, snap = STATE["task"], STATE["snap"]
    assert screen_task(driver, n_choices) == task
    assert visible_prechecked(driver) == snap.choices[task], "the open task shows its prediction pre-checked"
    # the retrain of the last UI submit (if it saved) runs first, then three more from another annotator's labels
    versions = [snap.version]
    if STATE.get("retrain_pending"):
        versions.append(wait_settled(ui_backend, pid, (snap.version,))["model_version"])
    for _ in range(OPEN_ACROSS):  # meanwhile, another annotator labels other tasks through the API
        other = snapshot(label_studio, pid).lowest(exclude={task} | STATE["labeled"])
        annotate_api(label_studio, other, gold_of(label_studio, other))
        STATE["labeled"].add(other)
        versions.append(wait_settled(ui_backend, pid, tuple(versions))["model_version"])
    assert screen_task(driver, n_choices) == task, "the task stayed open"
    assert len(versions) - 1 >= OPEN_ACROSS, f"only {len(versions) - 1} retrains while the task was open"
    out = submit_and_watch(driver, label_studio, task, gold_of(label_studio, task), n_choices)
    print(f"\ntask {task} open across {OPEN_ACROSS} retrains ({' -> '.join(versions)}): "
          f"{'saved' if out.saved else 'NOT saved: ' + out.message}")
    assert out.saved, f"task {task} open across {OPEN_ACROSS} retrains: {out.message or 'no annotation'}"
    assert annotations_of(label_studio, task)[0]["result"][0]["value"]["choices"] == [gold_of(label_studio, task)]
    STATE["open_across_ok"] = True


def test_the_queue_tab_and_the_status_page_render(driver, artifacts, label_studio, ui_backend, project):
    pid = project["id"]
    with label_studio.client() as c:
        views = c.get("/api/dm/views/", params={"project": pid}).json()
    tab = next(v["id"] for v in views if v["data"].get("title") == "DISAL queue")
    driver.get(f"{label_studio.url}/projects/{pid}/data?tab={tab}")
    driver.set_window_size(2000, 1000)  # wide enough for the text next to the prediction score
    wait_for(lambda: "Tasks:" in page_text(driver), 60, "the Data Manager")
    time.sleep(1.5)  # the table's rows render after the footer
    queue_png = artifacts.shot("queue")
    driver.set_window_size(1400, 1000)

    # the status page while a round runs: annotate one more task, then watch the page
    snap = snapshot(label_studio, pid)
    nxt = snap.lowest(exclude=STATE.get("labeled", set()))
    annotate_api(label_studio, nxt, gold_of(label_studio, nxt))
    base = ui_backend.url.replace("http://", f"http://{BACKEND_AUTH[0]}:{BACKEND_AUTH[1]}@") + "/"
    states = []

    progress_png, best = None, -1

    def round_over():
        """Reload the page until the round is over; keep a screenshot of a running state, preferring
        a part-filled progress bar, then one with counts, then any."""
        nonlocal progress_png, best
        driver.get(base)
        el = driver.find_elements(By.CSS_SELECTOR, f"#project-{pid} .state")
        state = el[0].get_attribute("data-state") if el else None
        states.append(state)
        if state not in ("idle", None):
            bars = driver.find_elements(By.CSS_SELECTOR, f"#project-{pid} progress.bar")
            assert bars, "a running state without a progress bar"
            done, total = (float(bars[0].get_dom_attribute(a) or 0) for a in ("value", "max"))
            rank = 2 if 0 < done < total else 1 if total else 0
            if rank > best:
                best, progress_png = rank, artifacts.shot(f"status-running-{state}")
        h = backend_health(ui_backend, pid)
        return h.get("model_version") != snap.version and h.get("state") == "idle"

    wait_for(round_over, RETRAIN_TIMEOUT, "the round the annotation started", interval=0.05)
    assert progress_png is not None, f"the status page never showed a running state (saw {sorted(set(states))})"
    h = wait_settled(ui_backend, pid, (snap.version,))
    driver.get(base)
    wait_for(lambda: driver.execute_script(
        "const i = document.querySelector('img.curve'); return i && i.complete && i.naturalWidth > 0;"),
        30, "the learning-curve PNG")
    section = driver.find_element(By.CSS_SELECTOR, f"#project-{pid}").text
    assert h["model_version"] in section and "frozen encoder + linear head" in section
    assert "Top of the queue" in section and "Learning curve" in section
    artifacts.shot("status")
    print(f"\nstatus page states seen while the round ran: {sorted(set(states))}; running screenshot "
          f"{progress_png}")
    # success: the screenshots a person sees go to the README, when asked (UPDATE_DOCS_SCREENSHOTS=1):
    # a plain `make test` leaves the working tree as it found it
    if STATE.get("open_across_ok") and STATE.get("labeling_png") and os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
        for src, name in ((STATE["labeling_png"], "ui-labeling.png"), (queue_png, "ui-queue.png"),
                          (progress_png, "ui-status.png")):
            if src is not None:
                shutil.copyfile(src, DOCS / name)
