"""The job store: what each project's next job must do, who runs it now, and what /health shows.

Why it exists beside the job queue (huey, disal.job_queue): huey delivers "project N has work" to
some worker process, durably, with retries and delays. What huey does not give is the per-project
semantics the backend needs across processes and machines:
- events coalesce: every request is appended to the project's pending list; a job takes ALL of
  them at once, so a storm of 500 events becomes one or two trainings;
- one job per project at a time: a lease (a lock with an expiry) that the running worker renews
  every few seconds; a worker killed with -9 stops renewing, the lease runs out, and the next
  worker that claims the project takes the dead worker's requests too (nothing is lost);
- the status, counters and metrics every worker publishes, so the web process's /health and
  /metrics report all workers.

Two implementations behind one interface, chosen with huey's storage: SQLite in MODEL_DIR (the
embedded default: no server) and Redis (REDIS_URL: any number of workers on any machines). Every
operation that reads and writes is one SQLite transaction or one Redis Lua script: atomic.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

LEASE_S = 30.0  # a job's lease; its worker renews it every LEASE_S / 5 seconds


class JobStore:
    """The interface both stores implement. `requests` are JSON-able dicts (JobRequest.to_dict)."""

    backend = "?"

    def add(self, project: int, request: dict) -> str:
        """Append a request; 'queued', or 'coalesced' when it joins others or waits behind a job."""
        raise NotImplementedError

    def claim(self, project: int, owner: str, lease_s: float = LEASE_S) -> list[dict] | None:
        """Take the lease and every request (a dead owner's running ones first); None when a live
        owner holds the lease. The requests stay recorded as running until `finish`."""
        raise NotImplementedError

    def renew(self, project: int, owner: str, lease_s: float = LEASE_S) -> bool:
        raise NotImplementedError

    def finish(self, project: int, owner: str, requeue: list[dict] | None = None) -> int:
        """Drop the running requests (or put them back in front, `requeue`, to retry), release the
        lease, and return how many requests are pending now; -1 if the lease was no longer ours."""
        raise NotImplementedError

    def pending_count(self, project: int) -> int:
        raise NotImplementedError

    def has_pending_train(self, project: int) -> bool:
        raise NotImplementedError

    def pending_span(self, project: int) -> tuple[float, float] | None:
        """(oldest, newest) time a pending request was added; None when none waits."""
        raise NotImplementedError

    def needs_work(self) -> list[int]:
        """Projects with pending requests and no live lease, or a dead owner's running requests."""
        raise NotImplementedError

    def lease_owner(self, project: int) -> str | None:
        raise NotImplementedError

    def has_running(self, project: int) -> bool:
        """Whether requests are recorded as running (by a live job, or by a dead one's)."""
        raise NotImplementedError

    def update_status(self, project: int, fields: dict) -> None:
        raise NotImplementedError

    def status(self, project: int) -> dict:
        raise NotImplementedError

    def incr(self, project: int, counter: str, by: int = 1) -> None:
        raise NotImplementedError

    def counters(self, project: int) -> dict[str, int]:
        raise NotImplementedError

    def projects(self) -> list[int]:
        raise NotImplementedError

    def heartbeat(self, worker: str, info: dict) -> None:
        raise NotImplementedError

    def workers(self) -> dict[str, dict]:
        raise NotImplementedError

    # -- shard boards (disal.pool_shards): one round's pool encoding, split for every live worker --
    def post_board(self, board: str, meta: dict, shards: int) -> None:
        """Open a board of `shards` shards (0 .. shards-1), all unclaimed. `meta` says whose it is."""
        raise NotImplementedError

    def boards(self) -> dict[str, dict]:
        """Every board still posted: its meta."""
        raise NotImplementedError

    def claim_shard(self, board: str, owner: str) -> int | None:
        """Take the next unclaimed shard (atomically: one owner per shard); None when none is left."""
        raise NotImplementedError

    def finish_shard(self, board: str, index: int, result: dict) -> bool:
        """Record a claimed shard as done; False when the board is gone (closed by its job)."""
        raise NotImplementedError

    def reopen_shard(self, board: str, index: int, owner: str) -> bool:
        """Put a claimed shard back (its worker died), only if `owner` still holds it."""
        raise NotImplementedError

    def board_state(self, board: str) -> dict:
        """{"open": n unclaimed, "claimed": {index: {"owner", "at"}}, "done": {index: result}}."""
        raise NotImplementedError

    def close_board(self, board: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SqliteJobStore(JobStore):
    """One SQLite file (WAL) shared by the web process and the worker processes of one machine."""

    backend = "sqlite"
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS pending (seq INTEGER PRIMARY KEY AUTOINCREMENT, project INTEGER NOT NULL,
                                        request TEXT NOT NULL, added REAL NOT NULL);
    CREATE INDEX IF NOT EXISTS pending_project ON pending(project, seq);
    CREATE TABLE IF NOT EXISTS running (project INTEGER PRIMARY KEY, requests TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS leases (project INTEGER PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS status (project INTEGER PRIMARY KEY, data TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS counters (project INTEGER NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,
                                         PRIMARY KEY (project, name));
    CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, data TEXT NOT NULL, seen REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS boards (id TEXT PRIMARY KEY, meta TEXT NOT NULL, posted REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS shards (board TEXT NOT NULL, idx INTEGER NOT NULL, state TEXT NOT NULL,
                                       owner TEXT, at REAL, result TEXT, PRIMARY KEY (board, idx));
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._tx() as db:
            for statement in filter(str.strip, self.SCHEMA.split(";")):
                db.execute(statement)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, *_: Any) -> None:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self) -> "_Tx":
        return self._Tx(self._db())

    def _live_owner(self, db: sqlite3.Connection, project: int) -> str | None:
        row = db.execute("SELECT owner, expires FROM leases WHERE project=?", (project,)).fetchone()
        return row[0] if row and row[1] > time.time() else None

    def add(self, project: int, request: dict) -> str:
        with self._tx() as db:
            waiting = db.execute("SELECT COUNT(*) FROM pending WHERE project=?", (project,)).fetchone()[0]
            busy = self._live_owner(db, project) is not None
            db.execute("INSERT INTO pending (project, request, added) VALUES (?, ?, ?)",
                       (project, json.dumps(request), time.time()))
        return "coalesced" if waiting or busy else "queued"

    def claim(self, project: int, owner: str, lease_s: float = LEASE_S) -> list[dict] | None:
        with self._tx() as db:
            live = self._live_owner(db, project)
            if live is not None and live != owner:
                return None
            row = db.execute("SELECT requests FROM running WHERE project=?", (project,)).fetchone()
            requests = json.loads(row[0]) if row else []
            rows = db.execute("SELECT seq, request FROM pending WHERE project=? ORDER BY seq", (project,)).fetchall()
            requests += [json.loads(r) for _, r in rows]
            db.execute("DELETE FROM pending WHERE project=? AND seq<=?", (project, rows[-1][0] if rows else -1))
            db.execute("INSERT OR REPLACE INTO running (project, requests) VALUES (?, ?)", (project, json.dumps(requests)))
            db.execute("INSERT OR REPLACE INTO leases (project, owner, expires) VALUES (?, ?, ?)",
                       (project, owner, time.time() + lease_s))
        return requests

    def renew(self, project: int, owner: str, lease_s: float = LEASE_S) -> bool:
        with self._tx() as db:
            cur = db.execute("UPDATE leases SET expires=? WHERE project=? AND owner=? AND expires>?",
                             (time.time() + lease_s, project, owner, time.time()))
            return cur.rowcount == 1

    def finish(self, project: int, owner: str, requeue: list[dict] | None = None) -> int:
        with self._tx() as db:
            row = db.execute("SELECT owner FROM leases WHERE project=?", (project,)).fetchone()
            if not row or row[0] != owner:
                return -1
            db.execute("DELETE FROM running WHERE project=?", (project,))
            db.execute("DELETE FROM leases WHERE project=?", (project,))
            if requeue:  # in front of what arrived meanwhile: negative sequence numbers sort first
                first = db.execute("SELECT MIN(seq) FROM pending").fetchone()[0] or 1
                for i, r in enumerate(requeue):
                    db.execute("INSERT INTO pending (seq, project, request, added) VALUES (?, ?, ?, ?)",
                               (min(first, 1) - len(requeue) + i, project, json.dumps(r), time.time()))
            return db.execute("SELECT COUNT(*) FROM pending WHERE project=?", (project,)).fetchone()[0]

    def pending_count(self, project: int) -> int:
        return self._db().execute("SELECT COUNT(*) FROM pending WHERE project=?", (project,)).fetchone()[0]

    def has_pending_train(self, project: int) -> bool:
        rows = self._db().execute("SELECT request FROM pending WHERE project=?", (project,)).fetchall()
        return any(json.loads(r).get("train") for (r,) in rows)

    def pending_span(self, project: int) -> tuple[float, float] | None:
        row = self._db().execute("SELECT MIN(added), MAX(added) FROM pending WHERE project=?", (project,)).fetchone()
        return None if row[0] is None else (row[0], row[1])

    def needs_work(self) -> list[int]:
        db, now = self._db(), time.time()
        rows = db.execute("""SELECT project FROM pending UNION SELECT project FROM running""").fetchall()
        out = []
        for (pid,) in rows:
            lease = db.execute("SELECT expires FROM leases WHERE project=?", (pid,)).fetchone()
            if lease is None or lease[0] <= now:
                out.append(pid)
        return sorted(out)

    def lease_owner(self, project: int) -> str | None:
        return self._live_owner(self._db(), project)

    def has_running(self, project: int) -> bool:
        return self._db().execute("SELECT 1 FROM running WHERE project=?", (project,)).fetchone() is not None

    def update_status(self, project: int, fields: dict) -> None:
        with self._tx() as db:
            row = db.execute("SELECT data FROM status WHERE project=?", (project,)).fetchone()
            data = {**(json.loads(row[0]) if row else {}), **fields}
            db.execute("INSERT OR REPLACE INTO status (project, data) VALUES (?, ?)", (project, json.dumps(data)))

    def status(self, project: int) -> dict:
        row = self._db().execute("SELECT data FROM status WHERE project=?", (project,)).fetchone()
        return json.loads(row[0]) if row else {}

    def incr(self, project: int, counter: str, by: int = 1) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO counters (project, name, value) VALUES (?, ?, ?) "
                       "ON CONFLICT(project, name) DO UPDATE SET value=value+excluded.value", (project, counter, by))

    def counters(self, project: int) -> dict[str, int]:
        rows = self._db().execute("SELECT name, value FROM counters WHERE project=?", (project,)).fetchall()
        return dict(rows)

    def projects(self) -> list[int]:
        rows = self._db().execute("SELECT project FROM status UNION SELECT project FROM pending "
                                  "UNION SELECT project FROM running").fetchall()
        return sorted(r[0] for r in rows)

    def heartbeat(self, worker: str, info: dict) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO workers (id, data, seen) VALUES (?, ?, ?)",
                       (worker, json.dumps(info), time.time()))

    def workers(self) -> dict[str, dict]:
        rows = self._db().execute("SELECT id, data, seen FROM workers").fetchall()
        return {w: {**json.loads(d), "seen": s} for w, d, s in rows}

    def post_board(self, board: str, meta: dict, shards: int) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO boards (id, meta, posted) VALUES (?, ?, ?)", (board, json.dumps(meta), time.time()))
            db.executemany("INSERT INTO shards (board, idx, state) VALUES (?, ?, 'open')",
                           [(board, i) for i in range(shards)])

    def boards(self) -> dict[str, dict]:
        return {b: json.loads(m) for b, m in self._db().execute("SELECT id, meta FROM boards").fetchall()}

    def claim_shard(self, board: str, owner: str) -> int | None:
        with self._tx() as db:
            row = db.execute("SELECT idx FROM shards WHERE board=? AND state='open' ORDER BY idx LIMIT 1",
                             (board,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE shards SET state='claimed', owner=?, at=? WHERE board=? AND idx=?",
                       (owner, time.time(), board, row[0]))
            return int(row[0])

    def finish_shard(self, board: str, index: int, result: dict) -> bool:
        with self._tx() as db:
            cur = db.execute("UPDATE shards SET state='done', result=? WHERE board=? AND idx=?",
                             (json.dumps(result), board, index))
            return cur.rowcount == 1

    def reopen_shard(self, board: str, index: int, owner: str) -> bool:
        with self._tx() as db:
            cur = db.execute("UPDATE shards SET state='open', owner=NULL, at=NULL WHERE board=? AND idx=? "
                             "AND state='claimed' AND owner=?", (board, index, owner))
            return cur.rowcount == 1

    def board_state(self, board: str) -> dict:
        rows = self._db().execute("SELECT idx, state, owner, at, result FROM shards WHERE board=?", (board,)).fetchall()
        out: dict = {"open": 0, "claimed": {}, "done": {}}
        for idx, state, owner, at, result in rows:
            if state == "open":
                out["open"] += 1
            elif state == "claimed":
                out["claimed"][int(idx)] = {"owner": owner, "at": at}
            else:
                out["done"][int(idx)] = json.loads(result)
        return out

    def close_board(self, board: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM shards WHERE board=?", (board,))
            db.execute("DELETE FROM boards WHERE id=?", (board,))

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


# Redis: every read-modify-write is one Lua script, so it is atomic across all workers and machines.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local items = redis.call('LRANGE', KEYS[3], 0, -1)
for _, item in ipairs(items) do redis.call('RPUSH', KEYS[2], item) end
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[4], ARGV[3])
return redis.call('LRANGE', KEYS[2], 0, -1)
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_FINISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[2])
redis.call('DEL', KEYS[1])
for i = #ARGV, 3, -1 do redis.call('LPUSH', KEYS[3], ARGV[i]) end
local n = redis.call('LLEN', KEYS[3])
if n > 0 then redis.call('SADD', KEYS[4], ARGV[2]) end
return n
"""
_ADD = """
local waiting = redis.call('LLEN', KEYS[1])
local busy = redis.call('EXISTS', KEYS[2])
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[2])
if waiting > 0 or busy == 1 then return 1 end
return 0
"""
_CLAIM_SHARD = """
local i = redis.call('LPOP', KEYS[1])
if not i then return false end
redis.call('HSET', KEYS[2], i, ARGV[1])
return i
"""
# The `done` hash is created by the first finished shard, and the `open` list again by a reopened one
# after its last shard was claimed (Redis deletes an empty list): each gets the board's TTL then, since an
# EXPIRE at posting time only reaches keys that exist.
_FINISH_SHARD = """
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
return 1
"""
_REOPEN_SHARD = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if not held or cjson.decode(held)['owner'] ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[1])
if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
return 1
"""
BOARD_TTL_S = 86400  # a board whose job died and was never closed disappears after a day


class RedisJobStore(JobStore):
    """The same semantics in Redis, for workers on many machines (REDIS_URL)."""

    backend = "redis"

    def __init__(self, url: str, prefix: str = "disal") -> None:
        import redis

        self.r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5,
                                      health_check_interval=15, retry_on_timeout=True)
        self.p = prefix
        self._claim, self._renew = self.r.register_script(_CLAIM), self.r.register_script(_RENEW)
        self._finish, self._add = self.r.register_script(_FINISH), self.r.register_script(_ADD)
        self._claim_shard = self.r.register_script(_CLAIM_SHARD)
        self._finish_shard = self.r.register_script(_FINISH_SHARD)
        self._reopen_shard = self.r.register_script(_REOPEN_SHARD)

    def _k(self, kind: str, project: int | None = None) -> str:
        return f"{self.p}:{kind}" if project is None else f"{self.p}:{kind}:{project}"

    def add(self, project: int, request: dict) -> str:
        n = self._add(keys=[self._k("pending", project), self._k("lease", project), self._k("waiting"),
                            self._k("projects")], args=[json.dumps(request), project])
        return "coalesced" if n else "queued"

    def claim(self, project: int, owner: str, lease_s: float = LEASE_S) -> list[dict] | None:
        out = self._claim(keys=[self._k("lease", project), self._k("running", project), self._k("pending", project),
                                self._k("waiting")], args=[owner, int(lease_s * 1000), project])
        return None if out is None else [json.loads(x) for x in out]

    def renew(self, project: int, owner: str, lease_s: float = LEASE_S) -> bool:
        return bool(self._renew(keys=[self._k("lease", project)], args=[owner, int(lease_s * 1000)]))

    def finish(self, project: int, owner: str, requeue: list[dict] | None = None) -> int:
        return int(self._finish(keys=[self._k("lease", project), self._k("running", project),
                                      self._k("pending", project), self._k("waiting")],
                                args=[owner, project, *[json.dumps(r) for r in requeue or []]]))

    def pending_count(self, project: int) -> int:
        return int(self.r.llen(self._k("pending", project)))

    def has_pending_train(self, project: int) -> bool:
        return any(json.loads(x).get("train") for x in self.r.lrange(self._k("pending", project), 0, -1))

    def pending_span(self, project: int) -> tuple[float, float] | None:
        key = self._k("pending", project)
        first, last = self.r.lindex(key, 0), self.r.lindex(key, -1)
        if first is None or last is None:
            return None
        return float(json.loads(first).get("at", 0)), float(json.loads(last).get("at", 0))

    def needs_work(self) -> list[int]:
        out = set()
        for pid in self.r.smembers(self._k("projects")):
            pid = int(pid)
            if self.r.exists(self._k("lease", pid)):
                continue
            if self.r.llen(self._k("pending", pid)) or self.r.llen(self._k("running", pid)):
                out.add(pid)
        return sorted(out)

    def lease_owner(self, project: int) -> str | None:
        return self.r.get(self._k("lease", project))

    def has_running(self, project: int) -> bool:
        return bool(self.r.llen(self._k("running", project)))

    def update_status(self, project: int, fields: dict) -> None:
        # only the lease holder writes a project's status: read, merge, write needs no script
        self.r.sadd(self._k("projects"), project)
        key = self._k("status", project)
        raw = self.r.get(key)
        self.r.set(key, json.dumps({**(json.loads(raw) if raw else {}), **fields}))

    def status(self, project: int) -> dict:
        raw = self.r.get(self._k("status", project))
        return json.loads(raw) if raw else {}

    def incr(self, project: int, counter: str, by: int = 1) -> None:
        self.r.hincrby(self._k("counters", project), counter, by)

    def counters(self, project: int) -> dict[str, int]:
        return {k: int(v) for k, v in self.r.hgetall(self._k("counters", project)).items()}

    def projects(self) -> list[int]:
        return sorted(int(p) for p in self.r.smembers(self._k("projects")))

    def heartbeat(self, worker: str, info: dict) -> None:
        self.r.hset(self._k("workers"), worker, json.dumps({**info, "seen": time.time()}))

    def workers(self) -> dict[str, dict]:
        return {w: json.loads(d) for w, d in self.r.hgetall(self._k("workers")).items()}

    def _board_keys(self, board: str) -> tuple[str, str, str]:
        return tuple(f"{self.p}:board:{board}:{part}" for part in ("open", "claimed", "done"))  # type: ignore

    def post_board(self, board: str, meta: dict, shards: int) -> None:
        open_, claimed, done = self._board_keys(board)
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(open_, claimed, done)
        if shards:
            pipe.rpush(open_, *range(shards))
        pipe.hset(claimed, "-", "{}")  # keeps the hash alive while nothing is claimed (its TTL ends it)
        pipe.hset(self._k("boards"), board, json.dumps({**meta, "posted": time.time()}))
        for key in (open_, claimed, done):
            pipe.expire(key, BOARD_TTL_S)
        pipe.execute()

    def boards(self) -> dict[str, dict]:
        out = {}
        for board, meta in self.r.hgetall(self._k("boards")).items():
            meta = json.loads(meta)
            if time.time() - float(meta.get("posted", 0)) > BOARD_TTL_S:
                self.close_board(board)
                continue
            out[board] = meta
        return out

    def claim_shard(self, board: str, owner: str) -> int | None:
        open_, claimed, _ = self._board_keys(board)
        i = self._claim_shard(keys=[open_, claimed], args=[json.dumps({"owner": owner, "at": time.time()})])
        return None if i is None else int(i)

    def finish_shard(self, board: str, index: int, result: dict) -> bool:
        _, claimed, done = self._board_keys(board)
        return bool(self._finish_shard(keys=[claimed, done, self._k("boards")],
                                       args=[index, json.dumps(result), board, BOARD_TTL_S]))

    def reopen_shard(self, board: str, index: int, owner: str) -> bool:
        open_, claimed, _ = self._board_keys(board)
        return bool(self._reopen_shard(keys=[claimed, open_], args=[index, owner, BOARD_TTL_S]))

    def board_state(self, board: str) -> dict:
        open_, claimed, done = self._board_keys(board)
        pipe = self.r.pipeline()
        pipe.llen(open_), pipe.hgetall(claimed), pipe.hgetall(done)
        n_open, held, finished = pipe.execute()
        return {"open": int(n_open), "claimed": {int(i): json.loads(v) for i, v in held.items() if i != "-"},
                "done": {int(i): json.loads(v) for i, v in finished.items()}}

    def close_board(self, board: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(*self._board_keys(board))
        pipe.hdel(self._k("boards"), board)
        pipe.execute()

    def close(self) -> None:
        self.r.close()
