"""The task-module interface (disal.tasks): one contract run against every project type, then what
only images do (bad files cost one task, the cache by reference and content), then an image
project through the whole backend on the MockTransport Label Studio."""

from __future__ import annotations

import io
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_labelstudio import (BASE_URL, LABELS, TOKEN, FakeLabelStudio, HashingAdapter,  # noqa: E402
                              PixelStatsEncoder, choices_config, color_png, image_config, make_backend,
                              setup_payload, topic_texts)

from disal.config import Settings  # noqa: E402
from disal.labelconfig import TaskInputError, UnsupportedConfigError, parse_label_config  # noqa: E402
from disal.labelstudio import LabelStudioClient  # noqa: E402
from disal.queue import predictions_for  # noqa: E402
from disal.tasks import TASK_MODULES, module_for, module_for_object, supported_shapes  # noqa: E402
from disal.tasks.image_classification import ImageEncoder  # noqa: E402
from disal.tasks.text_classification import TextEncoder  # noqa: E402


@dataclass
class Case:
    module: object
    config: str
    fake: FakeLabelStudio
    tasks: list[dict]
    make_encoder: object  # () -> a fresh encoder over the same MODEL_DIR
    model_calls: object  # () -> how many batches the model encoded so far
    media: object


@pytest.fixture(params=[m.name for m in TASK_MODULES])
def case(request, tmp_path) -> Case:
    settings = Settings(model_dir=tmp_path / "m", image_size=16, encode_batch_size=4, image_batch_size=4)
    module = module_for(request.param)
    if module.name == "text_classification":
        fake = FakeLabelStudio(choices_config(LABELS))
        fake.add_tasks([t for t, _ in topic_texts(9)])
        adapters = []

        def make():
            return TextEncoder(settings, lambda: adapters.append(HashingAdapter()) or adapters[-1])

        calls = lambda: sum(a.calls for a in adapters)  # noqa: E731
        media = None
    else:
        fake = FakeLabelStudio(image_config(LABELS))
        refs = []
        for i in range(9):
            ref = f"/data/upload/1/img-{i}.png"
            fake.files[ref] = color_png(LABELS[i % 3], i)
            refs.append(ref)
        fake.add_tasks(refs, field_name="image")
        models = []

        def make():
            return ImageEncoder(settings, lambda: models.append(PixelStatsEncoder()) or models[-1])

        calls = lambda: sum(m.calls for m in models)  # noqa: E731
        media = LabelStudioClient(BASE_URL, TOKEN, httpx_client=httpx.Client(transport=fake.transport())
                                  ).media_fetcher()
    return Case(module, fake.label_config, fake, [fake.tasks[i] for i in sorted(fake.tasks)], make, calls, media)


# -- the contract ----------------------------------------------------------------------------------
def test_the_module_owns_its_configs(case):
    spec = parse_label_config(case.config)
    assert spec.task_type == case.module.name and spec.labels == tuple(LABELS)
    assert module_for(spec.task_type) is case.module
    assert module_for_object(case.module.object_tag) is case.module
    assert case.module.shape in supported_shapes()
    multi = parse_label_config(case.config.replace('choice="single"', 'choice="multiple"'))
    assert multi.multi_label and multi.task_type == case.module.name


def test_read_input_takes_the_configured_field_and_names_a_task_without_it(case):
    spec = parse_label_config(case.config)
    s = Settings()
    value = case.module.read_input(case.tasks[0], spec, s)
    assert isinstance(value, str) and value == case.tasks[0]["data"][spec.value_field][: s.max_text_chars]
    word = case.module.input_word
    with pytest.raises(TaskInputError, match=f"task 5: has no {word} field '{spec.value_field}' in its data "
                                             r"\(fields: other\)"):
        case.module.read_input({"id": 5, "data": {"other": "x"}}, spec, s)
    with pytest.raises(TaskInputError, match="task 6: field .* is int"):
        case.module.read_input({"id": 6, "data": {spec.value_field: 3}}, spec, s)
    with pytest.raises(TaskInputError, match="task 7: field .* is empty"):
        case.module.read_input({"id": 7, "data": {spec.value_field: "  "}}, spec, s)
    with pytest.raises(TaskInputError, match="task 8: has no 'data' object"):
        case.module.read_input({"id": 8}, spec, s)
    # an uploaded file as a webhook carries it: Label Studio's "$undefined$" key stands for the config's field
    raw = {"id": 9, "data": {"$undefined$": case.tasks[0]["data"][spec.value_field]}}
    assert case.module.read_input(raw, spec, s) == value


def test_encode_is_aligned_keyed_by_task_id_and_cached(case):
    spec = parse_label_config(case.config)
    ids = [t["id"] for t in case.tasks]
    inputs = [case.module.read_input(t, spec, Settings()) for t in case.tasks]
    enc = case.make_encoder()
    first = enc.encode(ids, inputs, media=case.media)
    assert first.failed == {} and first.ok().all()
    assert first.features.shape == (len(ids), enc.dim) and first.features.dtype == np.float32
    assert len({r.tobytes() for r in first.features}) == len(ids), "distinct inputs, distinct features"
    calls = case.model_calls()
    again = enc.encode(ids[::-1], inputs[::-1], media=case.media)  # another order: rows follow the ids
    np.testing.assert_allclose(again.features, first.features[::-1])
    assert case.model_calls() == calls, "cached inputs are not encoded again"
    found, missing = enc.lookup(ids, inputs)
    assert missing == [] and sorted(found) == sorted(ids)
    fresh = case.make_encoder()  # a restart: the cache was saved under MODEL_DIR
    found, missing = fresh.lookup(ids, inputs)
    assert missing == [] and len(found) == len(ids)
    np.testing.assert_allclose(fresh.encode(ids, inputs, media=case.media).features, first.features)
    assert case.model_calls() == calls


def test_a_changed_input_is_encoded_again(case):
    spec = parse_label_config(case.config)
    ids = [t["id"] for t in case.tasks[:3]]
    inputs = [case.module.read_input(t, spec, Settings()) for t in case.tasks[:3]]
    enc = case.make_encoder()
    before = enc.encode(ids, inputs, media=case.media).features
    if case.module.name == "text_classification":
        inputs[1] = "a different text about markets and banks"
    else:
        case.fake.files["/data/upload/1/new.png"] = color_png("tech", 99)
        inputs[1] = "/data/upload/1/new.png"
    after = enc.encode(ids, inputs, media=case.media).features
    np.testing.assert_allclose(after[[0, 2]], before[[0, 2]])
    assert not np.allclose(after[1], before[1])


def test_predictions_write_the_configured_choices(case):
    spec = parse_label_config(case.config)
    ids = [t["id"] for t in case.tasks[:2]]
    probs = {ids[0]: np.array([0.7, 0.2, 0.1]), ids[1]: np.array([0.1, 0.1, 0.8])}
    preds = predictions_for(ids, spec, {ids[0]: 0.0, ids[1]: 1.0}, "v1", probs)
    for p, want in zip(preds, ("business", "tech")):
        (item,) = p["result"]
        assert (item["from_name"], item["to_name"], item["type"]) == ("label", spec.to_name, "choices")
        assert item["value"]["choices"] == [want] and p["model_version"] == "v1"


def test_an_unsupported_object_lists_every_supported_shape():
    with pytest.raises(UnsupportedConfigError) as err:
        parse_label_config('<View><Video name="v" value="$video"/><Choices name="c" toName="v">'
                           '<Choice value="a"/><Choice value="b"/></Choices></View>')
    msg = str(err.value)
    assert "Video named 'v', which no project type reads" in msg
    assert all(m.shape in msg for m in TASK_MODULES) and "<Text" in msg and "<Image" in msg


# -- images only -------------------------------------------------------------------------------------
def _truncated_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()[:300]


BAD_FILES = {
    "/data/upload/1/truncated.png": _truncated_png(),
    "/data/upload/1/notes.txt": b"these are not pixels",
    "/data/upload/1/empty.png": b"",
}


def image_fake(n_good: int = 9) -> FakeLabelStudio:
    fake = FakeLabelStudio(image_config(LABELS))
    refs = []
    for i in range(n_good):
        ref = f"/data/upload/1/img-{i}.png"
        fake.files[ref] = color_png(LABELS[i % 3], i)
        refs.append(ref)
    fake.files.update(BAD_FILES)
    refs += list(BAD_FILES) + ["/data/upload/1/missing.png", "ftp://elsewhere/a.png"]
    fake.add_tasks(refs, field_name="image")
    return fake


def test_bad_images_cost_their_task_only_and_are_tried_again_next_time(tmp_path):
    fake = image_fake()
    media = LabelStudioClient(BASE_URL, TOKEN, httpx_client=httpx.Client(transport=fake.transport())).media_fetcher()
    enc = ImageEncoder(Settings(model_dir=tmp_path, image_size=16, image_batch_size=4), PixelStatsEncoder)
    ids = sorted(fake.tasks)
    refs = [fake.tasks[i]["data"]["image"] for i in ids]
    res = enc.encode(ids, refs, media=media)
    reasons = {refs[p]: r for p, r in res.failed.items()}
    assert set(reasons) == set(BAD_FILES) | {"/data/upload/1/missing.png", "ftp://elsewhere/a.png"}
    assert "broken image" in reasons["/data/upload/1/truncated.png"]
    assert "not an image Pillow can read" in reasons["/data/upload/1/notes.txt"]
    assert "empty" in reasons["/data/upload/1/empty.png"]
    assert "HTTP 404" in reasons["/data/upload/1/missing.png"]
    assert "ftp:// is not supported" in reasons["ftp://elsewhere/a.png"]
    assert res.ok().sum() == 9 and np.abs(res.features[res.ok()]).sum(1).min() > 0
    assert not np.any(res.features[~res.ok()]), "failed rows are zeros, never another task's features"
    assert len(enc.cache) == 9, "a failure is not cached: the next round tries the file again"
    fake.files["/data/upload/1/missing.png"] = color_png("sport", 77)  # uploaded meanwhile
    again = enc.encode(ids, refs, media=media)
    assert len(again.failed) == len(res.failed) - 1 and len(enc.cache) == 10


def test_same_bytes_under_a_new_reference_are_not_encoded_again(tmp_path):
    fake = image_fake(3)
    media = LabelStudioClient(BASE_URL, TOKEN, httpx_client=httpx.Client(transport=fake.transport())).media_fetcher()
    models = []
    enc = ImageEncoder(Settings(model_dir=tmp_path, image_size=16),
                       lambda: models.append(PixelStatsEncoder()) or models[-1])
    enc.encode([1], ["/data/upload/1/img-0.png"], media=media)
    fake.files["/data/local-files/?d=moved/img-0.png"] = fake.files["/data/upload/1/img-0.png"]
    n_get = len(fake.requests)
    res = enc.encode([1], ["/data/local-files/?d=moved/img-0.png"], media=media)
    assert res.failed == {} and models[0].images == 1, "fetched (new reference) but not encoded (same bytes)"
    assert len(fake.requests) == n_get + 1
    enc.encode([1], ["/data/local-files/?d=moved/img-0.png"], media=media)
    assert len(fake.requests) == n_get + 1, "a known reference is not fetched again"


def test_fetching_runs_in_a_bounded_pool(tmp_path):
    """IMAGE_FETCH_WORKERS caps the downloads in flight (measured at the fake server)."""
    import threading
    import time

    fake = image_fake(16)
    lock, state = threading.Lock(), {"now": 0, "peak": 0}

    def slow(request):
        if request.url.path.startswith("/data/"):
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            time.sleep(0.05)
            with lock:
                state["now"] -= 1

    fake.on_request = slow
    media = LabelStudioClient(BASE_URL, TOKEN, httpx_client=httpx.Client(transport=fake.transport())).media_fetcher()
    enc = ImageEncoder(Settings(model_dir=tmp_path, image_size=16, image_fetch_workers=3, image_batch_size=8),
                       PixelStatsEncoder)
    ids = list(range(1, 17))
    res = enc.encode(ids, [fake.tasks[i]["data"]["image"] for i in ids], media=media)
    assert res.ok().all() and 2 <= state["peak"] <= 3


# -- an image project through the backend ------------------------------------------------------------
def test_an_image_project_goes_from_connect_to_a_queue_and_names_its_bad_images(tmp_path, caplog):
    fake = image_fake(12)
    client, model, _ = make_backend(tmp_path, fake, image_size=16)
    try:
        caplog.set_level(logging.WARNING, logger="disal.training_job")
        r = client.post("/setup", json=setup_payload(fake))
        assert r.status_code == 200, r.get_json()
        assert model.jobs.wait_idle(1, 30)
        cold = model.store(1).current()
        assert cold.kind == "coldstart" and len(cold.priority) == 12
        bad_ids = sorted(t for t, task in fake.tasks.items() if not task["data"]["image"].startswith("/data/upload/1/img"))
        for tid in bad_ids:
            assert any(f"task {tid} skipped" in rec.getMessage() for rec in caplog.records), tid
        for tid in (1, 2, 3):  # one of each colour
            fake.annotate(tid, [LABELS[(tid - 1) % 3]])
        client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
        assert model.jobs.wait_idle(1, 30)
        v = model.store(1).current()
        assert v.kind == "head" and v.spec.task_type == "image_classification"
        assert sorted(v.priority) == [t for t in range(4, 13)], "every readable unlabeled image is queued"
        pushed = fake.predictions_of(v.name)
        assert sorted(pushed) == list(range(4, 13)) and not set(pushed) & set(bad_ids)
        for tid, p in pushed.items():  # a colour classifier on colour images: the choice is the colour's label
            assert p["result"][0]["value"]["choices"] == [LABELS[(tid - 1) % 3]], (tid, p)
            assert p["result"][0]["to_name"] == "image"
        h = client.get("/health").get_json()
        entry = h["projects"]["1"]
        assert entry["task_type"] == "image_classification" and entry["encoder"] == "efficientnet-lite0-16px"
        assert entry["skipped_tasks"]["count"] == len(bad_ids)
        assert sorted(t["task"] for t in entry["skipped_tasks"]["tasks"]) == bad_ids
        assert h["encoders"]["image_classification"] == "efficientnet-lite0-16px"
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'disal_media_seconds_total{part="fetch"}' in metrics and 'disal_media_seconds_total{part="model"}' in metrics
        skipped_total = float(next(ln.split()[-1] for ln in metrics.splitlines()
                                   if ln.startswith('disal_skipped_inputs_total{project="1"}')))
        assert skipped_total >= len(bad_ids)  # counted each round they are tried

        # /predict: the predicted choice with its probability; a broken image is a 422 naming the task
        task = dict(fake.tasks[5])
        r = client.post("/predict", json={"tasks": [task], "project": "1.1"})
        assert r.status_code == 200, r.get_json()
        (res,) = r.get_json()["results"]
        assert res["result"][0]["value"]["choices"] == [LABELS[4 % 3]] and 0 <= res["score"] <= 1
        # a text config sent with the request while the served version is an image one: no crash, a message
        r = client.post("/predict", json={"tasks": [{"id": 5, "data": {"text": "x"}}], "project": "1.1",
                                          "label_config": choices_config(LABELS)})
        assert r.status_code == 200 and r.get_json()["results"] == [] and "retrains" in r.get_json()["message"]
        broken = {"id": 999, "data": {"image": "/data/upload/1/truncated.png"}}
        r = client.post("/predict", json={"tasks": [broken], "project": "1.1"})
        assert r.status_code == 422 and "task 999: a broken image file" in r.get_json()["message"]

        # new tasks are placed into the queue; a bad one among them costs only itself
        fake.files["/data/upload/1/late.png"] = color_png("tech", 500)
        new = fake.add_tasks(["/data/upload/1/late.png", "/data/upload/1/gone.png"], start_id=100, field_name="image")
        client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 1},
                                      "tasks": [fake.tasks[i] for i in new]})
        assert model.jobs.wait_idle(1, 30)
        assert 100 in fake.predictions_of(v.name) and 101 not in fake.predictions_of(v.name)
        assert any("new task 101 skipped: HTTP 404" in rec.getMessage() for rec in caplog.records)
    finally:
        model.close()


def test_the_status_page_names_the_project_type_and_its_skipped_tasks(tmp_path):
    fake = image_fake(6)
    client, model, _ = make_backend(tmp_path, fake, image_size=16)
    try:
        assert client.post("/setup", json=setup_payload(fake)).status_code == 200
        assert model.jobs.wait_idle(1, 30)
        page = client.get("/").get_data(as_text=True)
        assert "image classification" in page and "efficientnet-lite0-16px" in page
        assert "skipped tasks" in page and "HTTP 404" in page and "task 11:" in page
    finally:
        model.close()


def test_when_no_image_can_be_read_the_job_fails_and_the_queue_keeps_serving(tmp_path):
    """Label Studio's files gone (a storage moved): every fetch is a 404. A queue over nothing must not
    replace the working one; /health names why. (Files deleted behind unchanged references cost nothing:
    their features are cached by reference.)"""
    fake = image_fake(6)
    client, model, _ = make_backend(tmp_path, fake, image_size=16)
    try:
        assert client.post("/setup", json=setup_payload(fake)).status_code == 200
        assert model.jobs.wait_idle(1, 30)
        for tid in (1, 2):
            fake.annotate(tid, [LABELS[(tid - 1) % 3]])
        client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
        assert model.jobs.wait_idle(1, 30)
        served = model.store(1).current()
        assert served.kind == "head"
        # every task now points at a file Label Studio no longer serves (its features are cached by the old
        # reference, so a new reference must be read)
        fake.files.clear()
        for tid, task in fake.tasks.items():
            task["data"]["image"] = f"/data/upload/1/moved-{tid}.png"
        fake.annotate(3, [LABELS[2]])
        client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
        assert model.jobs.wait_idle(1, 30)
        h = client.get("/health").get_json()["projects"]["1"]
        assert "none of the project's" in h["error"] and "images could be read" in h["error"] and "HTTP 404" in h["error"]
        assert model.store(1).current().name == served.name and fake.project["model_version"] == served.name
    finally:
        model.close()


def test_an_image_project_trains_in_the_mlp_regime_too(tmp_path):
    """TRAIN_MODE is type-agnostic: an image project's round trains the MLP on the image features."""
    from disal.training.mlp import MLPHead

    fake = image_fake(9)
    client, model, _ = make_backend(tmp_path, fake, image_size=16, train_mode="mlp", strategy="disal-batch",
                                    coldstart_batch=3)
    try:
        assert client.post("/setup", json=setup_payload(fake)).status_code == 200
        assert model.jobs.wait_idle(1, 30)
        for tid in (1, 2, 3):
            fake.annotate(tid, [LABELS[(tid - 1) % 3]])
        client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
        assert model.jobs.wait_idle(1, 30)
        v = model.store(1).current()
        assert isinstance(v.head, MLPHead) and v.meta["regime"] == "mlp" and v.spec.task_type == "image_classification"
        assert sorted(fake.predictions_of(v.name)) == list(range(4, 10))
    finally:
        model.close()


def test_the_label_a_png_file_name_carries_is_read_from_every_reference_form(tmp_path):
    from disal.data import load_digits
    from disal.data.images import label_from_png_name, write_png_files

    (path, label), = write_png_files(load_digits(), tmp_path, 1, classes=["7"])
    assert label == "7" and label_from_png_name(path.name) == "7"
    for ref in (f"/data/upload/3/ab12-{path.name}", f"/data/local-files/?d=x/{path.name}"):
        assert label_from_png_name(ref) == "7"
    with pytest.raises(ValueError, match="does not end in"):
        label_from_png_name("/data/upload/3/cat.jpg")
