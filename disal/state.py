"""What lives in MODEL_DIR, per project, keyed by Label Studio task id. Every write is atomic.

Layout (one folder per project):

    MODEL_DIR/projects/<project id>/
        project.json             label spec, Label Studio hostname (never a token)
        setup_token.json         the token Label Studio sent with /setup and its host (mode 0600)
        current.json             {"version": ...}: the latest version that was fully pushed
        superseded.json          {version: unix time it stopped being current}: its predictions in Label
                                 Studio are deleted only OLD_VERSIONS_GRACE_S after that
                                 (disal.labelstudio.plan_version_cleanup)
        scored.json              {task id: model version that scored it}
        versions/<version>/      one trained (or cold-start) version, complete before it appears:
            meta.json            kind (head | coldstart), round, spec, strategy, counts, timings
            labels.json          {task id: {"labels": [...], "round": r, "annotation": id}}
            queue.json           {"priority": {task id: p}, "raw": {task id: s}, "centres": [task ids]}
            head.pt              the classifier's state_dict (kind=head): LinearHead, or MLPHead (meta regime=mlp)
            trajectory/          disal.trajectory.Trajectory.save (kind=head)
            pushed.json          present once the version served (its push succeeded)
    MODEL_DIR/features/<encoder key>.npz   feature cache: task id + text hash -> pretrained embedding

Why "current" is a pointer written last: a crash anywhere in a job (training, scoring, pushing)
leaves the previous pointer, so a restarted backend serves the latest good version at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from .atomic import atomic_dir
from .labelconfig import LabelSpec
from .trajectory import Trajectory
from .training.head import LinearHead

log = logging.getLogger(__name__)

_VERSION_RE = re.compile(r"^disal-(\d+)-")


def atomic_write_text(path: Path, text: str) -> None:
    """temp file in the same folder + fsync + os.replace: readers see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True))


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass
class ModelVersion:
    """One version of a project's model: a trained head (+ trajectory) or a cold-start queue."""

    name: str
    round: int
    kind: str  # "head" | "coldstart"
    spec: LabelSpec
    labels: dict[int, dict]
    priority: dict[int, float] = field(default_factory=dict)
    raw: dict[int, float] = field(default_factory=dict)
    centres: list[int] = field(default_factory=list)
    head: LinearHead | None = None
    trajectory: Trajectory | None = None
    meta: dict = field(default_factory=dict)

    @property
    def has_classifier(self) -> bool:
        return self.kind == "head" and self.head is not None

    def reference_scores(self) -> np.ndarray:
        """The pool's raw scores, sorted: new tasks are placed into the queue against them."""
        return np.sort(np.fromiter(self.raw.values(), dtype=np.float64, count=len(self.raw)))


class ProjectStore:
    """One project's folder. Thread-safe for the one worker + many request threads that use it."""

    def __init__(self, root: Path, project_id: int) -> None:
        self.project_id = int(project_id)
        self.dir = Path(root) / "projects" / str(self.project_id)
        self.versions_dir = self.dir / "versions"
        self._lock = threading.RLock()
        self._current: ModelVersion | None = None
        self._current_loaded = False
        self._current_pointer: str | None = None
        self.clock: Callable[[], float] = time.time  # tests set a fake clock (superseded-at times)

    # -- project info ----------------------------------------------------------------------------
    def save_info(self, info: dict) -> None:
        with self._lock:
            atomic_write_json(self.dir / "project.json", info)

    def load_info(self) -> dict:
        return read_json(self.dir / "project.json", {}) or {}

    # -- the token Label Studio sent with /setup ---------------------------------------------------
    TOKEN_FILE = "setup_token.json"

    def save_setup_token(self, host: str | None, token: str) -> None:
        """Keep /setup's token with the host it came with, readable by this user only (0600), so a
        restarted backend can use it. Never in project.json, /health or a log line."""
        with self._lock:
            path = self.dir / self.TOKEN_FILE
            atomic_write_json(path, {"host": host, "token": token})  # mkstemp: created 0600
            os.chmod(path, 0o600)

    def load_setup_token(self) -> tuple[str | None, str] | None:
        data = read_json(self.dir / self.TOKEN_FILE, None)
        if not isinstance(data, dict) or not isinstance(data.get("token"), str) or not data["token"]:
            return None
        host = data.get("host")
        return (host if isinstance(host, str) else None), data["token"]

    # -- versions --------------------------------------------------------------------------------
    def list_versions(self) -> list[str]:
        """Complete versions (meta.json present), oldest first."""
        if not self.versions_dir.exists():
            return []
        names = [p.name for p in self.versions_dir.iterdir()
                 if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").exists()]
        return sorted(names, key=lambda n: (int(_VERSION_RE.match(n).group(1)) if _VERSION_RE.match(n) else -1, n))

    def next_round(self) -> int:
        rounds = [int(m.group(1)) for n in self.list_versions() if (m := _VERSION_RE.match(n))]
        return (max(rounds) + 1) if rounds else 1

    @staticmethod
    def version_name(round_: int, kind: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        return f"disal-{round_:04d}-{'coldstart-' if kind == 'coldstart' else ''}{stamp}"

    def save_version(self, v: ModelVersion) -> Path:
        """Write the whole version into a temp folder, then rename it into place."""
        final = self.versions_dir / v.name
        with atomic_dir(final) as tmp:
            (tmp / "labels.json").write_text(json.dumps({str(k): val for k, val in v.labels.items()}))
            (tmp / "queue.json").write_text(json.dumps({
                "priority": {str(k): p for k, p in v.priority.items()},
                "raw": {str(k): s for k, s in v.raw.items()},
                "centres": [int(c) for c in v.centres]}))
            if v.head is not None:
                torch.save(v.head.state_dict(), tmp / "head.pt")
            if v.trajectory is not None:
                v.trajectory.save(tmp / "trajectory")
            meta = {**v.meta, "name": v.name, "round": v.round, "kind": v.kind, "spec": v.spec.as_dict()}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # written last: marks the folder complete
        return final

    def load_version(self, name: str) -> ModelVersion:
        folder = self.versions_dir / name
        meta = json.loads((folder / "meta.json").read_text())
        spec = LabelSpec.from_dict(meta["spec"])
        labels = {int(k): val for k, val in json.loads((folder / "labels.json").read_text()).items()}
        queue = json.loads((folder / "queue.json").read_text())
        head = traj = None
        if meta["kind"] == "head":
            traj = Trajectory.load(folder / "trajectory")
            state = torch.load(folder / "head.pt", weights_only=True)
            from .training.regimes import make_regime  # the version's own regime, whatever TRAIN_MODE is now

            head = make_regime(meta.get("regime") or "head").load(state, traj)
        return ModelVersion(
            name=name, round=int(meta["round"]), kind=meta["kind"], spec=spec, labels=labels,
            priority={int(k): float(p) for k, p in queue["priority"].items()},
            raw={int(k): float(s) for k, s in queue["raw"].items()},
            centres=[int(c) for c in queue.get("centres", [])], head=head, trajectory=traj, meta=meta)

    def set_current(self, v: ModelVersion) -> None:
        """Make `v` the serving version (after it was fully pushed); mark it as pushed for fallbacks.

        The version it replaces is recorded as superseded now: its predictions are deleted only
        OLD_VERSIONS_GRACE_S later (disal.labelstudio.plan_version_cleanup).
        """
        with self._lock:
            now = self.clock()
            previous = (read_json(self.dir / "current.json", {}) or {}).get("version")
            atomic_write_json(self.versions_dir / v.name / "pushed.json", {"at": now})
            atomic_write_json(self.dir / "current.json", {"version": v.name, "at": now})
            self._current, self._current_loaded, self._current_pointer = v, True, v.name
            if previous and previous != v.name:
                ledger = self.load_superseded()
                ledger.setdefault(previous, now)
                self.save_superseded(ledger)

    # -- when each version stopped being current (lagged deletion of its predictions) -------------
    def load_superseded(self) -> dict[str, float]:
        """{version name: unix time it stopped being current}."""
        raw = read_json(self.dir / "superseded.json", {}) or {}
        return {str(k): float(v) for k, v in raw.items()}

    def save_superseded(self, ledger: dict[str, float]) -> None:
        with self._lock:
            atomic_write_json(self.dir / "superseded.json", {str(k): float(v) for k, v in ledger.items()})

    def pushed_versions(self) -> list[str]:
        """Versions that once served (their push succeeded), oldest first."""
        return [n for n in self.list_versions() if (self.versions_dir / n / "pushed.json").exists()]

    def current(self) -> ModelVersion | None:
        """The serving version, loaded once per change of current.json.

        A broken pointer falls back, loudly, to the newest version that was once pushed; a version
        whose push never succeeded is never served.
        """
        with self._lock:
            # the pointer is read each time: a worker process may have made another version current
            pointer = (read_json(self.dir / "current.json", {}) or {}).get("version")
            if self._current_loaded and pointer == self._current_pointer:
                return self._current
            self._current_pointer = pointer
            candidates = ([pointer] if pointer else []) + [n for n in reversed(self.pushed_versions()) if n != pointer]
            for i, name in enumerate(candidates):
                try:
                    self._current = self.load_version(name)
                    if i > 0 or not pointer:
                        log.error("project %s: current version %r is missing or unreadable; serving %s instead",
                                  self.project_id, pointer, name)
                    break
                except Exception as exc:  # noqa: BLE001 - try the next one, say which failed and why
                    log.error("project %s: cannot load version %s: %s", self.project_id, name, exc)
            self._current_loaded = True
            return self._current

    def current_labels(self) -> dict[int, dict]:
        v = self.current()
        return dict(v.labels) if v else {}

    def prune_versions(self, keep: int = 3) -> None:
        """Keep the newest `keep` versions on disk (and always the current one)."""
        with self._lock:
            cur = self._current.name if self._current else None
            for name in self.list_versions()[:-keep]:
                if name != cur:
                    shutil.rmtree(self.versions_dir / name, ignore_errors=True)

    # -- which version scored each task ----------------------------------------------------------
    def load_scored(self) -> dict[int, str]:
        return {int(k): v for k, v in (read_json(self.dir / "scored.json", {}) or {}).items()}

    def record_scored(self, task_ids: Iterable[int], version: str, replace: bool = False) -> None:
        with self._lock:
            scored = {} if replace else self.load_scored()
            scored.update({int(t): version for t in task_ids})
            atomic_write_json(self.dir / "scored.json", {str(k): v for k, v in scored.items()})


@contextlib.contextmanager
def _file_lock(path: Path):
    """An advisory lock between the processes of one machine (web and job workers) that write a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class FeatureCache:
    """Pretrained embeddings keyed by (task id, text hash), one file per encoder. A changed text re-encodes."""

    def __init__(self, root: Path, encoder_key: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder_key)[-80:]
        self.path = Path(root) / "features" / f"{safe}.npz"
        self._lock = threading.Lock()
        self._rows: dict[int, tuple[str, np.ndarray]] = {}
        self._dirty = False
        self._loaded_stamp: tuple[int, int] | None = None
        with self._lock:
            n = self._merge_from_disk()
        if n:
            log.info("feature cache %s: %d rows", self.path.name, n)

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def _merge_from_disk(self) -> int:
        """Add the rows another process (a job worker) saved since we last looked; ours win on a clash.
        Caller holds the lock. Returns how many rows were added."""
        stamp = self._stamp()
        if stamp is None or stamp == self._loaded_stamp:
            return 0
        added = 0
        try:
            with np.load(self.path, allow_pickle=False) as z:
                for tid, h, vec in zip(z["ids"].tolist(), z["hashes"].tolist(), z["feats"]):
                    if int(tid) not in self._rows:
                        self._rows[int(tid)] = (str(h), vec)
                        added += 1
        except Exception as exc:  # noqa: BLE001 - a corrupt cache is rebuilt, and we say so
            log.warning("feature cache %s unreadable (%s): encoding what it held again", self.path, exc)
        self._loaded_stamp = stamp
        return added

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, task_ids: Sequence[int], hashes: Sequence[str]) -> tuple[dict[int, np.ndarray], list[int]]:
        """(found {id: vector}, positions that need encoding)."""
        found, missing = {}, []
        with self._lock:
            if any(self._rows.get(int(t), ("",))[0] != h for t, h in zip(task_ids, hashes)):
                self._merge_from_disk()  # a worker process may have encoded them since
            for pos, (tid, h) in enumerate(zip(task_ids, hashes)):
                row = self._rows.get(int(tid))
                if row is not None and row[0] == h:
                    found[int(tid)] = row[1]
                else:
                    missing.append(pos)
        return found, missing

    def put(self, task_ids: Sequence[int], hashes: Sequence[str], feats: np.ndarray) -> None:
        with self._lock:
            for tid, h, vec in zip(task_ids, hashes, feats):
                self._rows[int(tid)] = (h, np.asarray(vec, dtype=np.float32))
            self._dirty = True

    def get(self, task_id: int) -> np.ndarray | None:
        row = self._rows.get(int(task_id))
        return None if row is None else row[1]

    def hash_of(self, task_id: int) -> str | None:
        """The key a task's cached row was stored under (image features: `<ref hash>.<content hash>`)."""
        row = self._rows.get(int(task_id))
        return None if row is None else row[0]

    def save(self) -> None:
        with self._lock, _file_lock(self.path.with_suffix(".lock")):
            if not self._dirty or not self._rows:
                return
            self._merge_from_disk()  # keep what other worker processes saved meanwhile
            ids = np.fromiter(self._rows.keys(), dtype=np.int64)
            hashes = np.array([r[0] for r in self._rows.values()])
            feats = np.stack([r[1] for r in self._rows.values()]).astype(np.float32)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".npz", dir=self.path.parent)
            os.close(fd)
            try:
                np.savez(tmp, ids=ids, hashes=hashes, feats=feats)
                os.replace(tmp, self.path)
            finally:
                Path(tmp).unlink(missing_ok=True)
            self._dirty = False
            self._loaded_stamp = self._stamp()
