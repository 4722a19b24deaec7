"""An in-memory Label Studio behind httpx.MockTransport: the endpoints the backend uses, as 1.23 answers.

Used by the unit tests (edge cases: pagination, retries, skipped annotations) and the integration
test (a real tiny model trains against it). It records every request so tests can assert what was
sent, and it can fail on purpose (`fail_next`), answer slowly, or drop connections.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx

BASE_URL = "http://labelstudio.test"
BACKEND_URL = "http://backend.test:9090"
TOKEN = "legacy-token-abcdef123456"

CHOICES_CONFIG = """<View>
  <{tag} name="{name}" value="${name}"/>
  <Choices name="label" toName="{name}" choice="{mode}">
    {choices}
  </Choices>
</View>"""


LABELS = ["business", "sport", "tech"]


def image_config(labels: list[str], multiple: bool = False) -> str:
    """One <Choices name="label"> over <Image name="image" value="$image"/>."""
    return choices_config(labels, multiple, tag="Image", name="image")


# one colour per label: a pixel-statistics encoder separates them, as EfficientNet separates MNIST digits
LABEL_COLORS = {"business": (200, 60, 40), "sport": (40, 190, 60), "tech": (50, 60, 210)}


def color_png(label: str, seed: int, side: int = 24) -> bytes:
    """A PNG of `label`'s colour with seeded noise (distinct bytes for every seed)."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.array(LABEL_COLORS[label], dtype=np.int16)
    px = np.clip(base + rng.integers(-35, 36, (side, side, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="PNG")
    return buf.getvalue()


def choices_config(labels: list[str], multiple: bool = False, tag: str = "Text", name: str = "text") -> str:
    """One <Choices name="label"> over one object (default <Text name="text" value="$text"/>)."""
    return CHOICES_CONFIG.format(tag=tag, name=name, mode="multiple" if multiple else "single",
                                 choices="\n    ".join(f'<Choice value="{c}"/>' for c in labels))


def annotation(choices: list[str], ann_id: int, cancelled: bool = False, from_name: str = "label",
               updated_at: str = "2026-01-01T00:00:00Z") -> dict:
    result = [] if not choices else [{"from_name": from_name, "to_name": "text", "type": "choices",
                                      "value": {"choices": list(choices)}}]
    return {"id": ann_id, "result": result, "was_cancelled": cancelled, "updated_at": updated_at}


@dataclass
class FakeLabelStudio:
    """State of one fake server; `transport()` gives the MockTransport that serves it."""

    label_config: str
    project_id: int = 1
    tasks: dict[int, dict] = field(default_factory=dict)
    predictions: list[dict] = field(default_factory=list)
    views: list[dict] = field(default_factory=list)
    webhooks: list[dict] = field(default_factory=list)
    project: dict = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    fail_next: list[Any] = field(default_factory=list)  # status ints or exception instances, consumed in order
    fail_paths: dict[str, list[Any]] = field(default_factory=dict)  # path regex -> failures
    on_request: Callable[[httpx.Request], None] | None = None
    files: dict[str, bytes] = field(default_factory=dict)  # "/data/upload/1/a.png" or "/data/local-files/?d=x"
    ignore_filters: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    _next_ids: dict = field(default_factory=lambda: {"ann": 1000, "pred": 1, "view": 1})

    def __post_init__(self) -> None:
        # the training toggle is ON here, as the demo and the e2e projects create it ("Start model training
        # on annotation submission"; Label Studio's own default is off); tests of the off case turn it off
        self.project = {"id": self.project_id, "title": "Fake", "label_config": self.label_config,
                        "model_version": "", "sampling": "Sequential sampling",
                        "created_at": "2026-01-01T00:00:00Z", "start_training_on_annotation_update": True,
                        "min_annotations_to_start_training": 1}
        self.webhooks = [{"id": 7, "project": self.project_id, "url": f"{BACKEND_URL}/webhook",
                          "send_for_all_actions": True, "headers": {}, "is_active": True}]

    # -- fixtures helpers ------------------------------------------------------------------------
    def add_tasks(self, texts: list[str], start_id: int = 1, field_name: str = "text") -> list[int]:
        ids = []
        for i, text in enumerate(texts):
            tid = start_id + i
            self.tasks[tid] = {"id": tid, "project": self.project_id, "data": {field_name: text},
                               "annotations": [], "predictions": []}
            ids.append(tid)
        return ids

    def annotate(self, task_id: int, choices: list[str], cancelled: bool = False) -> dict:
        with self.lock:
            self._next_ids["ann"] += 1
            ann = annotation(choices, self._next_ids["ann"], cancelled,
                             updated_at=f"2026-01-01T00:00:{self._next_ids['ann'] % 60:02d}Z")
            self.tasks[task_id]["annotations"].append(ann)
            return ann

    def total_annotations(self, task: dict) -> int:
        return sum(1 for a in task["annotations"] if not a.get("was_cancelled"))

    def predictions_of(self, version: str) -> dict[int, dict]:
        return {p["task"]: p for p in self.predictions if p.get("model_version") == version}

    def calls(self, method: str, path_regex: str) -> list[tuple[str, str, Any]]:
        return [r for r in self.requests if r[0] == method and re.fullmatch(path_regex, r[1])]

    # -- transport -------------------------------------------------------------------------------
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=self.transport(), base_url=BASE_URL)

    def _serialize_task(self, task: dict, fields: str = "all") -> dict:
        t = dict(task)
        t["total_annotations"] = self.total_annotations(task)
        t["cancelled_annotations"] = sum(1 for a in task["annotations"] if a.get("was_cancelled"))
        t["is_labeled"] = t["total_annotations"] > 0
        t["predictions"] = [p for p in self.predictions if p["task"] == task["id"]]
        if fields != "all":  # like 1.23's task_only: counts and data, no annotation or prediction bodies
            t.pop("annotations")
            t.pop("predictions")
        return t

    def _filter(self, tasks: list[dict], query: str | None) -> list[dict]:
        if not query or self.ignore_filters:
            return tasks
        q = json.loads(query)
        items = ((q.get("filters") or {}).get("items")) or []
        out = tasks
        for item in items:
            assert item["filter"] == "filter:tasks:total_annotations", item
            op, value = item["operator"], item["value"]
            if op == "greater":
                out = [t for t in out if self.total_annotations(t) > value]
            elif op == "equal":
                out = [t for t in out if self.total_annotations(t) == value]
            else:
                raise AssertionError(f"unexpected operator {op}")
        return out

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = None
        if request.content:
            try:
                body = json.loads(request.content)
            except ValueError:
                body = request.content
        with self.lock:
            self.requests.append((request.method, path, body))
            failure = self.fail_next.pop(0) if self.fail_next else None
            if failure is None:
                for rx, fails in self.fail_paths.items():
                    if fails and re.fullmatch(rx, path):
                        failure = fails.pop(0)
                        break
        if self.on_request:
            self.on_request(request)
        if isinstance(failure, Exception):
            raise failure
        if isinstance(failure, int):
            return httpx.Response(failure, json={"detail": f"injected {failure}"})
        auth = request.headers.get("authorization", "")
        if auth != f"Token {TOKEN}":
            return httpx.Response(401, json={"detail": "Authentication credentials were not provided."})
        pid = self.project_id
        m = request.method
        if m == "GET" and path.startswith("/data/"):  # media, served as Label Studio serves uploads
            key = path + (f"?{request.url.query.decode()}" if request.url.query else "")
            data = self.files.get(key)
            return httpx.Response(200, content=data) if data is not None else httpx.Response(404, text="Not found")
        with self.lock:
            if path == f"/api/projects/{pid}/" and m == "GET":
                return httpx.Response(200, json=self.project)
            if path == f"/api/projects/{pid}/" and m == "PATCH":
                self.project.update(body or {})
                if "start_training_on_annotation_update" in (body or {}):  # as 1.23's serializer stores it
                    self.project["min_annotations_to_start_training"] = int(body["start_training_on_annotation_update"])
                return httpx.Response(200, json=self.project)
            if re.fullmatch(r"/api/projects/\d+/", path):
                return httpx.Response(404, json={"detail": "Not found."})
            if path == "/api/tasks/" and m == "GET":
                params = request.url.params
                if params.get("project") != str(pid):
                    return httpx.Response(200, json={"tasks": [], "total": 0})
                page, size = int(params.get("page", 1)), int(params.get("page_size", 100))
                tasks = self._filter(sorted(self.tasks.values(), key=lambda t: t["id"]), params.get("query"))
                chunk = tasks[(page - 1) * size : page * size]
                if page > 1 and not chunk:
                    return httpx.Response(404, json={"detail": "Invalid page."})
                fields = params.get("fields", "task_only")
                served = [self._serialize_task(t, fields) for t in chunk]
                if params.get("include"):  # like 1.23: only the named fields are serialized
                    keep = params["include"].split(",")
                    served = [{k: v for k, v in t.items() if k in keep} for t in served]
                return httpx.Response(200, json={"tasks": served,
                                                 "total": len(tasks), "total_annotations": 0,
                                                 "total_predictions": 0})
            if (mt := re.fullmatch(r"/api/tasks/(\d+)/", path)) and m == "GET":
                task = self.tasks.get(int(mt.group(1)))
                if task is None:
                    return httpx.Response(404, json={"detail": "Not found."})
                return httpx.Response(200, json=self._serialize_task(task))
            if (ma := re.fullmatch(r"/api/tasks/(\d+)/annotations/?", path)) and m == "POST":
                # what the labeling UI's Submit sends: parent_prediction = the prediction the task opened with
                task = self.tasks.get(int(ma.group(1)))
                if task is None:
                    return httpx.Response(404, json={"detail": "Not found."})
                parent = (body or {}).get("parent_prediction")
                if parent is not None and all(p["id"] != parent for p in self.predictions):
                    return httpx.Response(400, json={"parent_prediction": [
                        f'Invalid pk "{parent}" - object does not exist.']})
                self._next_ids["ann"] += 1
                ann = {"id": self._next_ids["ann"], "result": body.get("result") or [], "was_cancelled": False,
                       "parent_prediction": parent, "updated_at": "2026-01-01T00:00:00Z"}
                task["annotations"].append(ann)
                return httpx.Response(201, json=ann)
            if path == f"/api/projects/{pid}/import/predictions" and m == "POST":
                for p in body:
                    if p["task"] not in self.tasks:
                        return httpx.Response(400, json={"detail": f"task {p['task']} not found"})
                for p in body:
                    self._next_ids["pred"] += 1
                    self.predictions.append({**p, "id": self._next_ids["pred"], "project": pid})
                return httpx.Response(201, json={"created": len(body)})
            if path == f"/api/projects/{pid}/model-versions/" and m == "GET":
                counts: dict[str, int] = {}
                for p in self.predictions:
                    counts[p["model_version"]] = counts.get(p["model_version"], 0) + 1
                return httpx.Response(200, json=counts)
            if path == f"/api/projects/{pid}/model-versions/" and m == "DELETE":
                version = (body or {}).get("model_version")
                before = len(self.predictions)
                self.predictions = [p for p in self.predictions if p["model_version"] != version]
                return httpx.Response(200, json={"deleted": before - len(self.predictions)})
            if path == "/api/dm/views/" and m == "GET":
                return httpx.Response(200, json=[v for v in self.views
                                                 if str(v["project"]) == request.url.params.get("project")])
            if path == "/api/dm/views/" and m == "POST":
                self._next_ids["view"] += 1
                view = {"id": self._next_ids["view"], "project": body["project"], "data": body["data"]}
                self.views.append(view)
                return httpx.Response(201, json=view)
            if path == "/api/ml/" and m == "GET":
                return httpx.Response(200, json=[{"id": 3, "url": BACKEND_URL, "project": pid, "title": "DISAL",
                                                  "state": "CO"}])
            if path == "/api/webhooks/" and m == "GET":
                return httpx.Response(200, json=[h for h in self.webhooks
                                                 if str(h["project"]) == request.url.params.get("project")])
            if (mw := re.fullmatch(r"/api/webhooks/(\d+)/", path)) and m == "PATCH":
                for h in self.webhooks:
                    if h["id"] == int(mw.group(1)):
                        h.update(body or {})
                        return httpx.Response(200, json=h)
                return httpx.Response(404, json={"detail": "Not found."})
        return httpx.Response(404, json={"detail": f"fake has no {m} {path}"})


class HashingAdapter:
    """A stand-in encoder for route tests: hashed bag of words, deterministic, no model files.

    The integration test uses a real (tiny) Hugging Face encoder instead.
    """

    model_id = "hashing-test-encoder"

    def __init__(self, dim: int = 32) -> None:
        self.dim = dim
        self.calls = 0

    def encode(self, texts, progress=None):
        import hashlib

        import numpy as np

        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                h = int(hashlib.md5(word.encode()).hexdigest(), 16)
                out[i, h % self.dim] += 1.0 if (h >> 8) % 2 else -1.0
            out[i] /= max(1.0, float(np.linalg.norm(out[i])))
        if progress:
            progress(len(texts), len(texts))
        return out


TOPICS = {
    "sport": "football match team goal game win",
    "business": "market shares profit bank money trade",
    "tech": "phone software computer internet game",
}


def topic_texts(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(text, topic) pairs built from topic words + shared filler, for a learnable toy task."""
    import random

    rng = random.Random(seed)
    filler = "the a of and to in is it that was for on are with as".split()
    out = []
    topics = sorted(TOPICS)
    for i in range(n):
        topic = topics[i % len(topics)]
        words = rng.sample(TOPICS[topic].split(), 3) + rng.sample(filler, 4)
        rng.shuffle(words)
        out.append((" ".join(words) + f" item{i}", topic))
    return out


class PixelStatsEncoder:
    """A stand-in image model: per-channel mean, spread and max of the (S, S, 3) pixels, no weights."""

    dim = 9

    def __init__(self) -> None:
        self.calls = 0
        self.images = 0

    def encode(self, pixels, progress=None):
        import numpy as np

        self.calls += 1
        x = np.asarray(pixels, dtype=np.float32) / 255.0
        self.images += len(x)
        return np.concatenate([x.mean((1, 2)), x.std((1, 2)), x.max((1, 2))], axis=1).astype(np.float32)


def make_backend(tmp_path, fake: FakeLabelStudio, adapter_factory=None, image_model_factory=None, **settings):
    """(flask test client, DisalModel, app) wired to `fake`, with MODEL_DIR under tmp_path."""
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from disal.config import Settings
    from disal.server import create_app
    from disal.training.head import HeadConfig
    from model import DisalModel

    base = dict(label_studio_url=BASE_URL, label_studio_api_key=TOKEN, model_dir=Path(tmp_path) / "model_dir",
                ls_backoff=0.0, page_size=7, push_chunk_size=5)
    base.update(settings)
    s = Settings(**base)
    model = DisalModel(s, httpx_client=httpx.Client(transport=fake.transport()),
                       adapter_factory=adapter_factory or HashingAdapter, head_config=HeadConfig(steps=60),
                       ls_sleep=lambda _: None, image_model_factory=image_model_factory or PixelStatsEncoder)
    app = create_app(model)
    return app.test_client(), model, app


def setup_payload(fake: FakeLabelStudio, **extra) -> dict:
    return {"project": f"{fake.project_id}.1767225600", "schema": fake.label_config, "hostname": BASE_URL,
            "access_token": TOKEN, "extra_params": None, **extra}


def annotation_event(fake: FakeLabelStudio, task_id: int, action: str = "ANNOTATION_CREATED") -> dict:
    task = fake.tasks[task_id]
    ann = task["annotations"][-1] if task["annotations"] else {"id": 1, "result": []}
    return {"action": action, "annotation": ann, "task": {"id": task_id, "data": task["data"]},
            "project": {"id": fake.project_id, "title": "Fake"}}


def connect(client, model, fake: FakeLabelStudio, **extra):
    """POST /setup as Label Studio does and wait for the first (cold-start) round to finish."""
    r = client.post("/setup", json=setup_payload(fake, **extra))
    assert r.status_code == 200, r.get_json()
    assert model.jobs.wait_idle(fake.project_id, 30)
    return r
