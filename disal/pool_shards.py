"""Sharded pool encoding: a cold start's uncached pool, split into shards that every live worker encodes.

Why: encoding is the dominant cost of a first round (a 10k pool takes 9-11 minutes on 2 cores), and
one job runs in one worker. When other worker processes are alive (`make worker`, the compose
service's replicas), the job that needs the pool posts a *board*: the uncached tasks in shards of
SHARD_SIZE, their inputs in files under the shared MODEL_DIR, and the shards' states in the job
store (SQLite or Redis: claims are atomic there, so a shard has one owner). The job's own worker
encodes shards like every other; each helper writes its features into the shared feature cache
(disal.state.FeatureCache) and records the shard as done with the inputs it could not read. The job
reads those rows back from the cache, so the round is the same whoever encoded what, and pushes its
partial queues as the shards arrive.

Faults: a helper that dies mid-shard leaves it claimed; the job reopens claims whose worker's
heartbeat stopped and encodes them itself if nobody else takes them. A job that dies or hands over
closes its board (or its lease runs out, and helpers close it): helpers stop after their shard, and
what they encoded stays cached for the next job.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .job_store import JobStore

log = logging.getLogger(__name__)

WAIT_S = 0.2  # how often a job waiting for other workers' shards looks at the board
STALE_CLAIM_S = 600.0  # a shard claimed this long ago by a live but silent worker is handed out again


def board_dir(model_dir: Path, board: str) -> Path:
    return Path(model_dir) / "shards" / board


def remove_board(store: JobStore, model_dir: Path, board: str) -> None:
    """Close the board in the store and delete its input files (the cached features stay)."""
    try:
        store.close_board(board)
    finally:
        shutil.rmtree(board_dir(model_dir, board), ignore_errors=True)


@dataclass
class Shard:
    """One shard as a worker reads it: the project, its label spec, and the tasks to encode."""

    board: str
    index: int
    meta: dict
    task_ids: list[int]
    inputs: list[Any]


class ShardBoard:
    """The job's side of one board: post it, encode shards here, gather the others' results."""

    def __init__(self, store: JobStore, model_dir: Path, board: str, shards: list[np.ndarray], owner: str,
                 worker_alive: Callable[[str], bool], project: int = 0) -> None:
        self.store, self.board, self.shards, self.owner, self.project = store, board, shards, owner, project
        self.posted = time.time()
        self.model_dir = Path(model_dir)
        self.worker_alive = worker_alive
        self.taken: set[int] = set()  # shards this job has received (encoded here or gathered)
        self.here = 0
        self.closed = False

    @classmethod
    def post(cls, store: JobStore, model_dir: Path, *, project: int, spec: dict, worker: str, owner: str,
             task_ids: Sequence[int], inputs: Sequence[Any], order: np.ndarray, size: int,
             worker_alive: Callable[[str], bool]) -> "ShardBoard":
        """Write each shard's inputs to MODEL_DIR/shards/<board>/ and open the board in the store.

        `order`: positions into task_ids/inputs, in the order the shards should be taken (the job's
        seeded permutation, so early shards cover the whole pool)."""
        board = f"p{project}-{uuid.uuid4().hex[:8]}"
        folder = board_dir(model_dir, board)
        folder.mkdir(parents=True, exist_ok=True)
        shards = [order[i: i + size] for i in range(0, len(order), size)]
        for k, positions in enumerate(shards):
            (folder / f"{k}.json").write_text(json.dumps({"ids": [int(task_ids[i]) for i in positions],
                                                          "inputs": [inputs[i] for i in positions]}))
        store.post_board(board, {"project": int(project), "spec": spec, "worker": worker, "owner": owner,
                                 "shards": len(shards)}, len(shards))
        return cls(store, model_dir, board, shards, owner, worker_alive, int(project))

    def claim(self) -> int | None:
        i = self.store.claim_shard(self.board, self.owner)
        if i is not None:
            self.taken.add(i)
            self.here += 1
        return i

    def finish(self, index: int, failed: dict[int, str]) -> None:
        self.store.finish_shard(self.board, index, {"failed": {str(k): v for k, v in failed.items()},
                                                    "by": self.owner})

    def gather(self) -> tuple[list[tuple[int, dict]], bool]:
        """(shards other workers finished since the last call, whether every shard is now in), after
        reopening claims whose worker stopped (its heartbeat is stale)."""
        state = self.store.board_state(self.board)
        new = [(i, r) for i, r in sorted(state["done"].items()) if i not in self.taken]
        for i, _ in new:
            self.taken.add(i)
        for i, claim in state["claimed"].items():
            worker = str(claim.get("owner", "")).rsplit(":", 1)[0]
            if claim.get("owner") == self.owner:
                continue
            why = None
            if not self.worker_alive(worker):
                why = "which stopped"
            elif time.time() - float(claim.get("at") or 0) > STALE_CLAIM_S:
                why = f"which has not finished it in {STALE_CLAIM_S:.0f}s"
            if why and self.store.reopen_shard(self.board, i, claim["owner"]):
                log.warning("shard board %s: shard %d was held by %s, %s: reopened", self.board, i, claim["owner"],
                            why)
        return new, len(self.taken) >= len(self.shards)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        remove_board(self.store, self.model_dir, self.board)
        whole = len(self.taken) >= len(self.shards)
        log.info("project %s: sharded pool encoding %s in %.1fs: %d of %d shards encoded by this worker, %d by "
                 "others (board %s)", self.project, "done" if whole else "stopped", time.time() - self.posted,
                 self.here, len(self.shards), len(self.taken) - self.here, self.board)


def encode_sharded(board: ShardBoard, encode_here: Callable[[np.ndarray], Any],
                   gathered: Callable[[np.ndarray, dict[int, str]], Any]) -> Iterator[tuple[np.ndarray, Any]]:
    """Yield (positions, Encoded) per shard as they come in: the ones this job encodes
    (`encode_here(positions)`), and the ones other workers finished (`gathered(positions, failed)`,
    which reads their features from the shared cache). Closes the board when done or abandoned."""
    try:
        while True:
            i = board.claim()
            if i is not None:
                res = encode_here(board.shards[i])
                board.finish(i, res.failed)
                yield board.shards[i], res
            new, complete = board.gather()
            for j, result in new:
                failed = {int(k): v for k, v in (result.get("failed") or {}).items()}
                yield board.shards[j], gathered(board.shards[j], failed)
            if complete:
                return
            if i is None and not new:
                time.sleep(WAIT_S)  # every open shard is claimed: wait for their workers
    finally:
        board.close()


class ShardHelper:
    """A worker process's side: take shards of every board another worker's job posted, until none
    is left. One helper per process (a background thread of `disal.worker`), so a process encodes one
    shard at a time besides its own jobs."""

    def __init__(self, store: JobStore, model_dir: Path, worker_id: str,
                 encode: Callable[[Shard], dict[int, str]], lease_owner: Callable[[int], str | None],
                 on_shard: Callable[[], None] | None = None) -> None:
        self.store, self.model_dir, self.worker_id = store, Path(model_dir), worker_id
        self.encode = encode  # encodes a shard into the shared cache; returns {position: reason} it could not
        self.lease_owner = lease_owner
        self.on_shard = on_shard  # counts each shard as it is done (/health, /metrics)
        self.encoded = 0
        self.given_up: set[str] = set()  # boards this process failed to encode a shard of: left to others

    def help(self) -> int:
        """Encode shards of every open board not posted by this process; returns how many."""
        done = 0
        for board, meta in self.store.boards().items():
            if meta.get("worker") == self.worker_id or board in self.given_up:
                continue  # our own job encodes its shards in its own thread
            if self.lease_owner(int(meta["project"])) != meta.get("owner"):
                # its job died (its lease ran out) or finished without closing it: nobody gathers the results
                log.info("shard board %s: its job is gone: closed (what was encoded stays cached)", board)
                remove_board(self.store, self.model_dir, board)
                continue
            owner = f"{self.worker_id}:shards"
            while (i := self.store.claim_shard(board, owner)) is not None:
                t0 = time.time()
                try:
                    data = json.loads((board_dir(self.model_dir, board) / f"{i}.json").read_text())
                except FileNotFoundError:
                    break  # the job closed the board meanwhile
                shard = Shard(board, i, meta, [int(t) for t in data["ids"]], data["inputs"])
                try:
                    failed = self.encode(shard)
                except Exception as exc:  # noqa: BLE001 - hand the shard back: the job (or another worker) takes it
                    self.store.reopen_shard(board, i, owner)
                    self.given_up.add(board)
                    log.error("shard board %s (project %s): this worker could not encode shard %d (%s: %s); handed "
                              "back, and this board is left to the other workers", board, meta["project"], i + 1,
                              type(exc).__name__, exc)
                    break
                done += 1
                self.encoded += 1
                if self.on_shard:  # counted (and published) before the job can gather the shard and end its round
                    self.on_shard()
                kept = self.store.finish_shard(board, i, {"failed": {str(k): v for k, v in failed.items()},
                                                          "by": owner})
                n = len(shard.task_ids)
                log.info("shard board %s (project %s): shard %d/%d encoded here: %d inputs in %.1fs (%.1f/s)%s",
                         board, meta["project"], i + 1, meta.get("shards", "?"), n, time.time() - t0,
                         n / max(time.time() - t0, 1e-9), "" if kept else "; the board was closed meanwhile")
                if not kept:
                    break
        return done
