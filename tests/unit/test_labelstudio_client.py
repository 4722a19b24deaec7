"""disal.labelstudio against an httpx.MockTransport Label Studio: pagination, retries, pushes, views, webhooks."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_labelstudio import BACKEND_URL, BASE_URL, TOKEN, FakeLabelStudio, choices_config  # noqa: E402

from disal.labelstudio import (QUEUE_VIEW_TITLE, UNCERTAINTY_SAMPLING, LabelStudioClient,  # noqa: E402
                               LabelStudioError, basic_auth_header)


@pytest.fixture
def fake() -> FakeLabelStudio:
    ls = FakeLabelStudio(choices_config(["A", "B"]))
    ls.add_tasks([f"text {i}" for i in range(1, 13)])
    return ls


def client(fake: FakeLabelStudio, **kw) -> tuple[LabelStudioClient, list[float]]:
    sleeps: list[float] = []
    kw.setdefault("page_size", 5)
    c = LabelStudioClient(BASE_URL, TOKEN, httpx_client=httpx.Client(transport=fake.transport()),
                          retries=kw.pop("retries", 3), backoff=0.5, sleep=sleeps.append, **kw)
    return c, sleeps


def test_sends_token_to_the_explicit_base_url(fake):
    c, _ = client(fake)
    assert c.get_project(1)["label_config"] == fake.label_config
    assert fake.requests[0][1] == "/api/projects/1/"
    assert "abcdef" not in repr(c)


def test_paginates_labeled_and_unlabeled_tasks_by_filter(fake):
    fake.annotate(2, ["A"])
    fake.annotate(9, ["B"])
    fake.annotate(11, [], cancelled=True)  # skipped: not a label, task stays in the pool
    c, _ = client(fake)
    labeled = c.fetch_labeled_tasks(1)
    assert [t["id"] for t in labeled] == [2, 9]
    unlabeled = c.fetch_unlabeled_tasks(1)
    assert [t["id"] for t in unlabeled] == [1, 3, 4, 5, 6, 7, 8, 10, 11, 12]
    assert labeled[0]["annotations"] and unlabeled[0]["annotations"] is None  # the pool is read as task_only
    pages = [r for r in fake.requests if r[1] == "/api/tasks/"]
    assert len(pages) == 1 + 2  # labeled: one short page; unlabeled: 10 tasks = 2 full pages (stops at total)


def test_unlabeled_fetch_does_not_trust_a_server_that_ignores_filters(fake):
    fake.annotate(3, ["A"])
    fake.ignore_filters = True
    c, _ = client(fake)
    assert 3 not in [t["id"] for t in c.fetch_unlabeled_tasks(1)]


def test_pagination_stops_at_404_past_the_last_page(fake):
    fake.tasks = {i: t for i, t in fake.tasks.items() if i <= 10}  # exactly 2 pages of 5
    c, _ = client(fake)
    got = [t["id"] for t in c.iter_tasks(1, None)]
    assert got == list(range(1, 11))


def test_retries_5xx_and_connection_errors_with_exponential_backoff(fake):
    fake.fail_next = [503, httpx.ConnectError("refused"), 502]
    c, sleeps = client(fake)
    assert c.get_project(1)["id"] == 1
    assert sleeps == [0.5, 1.0, 2.0]


def test_gives_up_after_retries_with_a_clear_error(fake):
    fake.fail_next = [503] * 10
    c, sleeps = client(fake, retries=2)
    with pytest.raises(LabelStudioError) as err:
        c.get_project(1)
    assert "get project 1" in str(err.value) and "503" in str(err.value) and "after 3 attempts" in str(err.value)
    assert len(sleeps) == 2
    assert TOKEN not in str(err.value)


def test_timeouts_are_retried(fake):
    fake.fail_next = [httpx.ReadTimeout("slow")]
    c, sleeps = client(fake)
    assert c.get_project(1)["id"] == 1 and sleeps == [0.5]


def test_4xx_is_not_retried(fake):
    c, sleeps = client(fake)
    with pytest.raises(LabelStudioError) as err:
        c.get_project(99)
    assert err.value.status == 404 and sleeps == []


def test_wrong_token_is_a_clear_401(fake):
    c = LabelStudioClient(BASE_URL, "wrong-token", httpx_client=httpx.Client(transport=fake.transport()),
                          sleep=lambda s: None)
    with pytest.raises(LabelStudioError) as err:
        c.get_project(1)
    assert err.value.status == 401


def test_missing_url_or_key_fails_at_construction():
    with pytest.raises(LabelStudioError, match="LABEL_STUDIO_URL"):
        LabelStudioClient("", TOKEN)
    with pytest.raises(LabelStudioError, match="LABEL_STUDIO_API_KEY"):
        LabelStudioClient(BASE_URL, "")


def test_import_predictions_in_chunks_and_retry_one_chunk(fake):
    preds = [{"task": t, "result": [], "score": i / 11, "model_version": "disal-0001-x"}
             for i, t in enumerate(range(1, 13))]
    fake.fail_paths[r"/api/projects/1/import/predictions"] = [None, 500]  # second chunk fails once
    c, sleeps = client(fake)
    progress = []
    assert c.import_predictions(1, preds, chunk_size=5, progress=lambda d, t: progress.append((d, t))) == 12
    assert progress == [(5, 12), (10, 12), (12, 12)]
    assert len(fake.predictions_of("disal-0001-x")) == 12  # the retried chunk is not duplicated
    assert len(fake.calls("POST", r"/api/projects/1/import/predictions")) == 4


def test_model_version_patch_and_old_version_cleanup(fake):
    c, _ = client(fake)
    for v in ("disal-0001-a", "disal-0002-b", "other-backend-v1"):
        c.import_predictions(1, [{"task": 1, "result": [], "score": 0.0, "model_version": v}])
    c.set_model_version(1, "disal-0002-b")
    assert fake.project["model_version"] == "disal-0002-b"
    plan = c.delete_old_versions(1, keep="disal-0002-b", grace_s=0.0)  # no grace: every older version goes
    assert plan.delete == ["disal-0001-a"]
    assert sorted(c.list_model_versions(1)) == ["disal-0002-b", "other-backend-v1"]  # others' versions stay
    deletes = fake.calls("DELETE", r"/api/projects/1/model-versions/")
    assert deletes[0][2] == {"model_version": "disal-0001-a"}


def test_old_versions_are_deleted_only_after_their_grace(fake):
    """Lagged deletion: a version superseded less than grace_s ago keeps its predictions (an open task's
    Submit refers to one of them); a version the ledger does not know counts as superseded when first seen."""
    c, _ = client(fake)
    for v in ("disal-0001-a", "disal-0002-b", "disal-0003-c", "other-backend-v1"):
        c.import_predictions(1, [{"task": 1, "result": [], "score": 0.0, "model_version": v}])
    ledger = {"disal-0001-a": 1000.0, "disal-0002-b": 1500.0, "disal-0009-gone": 10.0}
    saved = []
    plan = c.delete_old_versions(1, keep="disal-0003-c", superseded=ledger, now=1700.0, grace_s=600.0,
                                 on_plan=saved.append)
    assert plan.delete == ["disal-0001-a"]  # superseded 700 s ago > 600 s
    assert plan.waiting == {"disal-0002-b": pytest.approx(400.0)}  # 200 s ago: 400 s of grace left
    assert saved == [plan]  # handed over before any deletion
    assert plan.superseded == {"disal-0001-a": 1000.0, "disal-0002-b": 1500.0}  # unlisted versions leave the ledger
    assert sorted(c.list_model_versions(1)) == ["disal-0002-b", "disal-0003-c", "other-backend-v1"]

    # disal-0002-b's grace ends at 2100: not at 2100 itself (superseded MORE than grace ago), just after
    assert c.delete_old_versions(1, keep="disal-0003-c", superseded=plan.superseded, now=2100.0,
                                 grace_s=600.0).delete == []
    assert c.delete_old_versions(1, keep="disal-0003-c", superseded=plan.superseded, now=2100.5,
                                 grace_s=600.0).delete == ["disal-0002-b"]
    assert sorted(c.list_model_versions(1)) == ["disal-0003-c", "other-backend-v1"]  # the current one never goes


def test_a_version_the_ledger_does_not_know_waits_a_whole_grace_from_first_sight(fake):
    c, _ = client(fake)
    for v in ("disal-0001-a", "disal-0002-b"):
        c.import_predictions(1, [{"task": 1, "result": [], "score": 0.0, "model_version": v}])
    first = c.delete_old_versions(1, keep="disal-0002-b", superseded={}, now=5000.0, grace_s=60.0)
    assert first.delete == [] and first.superseded == {"disal-0001-a": 5000.0}
    assert c.delete_old_versions(1, keep="disal-0002-b", superseded=first.superseded, now=5059.0,
                                 grace_s=60.0).delete == []
    assert c.delete_old_versions(1, keep="disal-0002-b", superseded=first.superseded, now=5061.0,
                                 grace_s=60.0).delete == ["disal-0001-a"]


def test_queue_view_is_created_once(fake):
    c, _ = client(fake)
    vid = c.ensure_queue_view(1)
    assert c.ensure_queue_view(1) == vid
    assert len(fake.views) == 1
    data = fake.views[0]["data"]
    assert data["title"] == QUEUE_VIEW_TITLE and data["ordering"] == ["tasks:predictions_score"]
    assert data["filters"]["items"][0]["filter"] == "filter:tasks:total_annotations"


def test_uncertainty_sampling(fake):
    c, _ = client(fake)
    c.set_uncertainty_sampling(1)
    assert fake.project["sampling"] == UNCERTAINTY_SAMPLING


def test_webhook_gets_basic_auth_header_once(fake):
    fake.webhooks.append({"id": 8, "project": 1, "url": "http://someone-else:9090/webhook", "headers": {}})
    c, _ = client(fake)
    assert c.ensure_webhook_auth(1, "user", "pa:ss", ["backend.test:9090"]) == (1, 1)
    assert fake.webhooks[0]["headers"] == {"Authorization": basic_auth_header("user", "pa:ss")}
    assert fake.webhooks[0]["url"] == f"{BACKEND_URL}/webhook"
    assert fake.webhooks[1]["headers"] == {}  # another service's webhook never gets our credentials
    assert c.ensure_webhook_auth(1, "user", "pa:ss", ["backend.test:9090"]) == (0, 1)  # idempotent
    assert not fake.calls("GET", r"/api/ml/")  # listing ML backends makes Label Studio call /setup again


def test_webhook_of_an_unknown_host_is_left_alone(fake):
    c, _ = client(fake)
    assert c.ensure_webhook_auth(1, "user", "pw", ["elsewhere:1"]) == (0, 0)
    assert fake.webhooks[0]["headers"] == {}


def test_basic_auth_header_format():
    assert basic_auth_header("u", "p") == "Basic dTpw"
