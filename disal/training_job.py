"""Where an annotation event turns into a training job, and a model version into a pushed queue.

One job (run by the project's worker thread, see disal.jobs):

    fetch labeled tasks -> labels by task id (skipped/empty annotations and unknown labels dropped)
    -> features from the project type's frozen encoder (disal.tasks: text or images; cached per task id
       + content hash; an unreadable image is skipped with a log line naming the task)
    -> train the TRAIN_MODE regime on them (disal.training.regimes: a linear head, an MLP, or the text
       encoder's top N blocks from hidden states cached per task; WARM_START from the previous round's
       model), recording the trajectory
    -> fetch unlabeled tasks -> score them (the regime's scoring inputs + make_strategy(STRATEGY))
    -> save the version atomically -> push predictions in chunks, PATCH project.model_version,
       delete older versions' predictions, ensure the "DISAL queue" view, optional sampling
    -> only then the version becomes "current" (a crash anywhere before leaves the previous one serving)

Cold start (fewer than two classes labeled): no classifier exists, so the queue is ordered by CoreSet
(greedy k-center) over the pretrained embeddings, with the labeled tasks as centres; /health says so.

First queue on a big pool (`TrainingJob._progressive`): a project's first round does not wait for the
whole pool to be encoded (minutes at 10k tasks on 2 cores). It pushes a queue over the tasks encoded
after FIRST_QUEUE_SECONDS, then refined ones at REFINE_GROWTH times more, the last over the whole pool;
each is a complete version (saved, pushed, then current), tasks not encoded yet have no prediction and
sort last, and /health says the queue is partial.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import httpx
import numpy as np

from .config import Settings
from .jobs import JobContext, JobRequest
from .labelconfig import LabelSpec, TaskInputError, parse_label_config, task_label
from .labelstudio import LabelStudioClient, LabelStudioError, training_on_annotation
from .learning_curve import LearningCurve, loo_accuracy
from .metrics import Metrics
from .queue import predictions_for, priorities_from_selection, priority_from_reference, top_of_queue
from .media import MediaFetcher
from .pool_shards import Shard, encode_sharded
from .state import ModelVersion, ProjectStore
from .strategies import BADGE, CoreSet, DisalBatch, EmptyPoolError, make_strategy, reads_only_last_checkpoint
from .strategies.diversity import badge_embedding_norms_and_gram_factors, badge_sq_dists, sq_dists_to_nearest
from .strategies.influence import probabilities
from .tasks import Encoded, Encoders, FeatureEncoder, TaskModule, module_for
from .tasks.text_classification import TextEncoder
from .training.head import HeadConfig, head_logits
from .training.hidden_cache import HiddenStateCache
from .training.regimes import HeadRegime, Regime, TaskStates, make_regime

log = logging.getLogger(__name__)

TRAINING_OFF_NOTE = ("not retrained on annotations: Label Studio's \"Start model training on annotation "
                     "submission\" is off for this project. Turn it on in the project's Settings > Model (API: "
                     "PATCH /api/projects/{id}/ {{\"start_training_on_annotation_update\": true}}), or retrain now "
                     "with Start Training on the model card. New tasks are still scored with the current version.")
TRAINING_UNKNOWN_NOTE = ("Label Studio's project carries no start_training_on_annotation_update field, so whether "
                         "its training toggle is on is unknown: retraining on every annotation")

COLDSTART_NOTE = ("cold start: fewer than 2 classes labeled ({n} so far), so there is no classifier yet; "
                  "the queue is ordered by CoreSet diversity over the pretrained encoder's embeddings")


Encoder = TextEncoder  # the text encoder lived here before project types were modules (disal.tasks)


@dataclass
class TaskIO:
    """How one project's tasks become features: its type's module, its encoder, and how its files are
    read (the project's Label Studio credentials). The job reads and encodes only through this."""

    module: TaskModule
    encoder: FeatureEncoder
    media: MediaFetcher | None
    settings: Settings

    def read(self, task: dict, spec: LabelSpec):
        return self.module.read_input(task, spec, self.settings)

    def encode(self, task_ids, inputs, **kw) -> Encoded:
        return self.encoder.encode(task_ids, inputs, media=self.media, **kw)


def nothing_readable(io: TaskIO, n_inputs: int, skipped: list[dict]) -> TaskInputError:
    """The error when every input failed to encode (Label Studio's files unreachable, a storage moved):
    a queue over nothing would replace a working one, so the job fails naming why and the previous
    version keeps serving."""
    first = skipped[0] if skipped else {"task": "-", "reason": "-"}
    return TaskInputError(first["task"], f"none of the project's {n_inputs} {io.encoder.unit} could be read or "
                                        f"decoded (first: {first['reason']}); the current queue keeps serving")


def log_skipped(project_id: int, what: str, task_ids: Sequence[int], failed: dict[int, str],
                skipped: list[dict], metrics: Metrics | None = None) -> None:
    """One log line per task whose input could not be encoded, and an entry for /health."""
    if metrics is not None and failed:
        metrics.skipped_inputs.labels(str(project_id)).inc(len(failed))
    for pos, reason in sorted(failed.items()):
        tid = task_ids[pos]
        log.warning("project %s: %s task %s skipped: %s", project_id, what, tid, reason)
        skipped.append({"task": tid, "reason": reason})


def _multi_hot(labels: Sequence[Sequence[str]], spec: LabelSpec) -> np.ndarray:
    index = spec.index()
    y = np.zeros((len(labels), spec.num_labels), dtype=np.float32)
    for r, ls in enumerate(labels):
        for label in ls:
            y[r, index[label]] = 1.0
    return y


def _strategy_base(name: str) -> str:
    return name.split(":", 1)[0].strip()


def partial_of(version: ModelVersion | None) -> dict | None:
    """{"encoded": n, "total": N} for a version pushed before its whole pool was encoded, else None."""
    if version is None:
        return None
    p = version.meta.get("partial")
    return dict(p) if p else None


def partial_note(encoded: int, total: int) -> str:
    return (f"encoded {encoded:,}/{total:,}; queue refines as encoding proceeds "
            f"(tasks not encoded yet have no prediction and sort last)")


class _Round:
    """One job's labels, head and regime; `publish` turns a pool (all of it, or the part encoded so
    far) into a scored, saved, pushed and served version. A progressive first round calls it a few
    times with growing pools; every other round once."""

    def __init__(self, job: "TrainingJob", project_id: int, ctx: JobContext, store: ProjectStore,
                 ls: LabelStudioClient, spec: LabelSpec, kind: str, head, traj, lab_ids: list[int],
                 lab_feats: np.ndarray, label_rows: dict[int, dict], meta: dict, note: str, total: int,
                 io: TaskIO, skipped: list[dict]) -> None:
        self.job, self.project_id, self.ctx, self.store, self.ls, self.spec = job, project_id, ctx, store, ls, spec
        self.kind, self.head, self.traj = kind, head, traj
        self.lab_ids, self.lab_feats, self.label_rows = lab_ids, lab_feats, label_rows
        self.meta, self.note, self.total = meta, note, total
        self.io = io
        self.skipped = skipped  # grows while a progressive round encodes: each version records it so far
        self.inputs: dict[int, object] = {}  # task id -> its input, for a regime that reads hidden states

    def note_for(self, partial: dict | None) -> str:
        return f"{partial_note(partial['encoded'], partial['total'])}; {self.note}" if partial else self.note

    def publish(self, pool_ids: list[int], pool_feats: np.ndarray, partial: dict | None
                ) -> tuple[ModelVersion, list[str]]:
        """Score, save, push; the version becomes current only after its push succeeded. Returns the
        version and tidy warnings."""
        job, s, ctx, store = self.job, self.job.settings, self.ctx, self.store
        project_id, lab_ids, lab_feats, spec = self.project_id, self.lab_ids, self.lab_feats, self.spec
        n = len(pool_ids)
        meta = {**self.meta, "created": time.time(), "pool": n,
                "skipped": {"count": len(self.skipped), "tasks": self.skipped[:50]}}
        if partial:
            meta["partial"] = dict(partial)
        strategy = make_strategy(s.strategy) if self.kind == "head" else CoreSet()
        ctx.set_state("scoring", 0, n, note=self.note_for(partial))
        t0 = time.time()
        priority: dict[int, float] = {}
        raw: dict[int, float] = {}
        centres: list[int] = []
        probs_by_id = None
        if n:
            if self.kind == "head":
                regime = job.regime_of(self.meta)
                states = None
                if regime.reads_states:
                    states = job.task_states(store, self.io, regime, pool_ids, [self.inputs[t] for t in pool_ids],
                                             ctx, what="pool")
                    meta["hidden_cache"] = job.hidden_cache_summary(states.cache)
                    ctx.set_state("scoring", 0, n, note=self.note_for(partial))
                inputs = regime.scoring_inputs(np.asarray(pool_ids), pool_feats, self.head, self.traj, lab_feats,
                                               strategy, spec.multi_label, s.seed, labeled_ids=lab_ids,
                                               states=states, progress=ctx.progress)
                probs_by_id = {t: inputs.probs[i] for i, t in enumerate(pool_ids)}
            else:
                from .strategies import ScoringInputs

                inputs = ScoringInputs(ids=np.asarray(pool_ids), features=pool_feats,
                                       labeled_features=lab_feats if len(lab_ids) else None)
            # a batch-aware strategy picks the queue's head (the rest follow by its score or distance): picking
            # the whole pool would cost O(N^2) at 10k tasks. DISAL-batch picks QUERY_BATCH, the batch it was
            # measured at (its candidates are 10x that); CoreSet and BADGE fill COLDSTART_BATCH
            if isinstance(strategy, DisalBatch):
                head_size = s.query_batch
            elif isinstance(strategy, (CoreSet, BADGE)):
                head_size = s.coldstart_batch
            else:
                head_size = n
            sel = strategy.select(inputs, min(n, head_size), seed=s.seed)
            priority, raw = priorities_from_selection(sel), sel.scores_by_id()
            if isinstance(strategy, (CoreSet, BADGE)):  # new tasks are placed by their distance to these
                centres = lab_ids + [int(i) for i in np.asarray(sel.selected).tolist()] \
                    if isinstance(strategy, CoreSet) else [int(i) for i in np.asarray(sel.selected).tolist()]
            ctx.progress(n, n)
        job._observe("score", t0)
        log.info("project %s: scored %d tasks with %s in %.2fs (%.0f tasks/s)", project_id, n, strategy.name,
                 time.time() - t0, n / max(time.time() - t0, 1e-9))

        round_no = store.next_round()
        name = store.version_name(round_no, self.kind)
        version = ModelVersion(name=name, round=round_no, kind=self.kind, spec=spec, labels=self.label_rows,
                               priority=priority, raw=raw, centres=centres, head=self.head, trajectory=self.traj,
                               meta=meta)
        store.save_version(version)

        job.push(project_id, ctx, store, self.ls, version, pool_ids, probs_by_id)
        store.set_current(version)  # the queue is live in Label Studio: serve this version from now on
        store.record_scored(pool_ids, name, replace=True)
        ctx.set_state("tidying", note="queue live; deleting older versions' predictions")
        warnings = job.tidy(project_id, store, self.ls, version)
        store.prune_versions()
        if job.metrics:
            job.metrics.queue_length.labels(str(project_id)).set(n)
        return version, warnings


class TrainingJob:
    """The runner the job manager calls: `job(project_id, request, ctx) -> summary`."""

    def __init__(self, settings: Settings, encoders: Encoders, store_for: Callable[[int], ProjectStore],
                 client_for: Callable[[int], LabelStudioClient], metrics: Metrics | None = None,
                 head_config: HeadConfig | None = None) -> None:
        self.settings = settings
        self.encoders = encoders
        self.store_for = store_for
        self.client_for = client_for
        self.metrics = metrics
        self.head_config = head_config or HeadConfig()
        self.regime = make_regime(settings.train_mode, settings.mlp_hidden, settings.mlp_lr)  # TRAIN_MODE
        self.webhook_ok: set[int] = set()  # projects whose webhook was seen carrying our basic auth
        # project id -> Label Studio's training toggle as the last job read it (None: the project has no such
        # field); /health shows it with the note of why annotations did not retrain
        self.training_toggle: dict[int, bool | None] = {}
        # a served head is shared by request threads; BALD's MC dropout flips it to train mode for a
        # moment, so head computations on a served version take turns (each takes milliseconds)
        self._head_lock = threading.Lock()
        # top-N: each project's hidden-state cache (on disk in its folder); the last few stay in memory
        self._hidden_caches: OrderedDict[tuple, HiddenStateCache] = OrderedDict()
        self._hidden_lock = threading.Lock()

    HIDDEN_CACHES_IN_MEMORY = 2

    def hidden_cache(self, store: ProjectStore, regime: Regime) -> HiddenStateCache:
        """The project's cache of hidden states for `regime` (top-N), bounded by HIDDEN_CACHE_MAX_MB /
        HIDDEN_CACHE_MAX_DISK_MB; kept in memory for the last HIDDEN_CACHES_IN_MEMORY projects."""
        key = (str(store.dir), regime.name)
        with self._hidden_lock:
            cache = self._hidden_caches.pop(key, None)
            if cache is None:
                cache = HiddenStateCache(regime.top_blocks, folder=store.dir / f"hidden-{regime.name}",
                                         max_bytes=self.settings.hidden_cache_max_mb * 1024**2,
                                         max_disk_bytes=self.settings.hidden_cache_max_disk_mb * 1024**2)
            self._hidden_caches[key] = cache
            while len(self._hidden_caches) > self.HIDDEN_CACHES_IN_MEMORY:
                self._hidden_caches.popitem(last=False)  # its files stay: the next round reloads them
            return cache

    def task_states(self, store: ProjectStore | None, io: TaskIO, regime: Regime, ids: Sequence, inputs: Sequence,
                    ctx: JobContext | None = None, what: str = "labeled") -> TaskStates:
        """TaskStates for a regime that reads hidden states: the project's cache filled for `ids` (a
        transient in-memory cache when `store` is None: /predict tasks may have no id)."""
        if store is None:
            cache = HiddenStateCache(regime.top_blocks, max_bytes=self.settings.hidden_cache_max_mb * 1024**2)
        else:
            cache = self.hidden_cache(store, regime)
        if ctx is not None:
            ctx.set_state("encoding", 0, len(ids), note=f"hidden states below the top {regime.top_blocks} block(s) "
                                                          f"of {len(ids):,} {what} texts")
        t0 = time.time()
        io.encoder.fill_hidden_cache(cache, list(ids), list(inputs), progress=ctx.progress if ctx else None)
        if ctx is not None:  # a job's phase; /predict's own fill is in its request time
            self._observe("encode", t0)
        return TaskStates(io.encoder.adapter, cache)

    @staticmethod
    def hidden_cache_summary(cache: HiddenStateCache) -> dict:
        return {"tasks": len(cache), "mb": round(cache.nbytes / 1e6, 1),
                "bytes_per_task": round(cache.bytes_per_task()), "max_mb": round(cache.max_bytes / 1024**2)}

    def encoder_runtime(self) -> dict[str, str | None]:
        """What computes each loaded encoder's features (ONNX Runtime or torch, and why), for /health."""
        return {t: getattr(e, "runtime", None) for t, e in self.encoders.built().items()}

    def warm_up(self) -> None:
        """Load the encoder and torch's optimizer machinery before the first event arrives.

        The first AdamW of a process imports torch._dynamo (2-8 s on a busy 2-core machine); paying
        it at start-up keeps the first annotation-to-queue time at the steady-state few seconds.
        """
        import torch

        t0 = time.time()
        self.encoders.for_type("text_classification").load()
        p = torch.zeros(1, requires_grad=True)
        torch.optim.AdamW([p], lr=0.1).step()
        log.info("warm-up done in %.1fs", time.time() - t0)

    # -- entry point -----------------------------------------------------------------------------
    def __call__(self, project_id: int, request: JobRequest, ctx: JobContext) -> dict:
        store = self.store_for(project_id)
        ls = self.client_for(project_id)
        t0 = time.time()
        project = ls.get_project(project_id)
        spec = parse_label_config(project.get("label_config") or "")
        io = self.task_io(spec, ls)
        self._observe("fetch", t0)
        warnings: list[str] = []
        self.ensure_webhook_auth(project_id, store, ls, warnings)
        summary: dict = {"outcome": "nothing to do"}
        current = store.current()
        self.respect_training_toggle(project_id, project, request, ctx, summary, warnings)
        if request.new_task_ids and current is not None and not current.priority:
            # the last queue was empty (no tasks yet): build a whole queue rather than placing tasks in nothing
            request.train = request.force = True
        # a partial first queue (pushed before its pool was encoded) is finished by whatever job comes next,
        # even one that would not retrain: otherwise it could stay partial
        finishing = partial_of(current) is not None
        if request.train or finishing or (request.initial and current is None):
            summary = self.train_round(project_id, request, ctx, store, ls, spec, io)
        elif request.initial:
            summary = {"outcome": "up to date", "version": current.name}
        if request.new_task_ids and summary.get("outcome") != "pushed":
            summary["new_tasks"] = self.score_new_tasks(project_id, request, ctx, store, ls, io)
            if summary["outcome"] == "nothing to do":
                summary["outcome"] = f"new tasks: {summary['new_tasks']['outcome']}"
        if project_id not in self.webhook_ok:  # connecting creates the webhook after /setup: look again
            self.ensure_webhook_auth(project_id, store, ls, warnings)
        summary["warnings"] = warnings + summary.get("warnings", [])
        # what /health shows beside the version; a worker process publishes them with the summary
        summary["training_on_annotation"] = self.training_toggle.get(project_id)
        summary["webhook_auth_ok"] = project_id in self.webhook_ok
        return summary

    def task_io(self, spec: LabelSpec, ls: LabelStudioClient | None) -> TaskIO:
        """The project's type module, its encoder, and a reader of its files with its credentials."""
        s = self.settings
        module = module_for(spec.task_type)
        media = None
        if module.reads_media:
            media = (ls.media_fetcher(s.image_fetch_timeout_s, s.image_max_bytes) if ls is not None
                     else MediaFetcher(None, None, timeout=s.image_fetch_timeout_s, max_bytes=s.image_max_bytes))
        return TaskIO(module, self.encoders.for_spec(spec), media, s)

    def respect_training_toggle(self, project_id: int, project: dict, request: JobRequest, ctx: JobContext,
                                summary: dict, warnings: list[str]) -> None:
        """Annotation events retrain only while the project's "Start model training on annotation
        submission" toggle is on; START_TRAINING (the Start Training button) always trains.

        Why read it here: the job fetches the project anyway, so a toggle flipped in the UI takes effect
        at the next event. Label Studio itself, with the toggle on, sends START_TRAINING after every
        annotation (tasks/models.py update_ml_backend); the webhook's annotation events say the same.
        """
        on = training_on_annotation(project)
        self.training_toggle[project_id] = on
        if on is None:
            warnings.append(TRAINING_UNKNOWN_NOTE)
            return
        if on or not request.train or "START_TRAINING" in request.reasons:
            return
        request.train = False
        note = TRAINING_OFF_NOTE.format(id=project_id)
        events = ", ".join(f"{k} x{v}" for k, v in sorted(request.reasons.items()) if k != "TASKS_CREATED")
        summary.update(outcome="not retrained: training on annotation is off in Label Studio", note=note)
        ctx.note(note)
        log.info("project %s: %s (events: %s)", project_id, note, events)

    def ensure_webhook_auth(self, project_id: int, store: ProjectStore, ls: LabelStudioClient,
                            warnings: list[str]) -> None:
        """With basic auth on, make sure annotation events can reach us (see LabelStudioClient)."""
        s = self.settings
        if not s.auth_enabled or project_id in self.webhook_ok:
            return
        hosts = list(store.load_info().get("backend_hosts") or [])
        if s.backend_url:
            hosts.append(httpx.URL(s.backend_url).netloc.decode())
        try:
            _, carrying = ls.ensure_webhook_auth(project_id, s.basic_auth_user, s.basic_auth_pass, hosts)
        except LabelStudioError as exc:
            warnings.append(str(exc))
            log.error("project %s: could not make the webhook carry basic auth: %s", project_id, exc)
            self._error("webhook_auth")
            return
        if carrying:
            self.webhook_ok.add(project_id)
        else:
            warnings.append(f"no webhook to {hosts} found yet: annotation events will get 401 until it carries "
                            "basic auth (set BACKEND_URL if Label Studio reaches this backend by another name)")

    # -- a training round ------------------------------------------------------------------------
    def train_round(self, project_id: int, request: JobRequest, ctx: JobContext, store: ProjectStore,
                    ls: LabelStudioClient, spec: LabelSpec, io: TaskIO) -> dict:
        s = self.settings
        current = store.current()
        ctx.set_state("fetching", note="fetching labeled tasks")
        t0 = time.time()
        labeled_tasks = ls.fetch_labeled_tasks(project_id, progress=ctx.progress)
        labels: dict[int, tuple[str, ...]] = {}
        texts: dict[int, object] = {}  # the module's inputs: texts, image references
        annotation_ids: dict[int, object] = {}
        dropped: dict[str, int] = {}
        for task in labeled_tasks:
            label, reason = task_label(task, spec)
            if label is None:
                dropped[reason] = dropped.get(reason, 0) + 1
                log.info("project %s: task %s not used for training: %s", project_id, task.get("id"), reason)
                continue
            try:
                text = io.read(task, spec)
            except TaskInputError as exc:
                dropped[f"no {io.module.input_word}"] = dropped.get(f"no {io.module.input_word}", 0) + 1
                log.warning("project %s: labeled %s: not used for training", project_id, exc)
                continue
            labels[label.task_id], texts[label.task_id] = label.labels, text
            annotation_ids[label.task_id] = label.annotation_id
        self._observe("fetch", t0)
        log.info("project %s: %d labeled tasks fetched, %d usable labels, dropped %s in %.2fs", project_id,
                 len(labeled_tasks), len(labels), dropped or "none", time.time() - t0)

        prev = current.labels if current else {}
        changed = sum(1 for t, ls_ in labels.items() if tuple(prev.get(t, {}).get("labels", ())) != ls_)
        changed += sum(1 for t in prev if t not in labels)
        spec_changed = current is None or current.spec != spec
        # a partial first queue is never "up to date": the round goes on encoding and refining it
        if not request.force and not spec_changed and partial_of(current) is None:
            if changed == 0:
                ctx.note(f"up to date with {len(labels)} labels")
                return {"outcome": "up to date", "version": current.name, "labels": len(labels)}
            if changed < s.min_annotations_to_train:
                note = (f"waiting: {changed} new or changed label(s), retraining at "
                        f"{s.min_annotations_to_train} (MIN_ANNOTATIONS_TO_TRAIN)")
                ctx.note(note)
                log.info("project %s: %s", project_id, note)
                return {"outcome": "waiting for annotations", "changed": changed, "version": current.name}

        ctx.set_state("fetching", note="fetching unlabeled tasks")
        t0 = time.time()
        pool_tasks = ls.fetch_unlabeled_tasks(project_id, progress=ctx.progress)
        pool_ids: list[int] = []
        pool_texts: list = []
        skipped_pool = []
        skipped: list[dict] = []  # tasks whose input could not be read or encoded, with the reason
        for task in pool_tasks:
            tid = int(task["id"])
            if tid in labels:
                continue
            try:
                pool_texts.append(io.read(task, spec))
                pool_ids.append(tid)
            except TaskInputError as exc:
                skipped_pool.append(tid)
                skipped.append({"task": tid, "reason": str(exc).split(": ", 1)[-1]})
                log.warning("project %s: unlabeled %s: not scored", project_id, exc)
        self._observe("fetch", t0)
        log.info("project %s: %d unlabeled tasks fetched (%d without %s) in %.2fs", project_id, len(pool_tasks),
                 len(skipped_pool), io.module.input_word, time.time() - t0)
        unreadable = dropped.get(f"no {io.module.input_word}", 0) + len(skipped_pool)
        if unreadable and not labels and not pool_ids:
            # every task lacks what the config reads (e.g. an <Image> config over text data): a queue over
            # nothing would replace a working one, so the job fails and the previous version keeps serving
            raise TaskInputError(skipped[0]["task"] if skipped else "-",
                                 f"none of the project's {unreadable} tasks has a usable {io.module.input_word} in "
                                 f"data field {spec.value_field!r}, which the label config's <{io.module.object_tag} "
                                 f"name=\"{spec.to_name}\"> reads (first: {skipped[0]['reason'] if skipped else '-'})")

        lab_ids = sorted(labels)
        lab_texts = [texts[t] for t in lab_ids]
        total = len(lab_ids) + len(pool_ids)
        # The first round of a project (or one that finishes a partial first queue) pushes a queue
        # over what is encoded after FIRST_QUEUE_SECONDS, then refines it; a round on a complete
        # queue encodes only what is new (usually nothing: the cache holds the pool) and pushes once.
        progressive = current is None or partial_of(current) is not None
        ctx.set_state("encoding", 0, total, note=f"encoding {total:,} {io.encoder.unit}")
        t0 = time.time()
        if progressive:
            enc = io.encode(lab_ids, lab_texts, progress=lambda d, _n: ctx.progress(d, total))
            pool_feats = None
        else:
            enc = io.encode(lab_ids + pool_ids, lab_texts + pool_texts,
                            progress=lambda d, n: ctx.progress(total - n + d, total))
            pool_feats = enc.features[len(lab_ids):]
        self._observe("encode", t0)
        lab_feats = enc.features[: len(lab_ids)]
        if enc.failed:  # a bad input costs its task, never the round
            ok = enc.ok()
            if not ok.any():
                log_skipped(project_id, "every", lab_ids + (pool_ids if pool_feats is not None else []),
                            enc.failed, skipped, self.metrics)
                raise nothing_readable(io, len(ok), skipped)
            log_skipped(project_id, "labeled", lab_ids, {p: r for p, r in enc.failed.items() if p < len(lab_ids)},
                        skipped, self.metrics)
            lab_ok = ok[: len(lab_ids)]
            lab_ids, lab_feats = [t for t, k in zip(lab_ids, lab_ok) if k], lab_feats[lab_ok]
            if (~lab_ok).any():
                dropped[f"unreadable {io.module.input_word}"] = int((~lab_ok).sum())
            if pool_feats is not None:
                n_lab = len(lab_ok)
                log_skipped(project_id, "unlabeled", pool_ids,
                            {p - n_lab: r for p, r in enc.failed.items() if p >= n_lab}, skipped, self.metrics)
                pool_ok = ok[n_lab:]
                skipped_pool += [t for t, k in zip(pool_ids, pool_ok) if not k]
                pool_ids, pool_feats = [t for t, k in zip(pool_ids, pool_ok) if k], pool_feats[pool_ok]

        first_round = store.next_round()
        classes = sorted({c for t in lab_ids for c in labels[t]})
        label_rows = {t: {"labels": list(labels[t]), "annotation": annotation_ids[t],
                          "round": prev[t]["round"] if t in prev and tuple(prev[t]["labels"]) == labels[t]
                          else first_round}
                      for t in lab_ids}
        meta = {"labels": len(lab_ids), "classes": classes, "encoder": io.encoder.model_id, "changed": changed,
                "dropped": dropped, "skipped_pool_tasks": skipped_pool[:50], "task_type": spec.task_type}
        head = traj = None
        if len(classes) >= 2:
            kind = "head"
            # no step counts: the head trains in well under a second, and a bar stuck at 0/150 misleads
            ctx.set_state("training", note=f"training the head on {len(lab_ids)} labels")
            t0 = time.time()
            if spec.multi_label:
                targets = _multi_hot([labels[t] for t in lab_ids], spec)
            else:
                index = spec.index()
                targets = np.asarray([index[labels[t][0]] for t in lab_ids], dtype=np.int64)
            regime = self.regime
            why = regime.unsupported(io.encoder)
            if why:  # e.g. top-N on an image project: said in the log, /health and the version's meta
                log.warning("project %s: %s", project_id, why)
                meta["regime_note"] = why
                regime = HeadRegime()
            states = None
            if regime.reads_states:
                states = self.task_states(store, io, regime, lab_ids, [texts[t] for t in lab_ids], ctx)
                ctx.set_state("training", note=f"training {regime.name} on {len(lab_ids)} labels")
                t0 = time.time()  # the fill is the encode phase, not training
            init = None
            if (s.warm_start and current is not None and current.has_classifier and current.spec == spec
                    and current.meta.get("encoder") == io.encoder.model_id):  # another MODEL_NAME: start fresh
                init = regime.warm_start(current.head, current.meta.get("regime") or "head", lab_feats.shape[1],
                                         spec.num_labels)
            config = self.head_config
            if reads_only_last_checkpoint(make_strategy(s.strategy)):  # the default: theta_0 and theta_K suffice
                config = replace(config, num_checkpoints=1)
            head, traj = regime.train(lab_feats, targets, spec.num_labels, spec.multi_label, config,
                                      seed=s.seed, init=init, device=s.device, ids=lab_ids, states=states)
            self._observe("train", t0)
            log.info("project %s: %s trained on %d labels (%d classes) in %.2fs%s", project_id, regime.name,
                     len(lab_ids), len(classes), time.time() - t0,
                     f", warm-started from {current.name}" if init is not None else "")
            meta.update(regime=regime.name, warm_start=init is not None)
            strategy_name = make_strategy(s.strategy).name
            meta.update(strategy=strategy_name, trained_seconds=round(time.time() - t0, 3))
            # the learning curve's point for this round (milliseconds: disal.learning_curve)
            meta["accuracy_estimate"] = loo_accuracy(lab_feats, targets, spec.num_labels, spec.multi_label)
            note = f"serving {strategy_name} queue from {len(lab_ids)} labels"
        else:
            kind = "coldstart"
            note = COLDSTART_NOTE.format(n=len(classes))
            meta.update(strategy="coreset", cold_start=True)
            log.info("project %s: %s", project_id, note)

        round_ = _Round(self, project_id, ctx, store, ls, spec, kind, head, traj, lab_ids, lab_feats, label_rows,
                        meta, note, total, io, skipped)
        round_.inputs = {**dict(zip(pool_ids, pool_texts)), **{t: texts[t] for t in lab_ids}}
        if not progressive:
            version, warnings = round_.publish(pool_ids, pool_feats, None)
            summary_extra: dict = {}
        else:
            version, warnings, summary_extra = self._progressive(round_, current, pool_ids, pool_texts)
        if version.meta.get("accuracy_estimate"):
            LearningCurve(store.dir).append(version.name, len(lab_ids), version.meta["accuracy_estimate"])
        ctx.note(round_.note_for(version.meta.get("partial")))
        if self.metrics:
            self.metrics.trainings.labels(str(project_id), kind).inc()
            self.metrics.labeled.labels(str(project_id)).set(len(lab_ids))
        if meta.get("regime_note"):
            warnings = [meta["regime_note"]] + warnings
        return {"outcome": "pushed", "version": version.name, "kind": kind, "labels": len(lab_ids),
                "pool": len(version.priority), "cold_start": kind == "coldstart", "warnings": warnings,
                **summary_extra}

    def _progressive(self, round_: "_Round", current: ModelVersion | None, pool_ids: list[int],
                     pool_texts: list[str]) -> tuple[ModelVersion, list[str], dict]:
        """Encode the pool in chunks, pushing a queue over the encoded tasks at growing sizes.

        Why: encoding a 10k pool takes 4-12 minutes on 2 cores, and no queue at all meanwhile is the
        worst first impression. The first push comes after FIRST_QUEUE_SECONDS of encoding (at once
        when a partial queue already serves: a retrain then starts from the cached features), the
        next ones each at REFINE_GROWTH times more encoded tasks, the last over the whole pool. The
        encoding order is a seeded random permutation, so every partial queue covers the whole pool
        rather than, say, its shortest texts. Tasks not encoded yet get no prediction: Label Studio
        sorts them last, and /health says the queue is partial. Once this job has pushed and encoded
        for FIRST_QUEUE_SECONDS, a waiting retrain (an annotation) makes it stop: the retrain runs
        on everything cached so far and goes on encoding from there.
        """
        s, ctx, io = self.settings, round_.ctx, round_.io
        enc, unit = io.encoder, io.encoder.unit
        n_lab, total = len(round_.lab_ids), round_.total
        found, missing = enc.lookup(pool_ids, pool_texts)
        pool_feats = np.zeros((len(pool_ids), enc.dim), dtype=np.float32)
        have = np.zeros(len(pool_ids), dtype=bool)
        bad = np.zeros(len(pool_ids), dtype=bool)  # inputs that could not be encoded: skipped, never scored
        for i, tid in enumerate(pool_ids):
            vec = found.get(tid)
            if vec is not None:
                pool_feats[i], have[i] = vec, True
        todo = np.random.default_rng(s.seed).permutation(np.asarray(missing, dtype=np.int64))
        budget = s.first_queue_seconds if current is None else 0.0
        bs = s.encode_batch_size
        log.info("project %s: first queue: %d of %d pool tasks cached, %d to encode; pushing after %.0fs of "
                 "encoding, then at x%g more", round_.project_id, int(have.sum()), len(pool_ids), len(todo),
                 budget, s.refine_growth)
        t_start = last_log = time.time()
        received, encoded_here, next_at = 0, 0, 0
        pushed: list[str] = []
        warnings: list[str] = []

        def progress_base() -> int:
            return n_lab + int(have.sum())

        # 4 batches (~4-8 s on 2 cores): the granularity of the first push and of handing over
        chunks = self.encode_chunks(round_.project_id, ctx, io, round_.spec, pool_ids, pool_texts, todo, 4 * bs,
                                    progress_base, total)
        # a sharded pool's board is closed on every way out: helpers stop after their current shard
        with contextlib.closing(chunks):
            version = None
            while received < len(todo):
                n_have = int(have.sum())
                elapsed = time.time() - t_start
                rate = encoded_here / elapsed if encoded_here and elapsed > 0 else None
                if pushed and encoded_here and elapsed >= s.first_queue_seconds and ctx.train_pending():
                    # no push of our own first: the waiting retrain pushes over everything cached at once
                    enc.cache.save()
                    log.info("project %s: a retrain is waiting: stopping after %d partial push(es) at %d/%d tasks "
                             "encoded; it goes on from the %d cached pool features", round_.project_id, len(pushed),
                             n_lab + n_have, total, n_have)
                    return version, warnings, {"partial": version.meta["partial"], "pushes": pushed,
                                               "handed_over": True, "encoded": n_lab + n_have}
                if not pushed:
                    # skip a partial push the rest of the pool would make obsolete within a quarter of the budget
                    left_s = (len(todo) - received) / rate if rate else float("inf")
                    due = n_have > 0 and elapsed >= budget and not (budget > 0 and left_s < budget / 4)
                else:
                    due = n_have >= next_at
                if due:
                    enc.cache.save()  # a crash or a restart resumes from here (the cache persists per task id)
                    sel = np.flatnonzero(have)
                    partial = {"encoded": n_lab + n_have, "total": total}
                    version, w = round_.publish([pool_ids[i] for i in sel], pool_feats[sel], partial)
                    warnings += w
                    pushed.append(version.name)
                    next_at = int(np.ceil(n_have * s.refine_growth))
                    log.info("project %s: partial queue %s pushed over %d/%d tasks after %.1fs of encoding "
                             "(%s %s/s); next push at %d encoded", round_.project_id, version.name, n_lab + n_have,
                             total, time.time() - t_start, f"{rate:.0f}" if rate else "-", unit,
                             n_lab + min(next_at, len(pool_ids)))
                ctx.set_state("encoding", n_lab + n_have, total, note=partial_note(n_lab + n_have, total) if pushed
                              else f"encoding {total:,} {unit}; first queue after {budget:.0f}s of encoding")
                t0 = time.time()
                chunk, res = next(chunks)
                received += len(chunk)
                self._observe("encode", t0)
                ok = res.ok()
                if res.failed:
                    log_skipped(round_.project_id, "unlabeled", [pool_ids[i] for i in chunk], res.failed,
                                round_.skipped, self.metrics)
                    bad[chunk[~ok]] = True
                pool_feats[chunk[ok]], have[chunk[ok]] = res.features[ok], True
                encoded_here += len(chunk)
                ctx.progress(n_lab + int(have.sum()), total)
                if time.time() - last_log > 10:
                    last_log = time.time()
                    log.info("project %s: encoding: %d/%d tasks (%.0f %s/s, %d skipped)", round_.project_id,
                             n_lab + int(have.sum()), total, encoded_here / max(last_log - t_start, 1e-9), unit,
                             int(bad.sum()))
            if encoded_here:
                enc.cache.save()
                log.info("project %s: encoded %d %s in %.1fs (%.0f %s/s), %d skipped", round_.project_id, encoded_here,
                         unit, time.time() - t_start, encoded_here / max(time.time() - t_start, 1e-9), unit,
                         int(bad.sum()))
            keep = np.flatnonzero(~bad)
            if not len(keep) and bad.any() and not round_.lab_ids:
                raise nothing_readable(io, int(bad.sum()), round_.skipped)
            version, w = round_.publish([pool_ids[i] for i in keep], pool_feats[keep], None)
            pushed.append(version.name)
            return version, warnings + w, ({"pushes": pushed} if len(pushed) > 1 else {})

    # -- encoding a pool, alone or sharded across workers (disal.pool_shards) --------------------------
    def encode_chunks(self, project_id: int, ctx: JobContext, io: TaskIO, spec: LabelSpec, ids: Sequence[int],
                      inputs: Sequence, order: np.ndarray, size: int, progress_base: Callable[[], int],
                      total: int) -> Iterator[tuple[np.ndarray, Encoded]]:
        """Yield (positions, Encoded) until every position in `order` is encoded.

        With at least SHARD_MIN_TASKS positions and other live worker processes, the positions go on
        a shard board that every worker takes from (this job's worker too); otherwise this job
        encodes them alone, `size` at a time. Either way the features are the same encoder's."""
        s = self.settings

        def encode_here(chunk: np.ndarray) -> Encoded:
            base = progress_base()
            return io.encode([ids[i] for i in chunk], [inputs[i] for i in chunk], save=False, log_summary=False,
                             progress=lambda d, _n: ctx.progress(base + d, total))

        board = None
        if len(order) >= s.shard_min_tasks:
            try:
                board = ctx.open_shards(spec=spec.as_dict(), task_ids=ids, inputs=inputs, order=order,
                                        size=s.shard_size)
            except Exception as exc:  # noqa: BLE001 - the store is down: this job encodes alone, and says so
                log.warning("project %s: could not share the pool's encoding with other workers (%s: %s): "
                            "encoding all %d here", project_id, type(exc).__name__, exc, len(order))
        if board is None:
            for pos in range(0, len(order), size):
                chunk = order[pos: pos + size]
                yield chunk, encode_here(chunk)
            return
        yield from encode_sharded(board, encode_here,
                                  lambda chunk, failed: self._gathered(project_id, io, ids, inputs, chunk, failed))

    def _gathered(self, project_id: int, io: TaskIO, ids: Sequence[int], inputs: Sequence, chunk: np.ndarray,
                  failed: dict[int, str]) -> Encoded:
        """A shard another worker encoded: its features, read back from the shared feature cache."""
        sid = [ids[i] for i in chunk]
        sin = [inputs[i] for i in chunk]
        found, missing = io.encoder.lookup(sid, sin)
        feats = np.zeros((len(chunk), io.encoder.dim), dtype=np.float32)
        for k, tid in enumerate(sid):
            if tid in found:
                feats[k] = found[tid]
        lost = [k for k in missing if k not in failed]
        if lost:
            log.warning("project %s: %d of a shard's %d features are not in the shared feature cache (is "
                        "MODEL_DIR shared by every worker?): encoding them here", project_id, len(lost), len(sid))
            res = io.encode([sid[k] for k in lost], [sin[k] for k in lost], save=False, log_summary=False)
            for j, k in enumerate(lost):
                if j in res.failed:
                    failed[k] = res.failed[j]
                else:
                    feats[k] = res.features[j]
        return Encoded(feats, dict(failed))

    def encode_shard(self, shard: Shard) -> dict[int, str]:
        """A worker's part of another job's pool (disal.pool_shards.ShardHelper): encode the shard
        into the shared feature cache; return the positions that could not be read, with why."""
        spec = LabelSpec.from_dict(shard.meta["spec"])
        ls = self.client_for(int(shard.meta["project"])) if module_for(spec.task_type).reads_media else None
        io = self.task_io(spec, ls)
        t0 = time.time()
        res = io.encode(shard.task_ids, shard.inputs, save=True, log_summary=False)
        self._observe("encode", t0)
        return dict(res.failed)

    # -- push ------------------------------------------------------------------------------------
    def push(self, project_id: int, ctx: JobContext, store: ProjectStore, ls: LabelStudioClient,
             version: ModelVersion, pool_ids: list[int], probs_by_id: dict | None) -> None:
        """Import the predictions of the queue's first PUSH_TOP_K tasks in chunks, then point
        project.model_version at them.

        Both must succeed, or the job fails and the previous version keeps serving (a partial
        import is removed with the other old versions by the next successful round). Why not the
        whole pool: Label Studio imports ~500 predictions/s and deletes the old version's at a
        few hundred/s, so at 10k+ tasks the push would dominate every round; annotators only ever
        reach the head of the queue, and a task without a current prediction sorts last.
        """
        ids = top_of_queue(pool_ids, version.priority, self.settings.push_top_k)
        ctx.set_state("pushing", 0, len(ids))
        t0 = time.time()
        preds = predictions_for(ids, version.spec, version.priority, version.name, probs_by_id)
        ls.import_predictions(project_id, preds, self.settings.push_chunk_size, progress=ctx.progress)
        ls.set_model_version(project_id, version.name)
        if self.metrics:
            self.metrics.predictions_pushed.labels(str(project_id)).inc(len(preds))
        self._observe("push", t0)
        log.info("project %s: pushed %d predictions of %s (queue head %d of %d tasks) in %.2fs (%.0f/s)", project_id,
                 len(preds), version.name, len(ids), len(pool_ids), time.time() - t0,
                 len(preds) / max(time.time() - t0, 1e-9))

    def tidy(self, project_id: int, store: ProjectStore, ls: LabelStudioClient, version: ModelVersion) -> list[str]:
        """Delete older versions' predictions, ensure the view, switch sampling. Returns warnings.

        Each step is repeated by the next round, so a failure here is a warning in /health, not a
        failed job: the queue is already live.
        """
        s = self.settings
        t0 = time.time()
        steps = []
        if s.delete_old_versions:
            steps.append(("delete old versions", lambda: self.delete_superseded(project_id, store, ls, version)))
        steps.append(("ensure the DISAL queue view", lambda: ls.ensure_queue_view(project_id)))
        extra = store.load_info().get("extra_params") or {}
        if s.use_uncertainty_sampling or str(extra.get("use_uncertainty_sampling", "")).lower() in ("1", "true", "yes"):
            steps.append(("switch to uncertainty sampling", lambda: ls.set_uncertainty_sampling(project_id)))
        warnings = []
        for what, fn in steps:
            try:
                fn()
            except LabelStudioError as exc:
                warnings.append(f"{what}: {exc}")
                log.error("project %s: could not %s: %s", project_id, what, exc)
                self._error("tidy")
        self._observe("tidy", t0)
        return warnings

    def delete_superseded(self, project_id: int, store: ProjectStore, ls: LabelStudioClient,
                          current: ModelVersion) -> list[str]:
        """Delete the predictions of versions superseded more than OLD_VERSIONS_GRACE_S ago; returns them.

        Why not every older version at once: a task open in Label Studio's UI was started from a
        prediction of the version current when it opened, and Label Studio refuses its Submit (400
        parent_prediction) once that prediction is gone. The superseded-at ledger lives in the store
        (superseded.json), so a restart keeps the grace; it is saved before anything is deleted.
        """
        grace = self.settings.old_versions_grace_s
        plan = ls.delete_old_versions(project_id, keep=current.name, superseded=store.load_superseded(),
                                      now=store.clock(), grace_s=grace,
                                      on_plan=lambda p: store.save_superseded(p.superseded))
        if plan.delete:  # all deleted (a failure raises above and leaves them due in the saved ledger)
            store.save_superseded({k: t for k, t in plan.superseded.items() if k not in plan.delete})
            log.info("project %s: deleted predictions of %d version(s) superseded over %.0fs ago: %s", project_id,
                     len(plan.delete), grace, ", ".join(plan.delete))
        if plan.waiting:
            log.info("project %s: keeping predictions of %d superseded version(s) for open tasks; next deletion "
                     "in %.0fs (OLD_VERSIONS_GRACE_S=%.0f)", project_id, len(plan.waiting),
                     min(plan.waiting.values()), grace)
        return plan.delete

    # -- new tasks -------------------------------------------------------------------------------
    def score_new_tasks(self, project_id: int, request: JobRequest, ctx: JobContext, store: ProjectStore,
                        ls: LabelStudioClient, io: TaskIO) -> dict:
        """TASKS_CREATED: place the new tasks into the current queue and push only them."""
        version = store.current()
        ids = sorted(int(t) for t in request.new_task_ids)
        if version is None:
            return {"outcome": "no version yet", "tasks": len(ids)}
        scored = store.load_scored()
        ids = [t for t in ids if scored.get(t) != version.name and t not in version.labels]
        if not ids:
            return {"outcome": "already scored", "tasks": 0}
        ctx.set_state("scoring", 0, len(ids), note=f"scoring {len(ids)} new tasks with {version.name}")
        tasks = request.new_tasks
        texts, keep = [], []
        for tid in ids:
            task = tasks.get(tid) or ls.get_task(tid)
            try:
                texts.append(io.read(task, version.spec))
                keep.append(tid)
            except TaskInputError as exc:
                log.warning("project %s: new %s: not scored", project_id, exc)
        t0 = time.time()
        inputs_by_id = dict(zip(keep, texts))
        if keep:
            # one chunk when this worker encodes alone; shards for every live worker on a large import
            feats = np.zeros((len(keep), io.encoder.dim), dtype=np.float32)
            ok = np.zeros(len(keep), dtype=bool)
            failed: dict[int, str] = {}
            done = [0]
            for chunk, res in self.encode_chunks(project_id, ctx, io, version.spec, keep, texts,
                                                 np.arange(len(keep)), len(keep), lambda: done[0], len(keep)):
                good = res.ok()
                feats[chunk[good]], ok[chunk[good]] = res.features[good], True
                failed.update({int(chunk[k]): why for k, why in res.failed.items()})
                done[0] += len(chunk)
                ctx.progress(done[0], len(keep))
            io.encoder.cache.save()
            log.info("project %s: %d new tasks encoded in %.1fs (%.0f tasks/s), %d skipped", project_id, len(keep),
                     time.time() - t0, len(keep) / max(time.time() - t0, 1e-9), len(failed))
            if failed:
                log_skipped(project_id, "new", keep, failed, [], self.metrics)
            keep, feats = [t for t, k in zip(keep, ok) if k], feats[ok]
        if not keep:
            return {"outcome": "no scorable tasks", "tasks": 0}
        priorities, probs = self.place(version, keep, feats, inputs=[inputs_by_id[t] for t in keep], store=store)
        self._observe("score", t0)
        ctx.set_state("pushing", 0, len(keep))
        preds = predictions_for(keep, version.spec, dict(zip(keep, priorities)), version.name,
                                None if probs is None else dict(zip(keep, probs)))
        ls.import_predictions(project_id, preds, self.settings.push_chunk_size, progress=ctx.progress)
        store.record_scored(keep, version.name)
        if self.metrics:
            self.metrics.predictions_pushed.labels(str(project_id)).inc(len(preds))
        log.info("project %s: pushed %d new-task predictions of %s", project_id, len(preds), version.name)
        return {"outcome": "pushed", "tasks": len(keep), "version": version.name}

    # -- placing tasks into an existing queue (also used by /predict) ------------------------------
    def place(self, version: ModelVersion, task_ids: Sequence[int | None], feats: np.ndarray,
              inputs: Sequence | None = None, store: ProjectStore | None = None
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """(priorities, probabilities or None) for tasks scored against `version`'s queue.

        Tasks the version already ranked keep their pushed priority; others get a raw score from
        the version's strategy and are placed by `priority_from_reference`. A top-N version reads
        the tasks' `inputs` (their hidden states: cached in the project's cache when `store` is given
        and every task has an id, else in a transient one).
        """
        regime = self.regime_of(version.meta)
        states, keys = None, np.arange(len(task_ids))
        if version.has_classifier and regime.reads_states:
            if inputs is None:
                raise ValueError(f"{version.name} is a {regime.name} version: placing tasks needs their texts")
            keyed = store is not None and all(t is not None for t in task_ids)
            if keyed:
                keys = np.asarray([int(t) for t in task_ids])
            io = self.task_io(version.spec, None)
            states = self.task_states(store if keyed else None, io, regime, keys.tolist(), inputs, what="new")
        with self._head_lock:
            return self._place(version, task_ids, feats, regime, keys, states)

    def _place(self, version: ModelVersion, task_ids: Sequence[int | None], feats: np.ndarray, regime: Regime,
               keys: np.ndarray, states: TaskStates | None) -> tuple[np.ndarray, np.ndarray | None]:
        feats = np.asarray(feats, dtype=np.float32)
        probs = None
        if version.has_classifier:
            probs = probabilities(regime.logits(version.head, feats, keys, states), version.spec.multi_label)
        out = np.empty(len(task_ids))
        todo = []
        for i, tid in enumerate(task_ids):
            if tid is not None and int(tid) in version.priority:
                out[i] = version.priority[int(tid)]
            else:
                todo.append(i)
        if todo:
            raw = self.raw_scores(version, feats[todo], probs[todo] if probs is not None else None, keys[todo],
                                  states)
            out[todo] = priority_from_reference(raw, version.reference_scores())
        return out, probs

    def regime_of(self, meta: dict) -> Regime:
        """The regime a version was trained in (versions before TRAIN_MODE: head), whatever TRAIN_MODE is now."""
        name = meta.get("regime") or "head"
        return self.regime if name == self.regime.name else make_regime(name, self.settings.mlp_hidden,
                                                                         self.settings.mlp_lr)

    def raw_scores(self, version: ModelVersion, feats: np.ndarray, probs: np.ndarray | None,
                   keys: np.ndarray | None = None, states: TaskStates | None = None) -> np.ndarray:
        base = "coreset" if version.kind == "coldstart" else _strategy_base(version.meta.get("strategy", "disal"))
        regime = self.regime_of(version.meta)
        if base in ("coreset", "badge"):
            cache = self.encoders.for_spec(version.spec).cache
            centre_feats = [cache.get(c) for c in version.centres]
            missing = [c for c, f in zip(version.centres, centre_feats) if f is None]
            if missing:
                raise RuntimeError(f"{version.name}: features of queue centre tasks {missing[:5]} are not cached; "
                                   "retrain to rebuild the queue")
            centres = np.stack(centre_feats).astype(np.float32) if centre_feats else np.zeros((0, feats.shape[1]),
                                                                                               np.float32)
            c_probs = (probabilities(head_logits(version.head, centres).astype(np.float64), version.spec.multi_label)
                       if base == "badge" else None)
            if version.has_classifier:  # distances where the version's classifier measured them (mlp: its hidden layer)
                feats, centres = regime.penultimate(version.head, feats), regime.penultimate(version.head, centres)
            feats, centres = np.asarray(feats, np.float64), np.asarray(centres, np.float64)
            if base == "coreset":
                return sq_dists_to_nearest(feats, centres)
            r, h = badge_embedding_norms_and_gram_factors(probs, feats, version.spec.multi_label)
            if not len(centres):
                return (r**2).sum(1) * (h**2).sum(1)
            rc, hc = badge_embedding_norms_and_gram_factors(c_probs, centres, version.spec.multi_label)
            return badge_sq_dists(r, h, rc, hc).min(axis=1)
        strategy = make_strategy(version.meta.get("strategy", self.settings.strategy))
        keys = np.arange(len(feats)) if keys is None else keys
        inputs = regime.scoring_inputs(keys, feats, version.head, version.trajectory, None, strategy,
                                       version.spec.multi_label, self.settings.seed, states=states)
        try:
            return np.asarray(strategy.score(inputs), dtype=np.float64)
        except EmptyPoolError:
            return np.zeros(len(feats))

    # -- helpers ---------------------------------------------------------------------------------
    def _observe(self, phase: str, t0: float) -> None:
        if self.metrics:
            self.metrics.phase_seconds.labels(phase).observe(time.time() - t0)

    def _error(self, where: str) -> None:
        if self.metrics:
            self.metrics.errors.labels(where).inc()
