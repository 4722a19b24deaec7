"""The progressive first round: a queue over the tasks encoded so far, refined until the pool is encoded.

Against the MockTransport Label Studio with the hashing encoder. FIRST_QUEUE_SECONDS=0 makes the
first push come after the first encoding chunk (4 batches), so the stages are deterministic:
ENCODE_BATCH_SIZE=1 -> chunks of 4 texts; REFINE_GROWTH=4 -> pushes at 4 and 16 encoded pool
tasks, then the whole pool of 40.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_labelstudio import HashingAdapter, annotation_event, connect, setup_payload, topic_texts  # noqa: E402

N_TASKS = 40
PROGRESSIVE = dict(first_queue_seconds=0, encode_batch_size=1, refine_growth=4)


class CountingAdapter(HashingAdapter):
    """Counts every text it encodes; `hold_after` texts, the next encode call waits for `release`."""

    def __init__(self, hold_after: int | None = None) -> None:
        super().__init__()
        self.texts = 0
        self.hold_after = hold_after
        self.holding = threading.Event()
        self.release = threading.Event()

    def encode(self, texts, progress=None):
        if self.hold_after is not None and self.texts >= self.hold_after and not self.release.is_set():
            self.holding.set()
            assert self.release.wait(30), "the test never released the encoder"
        self.texts += len(texts)
        return super().encode(texts, progress)


def pushed_versions(fake) -> list[str]:
    """The model versions the backend pointed the project at, in order."""
    return [body["model_version"] for _, _, body in fake.calls("PATCH", r"/api/projects/1/")
            if isinstance(body, dict) and "model_version" in body]


def imported_tasks(fake) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for _, _, body in fake.calls("POST", r"/api/projects/1/import/predictions"):
        for p in body:
            out.setdefault(p["model_version"], set()).add(p["task"])
    return out


def partial_first_queue(backend_with, fake, adapter):
    """A backend whose first round pushed one partial queue (4/40), then failed: Label Studio went down."""
    client, model = backend_with(adapter_factory=lambda: adapter, **PROGRESSIVE)
    imports = []

    def arm_failure(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path.endswith("/import/predictions"):
            imports.append(1)
            if len(imports) == 1:  # the first push goes through; Label Studio is down for the next ones
                fake.fail_paths[r"/api/projects/1/import/predictions"] = [httpx.ConnectError("refused")] * 20

    fake.on_request = arm_failure
    connect(client, model, fake)
    assert model.store(1).current().meta["partial"] == {"encoded": 4, "total": 40}
    fake.on_request = None
    fake.fail_paths.clear()
    return client, model


def test_first_round_pushes_partial_queues_at_growing_sizes_then_the_whole_pool(backend_with, fake):
    adapter = CountingAdapter()
    client, model = backend_with(adapter_factory=lambda: adapter, **PROGRESSIVE)
    connect(client, model, fake)
    versions = pushed_versions(fake)
    assert len(versions) == 3, versions
    store = model.store(1)
    metas = [store.load_version(v).meta for v in versions]
    assert [m.get("partial") for m in metas] == [{"encoded": 4, "total": 40}, {"encoded": 16, "total": 40}, None]
    assert [m["pool"] for m in metas] == [4, 16, 40]
    imported = imported_tasks(fake)
    # each queue holds exactly the tasks encoded when it was pushed, and each refines the one before
    for v, m in zip(versions, metas):
        assert imported[v] == set(store.load_version(v).priority) and len(imported[v]) == m["pool"]
    assert imported[versions[0]] < imported[versions[1]] < imported[versions[2]] == set(fake.tasks)
    assert adapter.texts == N_TASKS, "every text encoded once across the three pushes"
    # a version became current only once pushed, and Label Studio ends on the complete queue
    assert fake.project["model_version"] == versions[-1] == store.current().name
    assert set(fake.predictions_of(versions[-1])) == set(fake.tasks)
    health = client.get("/health").get_json()["projects"]["1"]
    assert "partial" not in health and health["queue_length"] == 40 and "refines" not in health["note"]
    assert health["job"]["last_job"]["pushes"] == versions

    # the next round has the whole pool cached: it encodes only the labels' texts (none: cached) and pushes once
    topics = dict(zip(range(1, 41), (t for _, t in topic_texts(40))))
    for tid in (1, 2, 3):
        fake.annotate(tid, [topics[tid]])
    client.post("/webhook", json=annotation_event(fake, 3))
    assert model.jobs.wait_idle(1, 30)
    assert len(pushed_versions(fake)) == 4 and adapter.texts == N_TASKS
    v = store.current()
    assert v.kind == "head" and "partial" not in v.meta and len(v.priority) == 37


def test_a_fast_encode_within_the_budget_pushes_once(backend_with, fake):
    """With the default FIRST_QUEUE_SECONDS the 40 texts encode long before it: one push, as before."""
    client, model = backend_with()
    connect(client, model, fake)
    assert len(pushed_versions(fake)) == 1
    assert "partial" not in model.store(1).current().meta


def test_tasks_not_encoded_yet_have_no_prediction_and_health_says_the_queue_is_partial(backend_with, fake):
    """The second push fails: the first partial queue keeps serving, /health says it is partial, and the
    next /setup finishes the pool from the cached features (nothing encoded twice)."""
    adapter = CountingAdapter()
    client, model = partial_first_queue(backend_with, fake, adapter)
    first = fake.project["model_version"]
    v = model.store(1).current()
    assert v.name == first and v.meta["partial"] == {"encoded": 4, "total": 40}
    assert set(fake.predictions_of(first)) == set(v.priority) and len(v.priority) == 4
    health = client.get("/health").get_json()["projects"]["1"]
    assert health["model_version"] == first and "unreachable" in health["error"]
    assert health["partial"]["queue_over"] == 4 and health["partial"]["total"] == 40
    assert "queue refines as encoding proceeds" in health["note"] and "cold start" in health["note"]
    # /predict answers for a task not encoded yet (encoded on the fly) from the served version
    outside = next(t for t in fake.tasks if model.encoder.cache.get(t) is None)
    r = client.post("/predict", json={"tasks": [fake.tasks[outside]], "project": "1.1"})
    assert r.status_code == 200 and r.get_json()["model_version"] == first

    cached = len(model.encoder.cache)
    assert 4 < cached < 40
    client.post("/setup", json=setup_payload(fake))  # Label Studio repeats /setup: the partial queue resumes
    assert model.jobs.wait_idle(1, 30)
    done = model.store(1).current()
    assert "partial" not in done.meta and set(done.priority) == set(fake.tasks)
    assert fake.project["model_version"] == done.name
    # the resumed round pushed at once over the cached tasks, then the whole pool
    resumed = pushed_versions(fake)[pushed_versions(fake).index(first) + 1:]
    assert model.store(1).load_version(resumed[0]).meta["partial"] == {"encoded": cached, "total": 40}
    assert adapter.texts == N_TASKS, "each text encoded once, the failed round's and /predict's features reused"
    assert "partial" not in client.get("/health").get_json()["projects"]["1"]


def test_an_annotation_during_the_first_round_gets_a_trained_queue_before_the_pool_is_encoded(backend_with, fake):
    """The first round hands over to the waiting retrain after its first push: the retrain trains on the
    new labels, pushes over the cached features at once, and finishes encoding the pool itself."""
    adapter = CountingAdapter(hold_after=8)  # the first push (4 tasks) went out, 4 more encoded; the next chunk holds
    client, model = backend_with(adapter_factory=lambda: adapter, **PROGRESSIVE)
    assert client.post("/setup", json=setup_payload(fake)).status_code == 200
    assert adapter.holding.wait(30)
    first = fake.project["model_version"]
    assert "coldstart" in first and model.store(1).current().meta["partial"]["encoded"] == 4
    health = client.get("/health").get_json()["projects"]["1"]
    assert health["state"] == "encoding" and health["progress"]["total"] == 40
    assert health["partial"] == {"encoded": 8, "total": 40, "queue_over": 4}
    assert health["note"].startswith("encoded 8/40; queue refines as encoding proceeds")

    topics = dict(zip(range(1, 41), (t for _, t in topic_texts(40))))
    for tid in (1, 2):  # two classes: the retrain has a classifier
        fake.annotate(tid, [topics[tid]])
    assert topics[1] != topics[2]
    assert client.post("/webhook", json=annotation_event(fake, 2)).status_code == 201
    adapter.release.set()
    assert model.jobs.wait_idle(1, 30)

    versions = pushed_versions(fake)
    store = model.store(1)
    kinds = [(store.load_version(v).kind, store.load_version(v).meta.get("partial")) for v in versions]
    head_at = next(i for i, (k, _) in enumerate(kinds) if k == "head")
    assert all(k == "coldstart" and p for k, p in kinds[:head_at]), "the first round stopped before the whole pool"
    assert head_at == 1, "the first round handed over after its first push, without a push of its own"
    # the retrain pushed at once over the 12 cached texts (plus the labeled tasks' if they were not among them)
    assert 12 <= kinds[head_at][1]["encoded"] <= 14 and kinds[head_at][1]["total"] == 40
    assert kinds[-1] == ("head", None)
    final = store.current()
    assert final.name == versions[-1] == fake.project["model_version"] and set(final.labels) == {1, 2}
    assert set(final.priority) == set(fake.tasks) - {1, 2}
    assert adapter.texts == N_TASKS, "the retrain went on from the cached features: each text encoded once"


def test_encoding_is_a_job_state_with_progress_counts(backend_with, fake):
    adapter = CountingAdapter(hold_after=0)
    client, model = backend_with(adapter_factory=lambda: adapter)
    assert client.post("/setup", json=setup_payload(fake)).status_code == 200
    assert adapter.holding.wait(30)
    health = client.get("/health").get_json()["projects"]["1"]
    assert health["state"] == "encoding" and health["progress"] == {"done": 0, "total": 40}
    assert health["model_version"] is None and "first queue after 20s of encoding" in health["job"]["note"]
    adapter.release.set()
    assert model.jobs.wait_idle(1, 30)


@pytest.mark.parametrize("growth", [1.0, 0.5])
def test_refine_growth_below_one_and_a_half_is_refused(growth):
    from disal.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="REFINE_GROWTH"):
        Settings.from_env({"REFINE_GROWTH": str(growth)})


def test_a_restarted_backend_resumes_a_partial_first_queue_by_itself(backend_with, fake):
    adapter = CountingAdapter()
    _, model = partial_first_queue(backend_with, fake, adapter)
    model.close()
    _, model2 = backend_with(adapter_factory=lambda: adapter, **PROGRESSIVE)  # same MODEL_DIR, LABEL_STUDIO_API_KEY set
    assert model2.jobs.wait_idle(1, 30)
    v = model2.store(1).current()
    assert "partial" not in v.meta and set(v.priority) == set(fake.tasks) == set(fake.predictions_of(v.name))
    assert model2.jobs.status(1)["last_job"]["job"].endswith("(resume partial queue x1)")
    assert adapter.texts == N_TASKS, "the restart went on from the saved feature cache"


def test_any_event_finishes_a_partial_first_queue(backend_with, fake):
    """TASKS_CREATED does not retrain, but while the queue is partial the job goes on encoding the pool."""
    adapter = CountingAdapter()
    client, model = partial_first_queue(backend_with, fake, adapter)
    new = fake.add_tasks(["a brand new football match report"], start_id=41)
    r = client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 1},
                                      "tasks": [fake.tasks[t] for t in new]})
    assert r.status_code == 201
    assert model.jobs.wait_idle(1, 30)
    v = model.store(1).current()
    assert "partial" not in v.meta and set(v.priority) == set(fake.tasks) and 41 in v.priority
    assert v.kind == "coldstart" and fake.project["model_version"] == v.name
