"""The job store's contract (disal.job_store), run against both stores: SQLite and a real redis-server."""

from __future__ import annotations

import threading
import time

import pytest

from disal.job_store import RedisJobStore, SqliteJobStore


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SqliteJobStore(tmp_path / "store.sqlite3")
    else:
        server = request.getfixturevalue("redis_server")
        s = RedisJobStore(server.url, prefix=f"t{time.time_ns()}")
    yield s
    s.close()


def req(n: int, train: bool = True) -> dict:
    return {"train": train, "reasons": {f"event-{n}": 1}}


def test_first_request_is_queued_later_ones_coalesce(store):
    assert store.add(7, req(1)) == "queued"
    assert store.add(7, req(2)) == "coalesced"
    assert store.add(8, req(3)) == "queued"  # per project
    assert store.pending_count(7) == 2 and store.pending_count(8) == 1


def test_claim_takes_every_request_in_order_and_holds_the_lease(store):
    for i in range(3):
        store.add(7, req(i))
    got = store.claim(7, "w1", lease_s=30)
    assert [r["reasons"] for r in got] == [{"event-0": 1}, {"event-1": 1}, {"event-2": 1}]
    assert store.pending_count(7) == 0
    assert store.lease_owner(7) == "w1"
    assert store.claim(7, "w2", lease_s=30) is None  # one job per project at a time
    # an event during the job waits, counted as coalesced, and finish reports it
    assert store.add(7, req(9)) == "coalesced"
    assert store.finish(7, "w1") == 1
    assert store.lease_owner(7) is None
    assert [r["reasons"] for r in store.claim(7, "w2", lease_s=30)] == [{"event-9": 1}]


def test_a_dead_owners_requests_pass_to_the_next_claimer_after_its_lease(store):
    store.add(7, req(1))
    assert store.claim(7, "dead", lease_s=0.4) is not None  # ... and the worker is killed: no renew, no finish
    assert store.needs_work() == []  # its lease still runs
    store.add(7, req(2))
    time.sleep(0.6)
    assert store.needs_work() == [7]
    got = store.claim(7, "w2", lease_s=30)
    assert [r["reasons"] for r in got] == [{"event-1": 1}, {"event-2": 1}]  # the killed job runs again
    assert store.finish(7, "dead") == -1  # the dead owner, if it wakes, changes nothing
    assert store.lease_owner(7) == "w2"


def test_renew_keeps_the_lease_only_for_its_owner(store):
    store.add(7, req(1))
    store.claim(7, "w1", lease_s=0.5)
    assert not store.renew(7, "w2", lease_s=30)
    for _ in range(4):
        time.sleep(0.25)
        assert store.renew(7, "w1", lease_s=0.5)
    assert store.claim(7, "w2") is None


def test_requeue_puts_the_failed_requests_back_in_front(store):
    store.add(7, req(1))
    got = store.claim(7, "w1")
    store.add(7, req(2))
    assert store.finish(7, "w1", requeue=got) == 2
    assert [r["reasons"] for r in store.claim(7, "w2")] == [{"event-1": 1}, {"event-2": 1}]


def test_has_pending_train_sees_only_waiting_retrains(store):
    store.add(7, req(1, train=False))
    store.claim(7, "w1")
    assert not store.has_pending_train(7)
    store.add(7, req(2, train=True))
    assert store.has_pending_train(7)


def test_status_counters_and_workers(store):
    store.update_status(7, {"state": "training", "progress": {"done": 1, "total": 5}, "warnings": []})
    store.update_status(7, {"progress": {"done": 3, "total": 5}})
    assert store.status(7) == {"state": "training", "progress": {"done": 3, "total": 5}, "warnings": []}
    store.incr(7, "jobs_run")
    store.incr(7, "jobs_run")
    store.incr(7, "coalesced_events", 5)
    assert store.counters(7) == {"jobs_run": 2, "coalesced_events": 5}
    assert 7 in store.projects()
    store.heartbeat("host:1", {"jobs_run": 3})
    workers = store.workers()
    assert workers["host:1"]["jobs_run"] == 3 and workers["host:1"]["seen"] > time.time() - 5


def test_concurrent_adds_and_claims_lose_and_duplicate_nothing(store):
    """8 threads add 40 requests each while 2 claimers run jobs: every request is claimed exactly once."""
    claimed: list[str] = []
    done = threading.Event()

    def producer(t: int) -> None:
        for i in range(40):
            store.add(3, {"reasons": {f"{t}-{i}": 1}})

    def claimer(name: str) -> None:
        while True:
            finished = done.is_set()
            got = store.claim(3, name, lease_s=30)
            if got is not None:
                claimed.extend(next(iter(r["reasons"])) for r in got)
                store.finish(3, name)
            if finished and store.pending_count(3) == 0 and store.lease_owner(3) is None:
                return

    claimers = [threading.Thread(target=claimer, args=(f"c{i}",)) for i in range(2)]
    producers = [threading.Thread(target=producer, args=(t,)) for t in range(8)]
    for th in claimers + producers:
        th.start()
    for th in producers:
        th.join(60)
    done.set()
    for th in claimers:
        th.join(60)
    assert sorted(claimed) == sorted(f"{t}-{i}" for t in range(8) for i in range(40))


# -- shard boards (disal.pool_shards) -----------------------------------------------------------
def test_a_board_hands_each_shard_to_exactly_one_claimer(store):
    store.post_board("b1", {"project": 7, "worker": "w1", "owner": "w1:t"}, 40)
    assert store.boards()["b1"]["project"] == 7
    got: list[tuple[str, int]] = []
    lock = threading.Lock()

    def take(owner: str) -> None:
        while (i := store.claim_shard("b1", owner)) is not None:
            with lock:
                got.append((owner, i))
            assert store.finish_shard("b1", i, {"failed": {}, "by": owner})

    threads = [threading.Thread(target=take, args=(f"w{k}",)) for k in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(i for _, i in got) == list(range(40))  # none lost, none twice
    state = store.board_state("b1")
    assert state["open"] == 0 and state["claimed"] == {} and sorted(state["done"]) == list(range(40))
    assert {state["done"][i]["by"] for i in state["done"]} == {o for o, _ in got}


def test_a_dead_workers_shard_is_reopened_only_by_its_owner_and_a_closed_board_takes_nothing(store):
    store.post_board("b2", {"project": 7}, 3)
    assert store.claim_shard("b2", "dead:shards") == 0
    assert store.board_state("b2")["claimed"][0]["owner"] == "dead:shards"
    assert not store.reopen_shard("b2", 0, "someone-else")
    assert store.reopen_shard("b2", 0, "dead:shards")
    assert store.board_state("b2")["open"] == 3
    claimed = [store.claim_shard("b2", "w2") for _ in range(3)]
    assert sorted(claimed) == [0, 1, 2] and store.claim_shard("b2", "w2") is None
    assert store.finish_shard("b2", 1, {"failed": {"3": "a 404"}})
    assert store.board_state("b2")["done"] == {1: {"failed": {"3": "a 404"}}}
    store.close_board("b2")
    assert "b2" not in store.boards()
    assert not store.finish_shard("b2", 2, {"failed": {}})  # the job closed it: a late helper changes nothing
    assert store.claim_shard("b2", "w3") is None
    assert store.board_state("b2") == {"open": 0, "claimed": {}, "done": {}}


def test_every_key_of_a_redis_board_expires_even_those_made_after_it_was_posted(redis_server):
    """A board whose job died and that nobody closed must not stay in Redis forever: the `done` hash
    (made by the first finished shard) and an `open` list remade by a reopened shard get the board's TTL."""
    from disal.job_store import BOARD_TTL_S

    s = RedisJobStore(redis_server.url, prefix=f"t{time.time_ns()}")
    try:
        s.post_board("b3", {"project": 7}, 2)
        assert [s.claim_shard("b3", "w1"), s.claim_shard("b3", "w1")] == [0, 1]  # the open list is now gone
        assert s.finish_shard("b3", 0, {"failed": {}})
        assert s.reopen_shard("b3", 1, "w1")
        keys = s._board_keys("b3")
        ttls = {k.rsplit(":", 1)[1]: s.r.ttl(k) for k in keys}
        assert all(0 < t <= BOARD_TTL_S for t in ttls.values()), ttls
    finally:
        s.close()
