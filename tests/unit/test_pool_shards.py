"""Sharded pool encoding (disal.pool_shards) on a real job store (SQLite), with a stand-in encoder:
every position comes back once whoever encoded it, a dead helper's shard is reopened, a job that is
gone has its board closed by the helpers, and the training job's chunks are the same alone or sharded."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from disal.job_store import SqliteJobStore
from disal.pool_shards import ShardBoard, ShardHelper, encode_sharded
from disal.tasks import Encoded


@pytest.fixture
def store(tmp_path):
    s = SqliteJobStore(tmp_path / "store.sqlite3")
    yield s
    s.close()


def vec(tid: int) -> np.ndarray:
    return np.full(4, float(tid), dtype=np.float32)


def post(store, tmp_path, n: int, size: int, alive=lambda w: True, owner="w1:job"):
    ids = [1000 + i for i in range(n)]
    inputs = [f"text {t}" for t in ids]
    order = np.random.default_rng(0).permutation(n)
    board = ShardBoard.post(store, tmp_path, project=7, spec={"task_type": "text_classification"}, worker="w1",
                            owner=owner, task_ids=ids, inputs=inputs, order=order, size=size, worker_alive=alive)
    return board, ids, inputs, order


def test_every_position_arrives_once_whoever_encodes_it(store, tmp_path):
    board, ids, inputs, order = post(store, tmp_path, 100, 8)
    assert len(board.shards) == 13 and (tmp_path / "shards" / board.board / "12.json").exists()
    cache: dict[int, np.ndarray] = {}  # the shared feature cache, as helpers write it
    encoded_by: dict[str, int] = {}

    def helper_encode(shard):
        assert shard.meta["project"] == 7 and shard.inputs == [f"text {t}" for t in shard.task_ids]
        time.sleep(0.01)
        for t in shard.task_ids:
            cache[t] = vec(t)
        encoded_by[threading.current_thread().name] = encoded_by.get(threading.current_thread().name, 0) + 1
        return {1: "a 404"} if 1003 in shard.task_ids else {}

    store.add(7, {"train": True})
    store.claim(7, "w1:job", 60)  # the job holds the project's lease while its board is open
    helpers = [ShardHelper(store, tmp_path, f"w{k}", helper_encode, store.lease_owner) for k in (2, 3)]
    threads = [threading.Thread(target=h.help, name=f"helper{k}") for k, h in enumerate(helpers)]
    [t.start() for t in threads]

    def here(chunk):
        time.sleep(0.01)
        return Encoded(np.stack([vec(ids[i]) for i in chunk]))

    def gathered(chunk, failed):
        return Encoded(np.stack([cache[ids[i]] for i in chunk]), failed)

    seen = []
    for chunk, res in encode_sharded(board, here, gathered):
        assert np.array_equal(res.features[:, 0], [float(ids[i]) for i in chunk])
        seen.extend(chunk.tolist())
        if 1003 in [ids[i] for i in chunk] and res.failed:
            assert list(res.failed.values()) == ["a 404"]
    [t.join() for t in threads]
    assert sorted(seen) == list(range(100))  # each position once
    assert board.here >= 1 and sum(h.encoded for h in helpers) >= 1 and board.here + sum(
        h.encoded for h in helpers) == 13
    assert store.boards() == {} and not (tmp_path / "shards" / board.board).exists()  # closed, files gone


def test_a_shard_held_by_a_dead_worker_is_reopened_and_encoded_by_the_job(store, tmp_path):
    board, ids, _, _ = post(store, tmp_path, 12, 4, alive=lambda w: w != "dead")
    assert store.claim_shard(board.board, "dead:shards") == 0  # ... and its worker is killed
    got = [c.tolist() for c, _ in encode_sharded(board, lambda c: Encoded(np.zeros((len(c), 4))), None)]
    assert sorted(sum(got, [])) == list(range(12))
    assert board.here == 3


def test_a_live_workers_claim_is_waited_for_not_stolen(store, tmp_path):
    board, ids, _, _ = post(store, tmp_path, 8, 4)
    assert store.claim_shard(board.board, "w9:shards") == 0
    chunks = encode_sharded(board, lambda c: Encoded(np.zeros((len(c), 4))),
                            lambda c, failed: Encoded(np.ones((len(c), 4)), failed))
    first, _ = next(chunks)  # the job takes shard 1 itself
    assert first.tolist() == board.shards[1].tolist()

    def finish_later():
        time.sleep(0.5)
        store.finish_shard(board.board, 0, {"failed": {}, "by": "w9:shards"})

    threading.Thread(target=finish_later).start()
    t0 = time.time()
    second, res = next(chunks)
    assert second.tolist() == board.shards[0].tolist() and res.features.sum() == len(second) * 4  # gathered
    assert time.time() - t0 >= 0.4
    assert next(chunks, None) is None and store.boards() == {}


def test_helpers_close_a_board_whose_job_is_gone_and_skip_their_own(store, tmp_path):
    board, *_ = post(store, tmp_path, 8, 4, owner="w1:job")
    calls = []
    own = ShardHelper(store, tmp_path, "w1", lambda s: calls.append(s) or {}, store.lease_owner)
    assert own.help() == 0 and store.boards()  # the job's own process leaves the board to the job
    other = ShardHelper(store, tmp_path, "w2", lambda s: calls.append(s) or {}, store.lease_owner)
    assert other.help() == 0 and calls == []  # nobody holds project 7's lease: the job died
    assert store.boards() == {} and not (tmp_path / "shards" / board.board).exists()


def test_a_closed_board_stops_a_helper_after_its_shard(store, tmp_path):
    board, *_ = post(store, tmp_path, 40, 4)
    store.add(7, {"train": True})
    store.claim(7, "w1:job", 60)
    done = []

    def encode(shard):
        done.append(shard.index)
        board.close()  # the job handed over while this shard was being encoded
        return {}

    assert ShardHelper(store, tmp_path, "w2", encode, store.lease_owner).help() == 1 and done == [0]


def test_a_helper_that_cannot_encode_hands_the_shard_back_and_leaves_the_board(store, tmp_path, caplog):
    board, *_ = post(store, tmp_path, 12, 4)
    store.add(7, {"train": True})
    store.claim(7, "w1:job", 60)

    def broken(shard):
        raise OSError("disk full")

    helper = ShardHelper(store, tmp_path, "w2", broken, store.lease_owner)
    assert helper.help() == 0 and helper.help() == 0  # it tries one shard, once
    assert store.board_state(board.board)["open"] == 3 and "could not encode shard 1 (OSError: disk full)" in caplog.text
    got = [c.tolist() for c, _ in encode_sharded(board, lambda c: Encoded(np.zeros((len(c), 4))), None)]
    assert sorted(sum(got, [])) == list(range(12))  # the job encoded all of it itself


def test_a_live_workers_claim_that_never_finishes_is_handed_out_again(store, tmp_path, monkeypatch):
    import disal.pool_shards as ps

    board, *_ = post(store, tmp_path, 8, 4)
    assert store.claim_shard(board.board, "w9:shards") == 0  # alive (its heartbeat goes on) but stuck
    monkeypatch.setattr(ps, "STALE_CLAIM_S", 0.3)
    t0 = time.time()
    got = [c.tolist() for c, _ in encode_sharded(board, lambda c: Encoded(np.zeros((len(c), 4))), None)]
    assert sorted(sum(got, [])) == list(range(8)) and time.time() - t0 >= 0.3
