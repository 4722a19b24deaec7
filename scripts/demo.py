"""`make demo`: a real Label Studio with demo projects whose queues are prioritized by the backend.

Starts Label Studio 1.23 (its own venv, 127.0.0.1:8080, data in .demo/) with a known account and the
backend under gunicorn (127.0.0.1:9090, models in .demo/model_dir), creates the projects (once: a
second run reuses them), connects the backend, waits until each first queue is pushed, prints where
to log in, and stops both cleanly on Ctrl-C. The projects (`--demo`, `make demo DEMO=...`):
- `bbc`: BBC News articles, a text classification project;
- `mnist`: MNIST digits written as PNG files and uploaded through Label Studio's import API, an image
  classification project (its images are served from /data/upload/ and read with the token);
- `all` (default): both.
"""

from __future__ import annotations

import argparse
import fcntl
import signal
import socket
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.local_services import BackendServer, LabelStudioServer, import_files  # noqa: E402

TITLE = "BBC News (DISAL demo)"
IMAGE_TITLE = "MNIST digits (DISAL demo)"


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def label_config(classes: list[str]) -> str:
    choices = "".join(f'<Choice value="{c}"/>' for c in classes)
    return (f'<View><Header value="Which section of BBC News is this article from?"/>'
            f'<Text name="text" value="$text"/>'
            f'<Choices name="topic" toName="text" choice="single" showInline="true">{choices}</Choices>'
            # the backend's note: the pre-selected choice's probability and what the prediction's % means
            # (Label Studio shows neither for a whole-task <Choices>; disal.queue.model_note)
            f'<Header value="Model note (DISAL backend)" size="6"/>'
            f'<TextArea name="disal_note" toName="text" rows="2"/></View>')


def image_label_config(classes: list[str]) -> str:
    choices = "".join(f'<Choice value="{c}"/>' for c in classes)
    return (f'<View><Header value="Which digit is this?"/><Image name="image" value="$image" width="280px"/>'
            f'<Choices name="digit" toName="image" choice="single" showInline="true">{choices}</Choices>'
            f'<Header value="Model note (DISAL backend)" size="6"/>'
            f'<TextArea name="disal_note" toName="image" rows="2"/></View>')


def existing_project(c: httpx.Client, title: str) -> int | None:
    for p in c.get("/api/projects/", params={"page_size": 100}).json()["results"]:
        if p["title"] == title:
            if not p.get("start_training_on_annotation_update"):  # the user's choice (or an older demo's project)
                print(f"note: {title}: \"Start model training on annotation submission\" is off, so annotations "
                      "do not retrain; turn it on in the project's Settings > Model", flush=True)
            return p["id"]
    return None


def find_or_create_image_project(c: httpx.Client, n_images: int, folder: Path) -> int:
    """MNIST digits as PNG files, uploaded as a user uploads them (multipart import)."""
    pid = existing_project(c, IMAGE_TITLE)
    if pid is not None:
        return pid
    from disal.data import load_mnist5k
    from disal.data.images import write_png_files

    ds = load_mnist5k()
    pid = c.post("/api/projects/", json={"title": IMAGE_TITLE, "label_config": image_label_config(ds.classes),
                                         "description": "Images ordered by DISAL: open the 'DISAL queue' tab "
                                                        "or press Label All Tasks.",
                                         "start_training_on_annotation_update": True}).json()["id"]
    files = write_png_files(ds, folder, n_images, seed=0)
    import_files(c, pid, [p for p, _ in files])
    print(f"created project {pid} with {len(files)} MNIST digit images (uploaded PNG files)", flush=True)
    return pid


def find_or_create_project(c: httpx.Client, n_tasks: int) -> int:
    pid = existing_project(c, TITLE)
    if pid is not None:
        return pid
    from disal.data import load_bbc

    ds = load_bbc()
    n = min(n_tasks, len(ds.train_texts))
    pid = c.post("/api/projects/", json={"title": TITLE, "label_config": label_config(ds.classes),
                                         "description": "Tasks ordered by DISAL: open the 'DISAL queue' tab "
                                                        "or press Label All Tasks.",
                                         # Settings > Model "Start model training on annotation submission":
                                         # the backend retrains on annotations only while it is on
                                         "start_training_on_annotation_update": True}).json()["id"]
    tasks = [{"text": ds.train_texts[i], "source_label": ds.classes[int(ds.train_labels[i])]} for i in range(n)]
    r = c.post(f"/api/projects/{pid}/import", json=tasks)
    r.raise_for_status()
    print(f"created project {pid} with {n} BBC News articles", flush=True)
    return pid


def ensure_connected(c: httpx.Client, pid: int, backend_url: str) -> None:
    backends = c.get("/api/ml/", params={"project": pid}).json()
    if any(b["url"].rstrip("/") == backend_url for b in backends):
        return
    r = c.post("/api/ml/", json={"url": backend_url, "project": pid, "title": "DISAL"})
    if r.status_code >= 300:
        raise SystemExit(f"connecting the backend failed: {r.status_code} {r.text[:300]}")
    print(f"connected the backend at {backend_url} to project {pid}", flush=True)


UNITS = {"fetching": "tasks read", "encoding": "{unit} encoded", "training": "steps", "scoring": "tasks"}


def progress_line(h: dict, unit: str = "texts") -> str:
    """One /health state as a person reads it: "encoding 1,200/10,000 texts encoded", "pushing 500
    predictions" (a push reports once per chunk, so its done count reads 0 until the end)."""
    state, p = h.get("state"), h.get("progress") or {}
    if not p.get("total"):
        return str(state)
    if state == "pushing":
        return f"pushing {p['total']:,} predictions"
    return f"{state} {p.get('done', 0):,}/{p['total']:,} {UNITS.get(state, '').format(unit=unit)}".rstrip()


def wait_for_queue(backend: BackendServer, pid: int, timeout: float, unit: str = "texts") -> dict:
    """Until the first queue is live: the whole one, or on a big pool the first partial one (the
    backend pushes it after FIRST_QUEUE_SECONDS of encoding and refines it in the background)."""
    t0, last, last_print = time.time(), None, 0.0
    while time.time() - t0 < timeout:
        h = httpx.get(backend.url + "/health", timeout=10).json().get("projects", {}).get(str(pid), {})
        if h.get("error") and h.get("state") == "idle":  # /health's reason for the last failed job
            raise SystemExit(f"the backend's first round failed: {h['error']} (log: {backend.log})")
        if h.get("state") != last or time.time() - last_print > 10:
            print(f"  backend: {progress_line(h, unit)}", flush=True)
            last, last_print = h.get("state"), time.time()
        if h.get("model_version") and (h.get("state") == "idle" or h.get("partial")):
            return h
        time.sleep(1)
    raise SystemExit(f"no queue was pushed within {timeout:.0f}s; see {backend.log}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ls-port", type=int, default=8080)
    ap.add_argument("--backend-port", type=int, default=9090)
    ap.add_argument("--data-dir", type=Path, default=ROOT / ".demo")
    ap.add_argument("--demo", choices=("all", "bbc", "mnist"), default="all",
                    help="which demo projects: BBC News (text), MNIST (images), or both (default)")
    ap.add_argument("--tasks", type=int, default=500, help="BBC News articles in the text project")
    ap.add_argument("--images", type=int, default=300, help="MNIST images in the image project")
    ap.add_argument("--exit-when-ready", action="store_true", help="stop both services once the queue is pushed")
    args = ap.parse_args(argv)

    # One demo per data dir: two at once would both run Label Studio's migrations on one SQLite file
    # (seen: "duplicate column name" and a broken database). The lock goes with this process.
    args.data_dir.mkdir(parents=True, exist_ok=True)
    lock = open(args.data_dir / ".demo.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another demo is running on {args.data_dir}: stop it first (Ctrl-C in its terminal)") from None
    for port, what in ((args.ls_port, "Label Studio"), (args.backend_port, "the backend")):
        if not port_is_free(port):
            raise SystemExit(f"port {port} for {what} is in use on 127.0.0.1: stop what runs there or pass "
                             f"--ls-port/--backend-port")
    ls = LabelStudioServer(args.data_dir / "labelstudio", args.ls_port)
    backend = BackendServer(args.data_dir / "model_dir", args.backend_port, ls,
                            extra_env={"USE_UNCERTAINTY_SAMPLING": "true"}, log=args.data_dir / "backend.log")
    # Ctrl-C and SIGTERM both stop the services (SIGINT is ignored in background jobs unless reset).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    t0 = time.time()
    try:
        print(f"starting Label Studio 1.23 on {ls.url} (first start runs migrations, ~40 s) ...", flush=True)
        ls.start()
        print(f"starting the backend on {backend.url} ...", flush=True)
        backend.start()
        pids: list[tuple[str, int, str]] = []
        with ls.client() as c:
            if args.demo in ("all", "bbc"):
                pids.append(("BBC News (text)", find_or_create_project(c, args.tasks), "texts"))
            if args.demo in ("all", "mnist"):
                pids.append(("MNIST (images)", find_or_create_image_project(c, args.images,
                                                                            args.data_dir / "mnist-png"), "images"))
            for _, pid, _ in pids:
                ensure_connected(c, pid, backend.url)
        lines = []
        for what, pid, unit in pids:
            print(f"{what}: project {pid}", flush=True)
            h = wait_for_queue(backend, pid, timeout=900, unit=unit)
            part = h.get("partial")
            refining = (f" (covers the {part['queue_over']:,} of {part['total']:,} tasks encoded so far; it refines "
                        f"in the background)") if part else ""
            lines.append(f"  {what}: queue {h.get('model_version')} "
                         f"({'cold start: CoreSet over embeddings' if h.get('cold_start') else 'DISAL'}){refining}\n"
                         f"    open   {ls.url}/projects/{pid}/data\n")
        print(f"\nready in {time.time() - t0:.0f}s: the queues are pushed.\n"
              + "".join(lines) +
              f"  login  {ls.username} / {ls.password}\n"
              f"  then   'Label All Tasks' (uncertainty sampling serves the queue) or the 'DISAL queue' tab.\n"
              f"  Each submitted annotation retrains in the background and re-pushes the queue.\n"
              f"  logs   {ls.log} and {backend.log}\n"
              f"Ctrl-C stops both.", flush=True)
        if not args.exit_when_ready:
            while ls.proc.poll() is None and backend.proc.poll() is None:
                time.sleep(1)
            print("a service stopped on its own; see the logs above", flush=True)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        backend.stop()
        ls.stop()
    print("stopped Label Studio and the backend", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
