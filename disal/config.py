"""Every setting of the backend, read from the environment in one place.

Why one frozen dataclass: the server, the jobs and the Label Studio client all receive the same
`Settings` object, so a test builds one with `Settings(...)` and nothing reads `os.environ` behind
its back. Secrets (`label_studio_api_key`, `basic_auth_pass`) are excluded from `repr` so a settings
object that reaches a log line never carries them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class ConfigError(ValueError):
    """An environment variable has a value the backend cannot use."""


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true/false)")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    return value


def _str(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip()


#: the backend's STRATEGY unless set (docs/benchmarks.md, protocol v2: the DISAL configuration that no strategy
#: or peer beats beyond noise on BBC, R8 and R52)
DEFAULT_STRATEGY = "disal-batch:pick=centroid:embedding=features:beta=25:last_checkpoint_only=true:dynamic=none:lam=0"


@dataclass(frozen=True)
class Settings:
    """Backend settings. Environment variable = field name in upper case (see `ENV_DOC`)."""

    label_studio_url: str | None = None
    label_studio_api_key: str | None = field(default=None, repr=False)
    model_dir: Path = Path("model_dir")
    model_name: str | None = None
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = field(default=None, repr=False)
    min_annotations_to_train: int = 1
    use_uncertainty_sampling: bool = False
    # the measured winner of protocol v2 (docs/benchmarks.md): DISAL's static form (the last checkpoint's
    # projection on theta_K - theta_0) ranks the pool, its top 25 x QUERY_BATCH are clustered by their features,
    # and the task nearest each k-means centre heads the queue
    strategy: str = DEFAULT_STRATEGY
    push_chunk_size: int = 500
    push_top_k: int = 1000  # 0 = the whole pool every round
    log_level: str = "INFO"
    page_size: int = 500
    max_length: int = 128
    encode_batch_size: int = 32
    max_text_chars: int = 20_000
    coldstart_batch: int = 500
    query_batch: int = 20  # disal-batch: the diverse picks at the queue's head each round (the protocol's batch)
    delete_old_versions: bool = True
    # a superseded version's predictions stay this long: a task open in the UI was started from one of
    # them (Submit sends parent_prediction), and deleting it makes Label Studio refuse the annotation
    old_versions_grace_s: float = 7200.0
    ls_timeout: float = 30.0
    ls_retries: int = 4
    ls_backoff: float = 0.5
    seed: int = 0
    backend_url: str | None = None
    torch_threads: int = 0  # 0 = auto: half the cores, at most 4
    # hostile input and slow clients (README "Security"): /predict must never starve /webhook
    predict_concurrency: int = 2  # /predict requests computing at once; more wait PREDICT_WAIT_S, then 503
    predict_wait_s: float = 1.0
    predict_max_tasks: int = 1000  # tasks per /predict request (413 beyond)
    max_predict_bytes: int = 32 * 1024 * 1024
    max_webhook_bytes: int = 16 * 1024 * 1024  # Label Studio batches up to 5,000 tasks in one TASKS_CREATED
    max_request_bytes: int = 2 * 1024 * 1024  # /setup (a label config) and every other route
    max_json_depth: int = 64
    request_timeout_s: float = 5.0  # a client must send its whole request within this (gunicorn worker)
    setup_verify_timeout_s: float = 2.0  # Label Studio gives /setup 3 s (ML_TIMEOUT_SETUP)
    first_queue_seconds: float = 20.0  # encoding before a project's first queue is pushed over what is encoded
    refine_growth: float = 4.0  # later pushes of that first round wait for this many times more encoded tasks
    # the training regime (disal.training.regimes): head (linear, the default), mlp (one hidden layer) or
    # top-N (the text encoder's last N blocks + head, from hidden states cached per task)
    train_mode: str = "head"
    warm_start: bool = False  # theta_0 of a round = the previous round's model (same regime and labels)
    mlp_hidden: int = 256
    mlp_lr: float = 0.003
    hidden_cache_max_mb: int = 4096  # top-N: a project's hidden states held in memory, at most
    hidden_cache_max_disk_mb: int = 16384  # top-N: ... and kept on disk in its folder, at most
    device: str = "auto"  # where encoders and heads run: auto (CUDA when present), cpu, cuda, cuda:N
    # what computes the text encoder's features on a CPU (disal.training.onnx_features): onnx, torch, or
    # auto (onnx where it loads, else torch, saying why)
    encoder_runtime: str = "auto"
    onnx_dir: Path | None = None  # where exported encoder graphs are kept (default MODEL_DIR/onnx)
    # the durable job queue (disal.job_queue): SQLite in MODEL_DIR by default, Redis with REDIS_URL
    redis_url: str | None = field(default=None, repr=False)  # may carry a password
    redis_prefix: str = "disal"  # the queue's name and the job store's key prefix in Redis
    workers: int = 1  # worker processes the web process starts beside itself (0: only `make worker` ones)
    job_lease_s: float = 30.0  # a killed worker's project is taken over after this long
    retry_max_delay_s: float = 30.0  # failed jobs retry after 1, 2, 4 ... s, at most this
    train_debounce_s: float = 1.0  # a job starts once no event arrived for this long (bursts train once)
    train_debounce_max_s: float = 10.0  # ... or this long after the burst's first event
    # sharded pool encoding (disal.pool_shards): a cold start's uncached pool, split across live workers
    shard_min_tasks: int = 2000  # pools with fewer uncached tasks are encoded by their job's worker alone
    shard_size: int = 256  # tasks per shard (one claim, one cache save)
    # image projects (disal.tasks.image_classification, disal.media)
    image_size: int = 128  # EfficientNet-Lite0 input side in pixels
    image_batch_size: int = 32
    image_fetch_workers: int = 8  # images fetched and decoded at once
    image_fetch_timeout_s: float = 20.0
    image_max_bytes: int = 20 * 1024 * 1024
    image_max_pixels: int = 50_000_000

    def __post_init__(self) -> None:
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):
            raise ConfigError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        from .strategies import BADGE, CoreSet, make_strategy
        from .training.regimes import REGIME_NAMES, make_regime

        try:
            strategy = make_strategy(self.strategy)
        except ValueError as exc:
            raise ConfigError(f"STRATEGY={self.strategy!r}: {exc}") from None
        try:
            regime = make_regime(self.train_mode)
        except ValueError:
            raise ConfigError(f"TRAIN_MODE={self.train_mode!r} is not a regime the backend offers: "
                              f"{', '.join(REGIME_NAMES)} (N >= 1)") from None
        if regime.reads_states and isinstance(strategy, (BADGE, CoreSet)):
            raise ConfigError(f"STRATEGY={self.strategy!r} with TRAIN_MODE={self.train_mode}: BADGE and CoreSet place "
                              "a new task by its distance to the queue's centre tasks in the model's feature space, "
                              "which top-N would have to re-encode from their texts; use TRAIN_MODE=head or mlp "
                              "with them, or a DISAL, margin, entropy or BALD strategy with top-N")
        if self.device not in ("cpu", "cuda", "auto") and not self.device.startswith("cuda:"):
            raise ConfigError(f"DEVICE={self.device!r}: use cpu, cuda, cuda:N or auto")
        if self.encoder_runtime not in ("auto", "onnx", "torch"):
            raise ConfigError(f"ENCODER_RUNTIME={self.encoder_runtime!r}: use auto, onnx or torch")
        if self.push_chunk_size < 1 or self.page_size < 1:
            raise ConfigError("PUSH_CHUNK_SIZE and PAGE_SIZE must be >= 1")
        if self.predict_concurrency < 1 or self.predict_max_tasks < 1:
            raise ConfigError("PREDICT_CONCURRENCY and PREDICT_MAX_TASKS must be >= 1")
        if self.label_studio_url:
            url = self.label_studio_url
            if not url.lower().startswith(("http://", "https://")) or "@" in url.split("//", 1)[1].split("/", 1)[0]:
                raise ConfigError(f"LABEL_STUDIO_URL={url!r} must be an http(s) URL without credentials in it")

    def effective_torch_threads(self) -> int:
        """Why not all cores: the web threads need CPU too, and on a shared box torch's spinning
        intra-op threads slow encoding down ~10x under contention (measured: 26 vs 270 texts/s)."""
        if self.torch_threads > 0:
            return self.torch_threads
        return max(1, min(4, (os.cpu_count() or 2) // 2))

    @property
    def auth_enabled(self) -> bool:
        return bool(self.basic_auth_user and self.basic_auth_pass)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read every setting; raise ConfigError naming the variable on a bad value."""
        env = os.environ if env is None else env
        d = cls()
        return cls(
            label_studio_url=_str(env, "LABEL_STUDIO_URL"),
            label_studio_api_key=_str(env, "LABEL_STUDIO_API_KEY"),
            model_dir=Path(_str(env, "MODEL_DIR", str(d.model_dir))),
            model_name=_str(env, "MODEL_NAME"),
            basic_auth_user=_str(env, "BASIC_AUTH_USER"),
            basic_auth_pass=_str(env, "BASIC_AUTH_PASS"),
            min_annotations_to_train=_int(env, "MIN_ANNOTATIONS_TO_TRAIN", d.min_annotations_to_train, 1),
            use_uncertainty_sampling=_bool(env, "USE_UNCERTAINTY_SAMPLING", d.use_uncertainty_sampling),
            strategy=_str(env, "STRATEGY", d.strategy),
            push_chunk_size=_int(env, "PUSH_CHUNK_SIZE", d.push_chunk_size, 1),
            push_top_k=_int(env, "PUSH_TOP_K", d.push_top_k, 0),
            log_level=(_str(env, "LOG_LEVEL", d.log_level) or d.log_level).upper(),
            page_size=_int(env, "PAGE_SIZE", d.page_size, 1),
            max_length=_int(env, "MAX_LENGTH", d.max_length, 8),
            encode_batch_size=_int(env, "ENCODE_BATCH_SIZE", d.encode_batch_size, 1),
            max_text_chars=_int(env, "MAX_TEXT_CHARS", d.max_text_chars, 1),
            coldstart_batch=_int(env, "COLDSTART_BATCH", d.coldstart_batch, 1),
            query_batch=_int(env, "QUERY_BATCH", d.query_batch, 1),
            delete_old_versions=_bool(env, "DELETE_OLD_VERSIONS", d.delete_old_versions),
            old_versions_grace_s=_float(env, "OLD_VERSIONS_GRACE_S", d.old_versions_grace_s, 0.0),
            ls_timeout=_float(env, "LS_TIMEOUT", d.ls_timeout, 0.1),
            ls_retries=_int(env, "LS_RETRIES", d.ls_retries, 0),
            ls_backoff=_float(env, "LS_BACKOFF", d.ls_backoff, 0.0),
            seed=_int(env, "SEED", d.seed, 0),
            backend_url=_str(env, "BACKEND_URL"),
            torch_threads=_int(env, "TORCH_THREADS", d.torch_threads, 0),
            first_queue_seconds=_float(env, "FIRST_QUEUE_SECONDS", d.first_queue_seconds, 0.0),
            refine_growth=_float(env, "REFINE_GROWTH", d.refine_growth, 1.5),
            predict_concurrency=_int(env, "PREDICT_CONCURRENCY", d.predict_concurrency, 1),
            predict_wait_s=_float(env, "PREDICT_WAIT_S", d.predict_wait_s, 0.0),
            predict_max_tasks=_int(env, "PREDICT_MAX_TASKS", d.predict_max_tasks, 1),
            max_predict_bytes=_int(env, "MAX_PREDICT_BYTES", d.max_predict_bytes, 1024),
            max_webhook_bytes=_int(env, "MAX_WEBHOOK_BYTES", d.max_webhook_bytes, 1024),
            max_request_bytes=_int(env, "MAX_REQUEST_BYTES", d.max_request_bytes, 1024),
            max_json_depth=_int(env, "MAX_JSON_DEPTH", d.max_json_depth, 4),
            request_timeout_s=_float(env, "REQUEST_TIMEOUT_S", d.request_timeout_s, 0.5),
            setup_verify_timeout_s=_float(env, "SETUP_VERIFY_TIMEOUT_S", d.setup_verify_timeout_s, 0.1),
            train_mode=(_str(env, "TRAIN_MODE", d.train_mode) or d.train_mode).lower(),
            warm_start=_bool(env, "WARM_START", d.warm_start),
            mlp_hidden=_int(env, "MLP_HIDDEN", d.mlp_hidden, 2),
            mlp_lr=_float(env, "MLP_LR", d.mlp_lr, 1e-6),
            hidden_cache_max_mb=_int(env, "HIDDEN_CACHE_MAX_MB", d.hidden_cache_max_mb, 1),
            hidden_cache_max_disk_mb=_int(env, "HIDDEN_CACHE_MAX_DISK_MB", d.hidden_cache_max_disk_mb, 1),
            device=(_str(env, "DEVICE", d.device) or d.device).lower(),
            encoder_runtime=(_str(env, "ENCODER_RUNTIME", d.encoder_runtime) or d.encoder_runtime).lower(),
            onnx_dir=Path(v) if (v := _str(env, "ONNX_DIR")) else None,
            redis_url=_str(env, "REDIS_URL"),
            redis_prefix=_str(env, "REDIS_PREFIX", d.redis_prefix),
            workers=_int(env, "WORKERS", d.workers, 0),
            job_lease_s=_float(env, "JOB_LEASE_S", d.job_lease_s, 2.0),
            retry_max_delay_s=_float(env, "RETRY_MAX_DELAY_S", d.retry_max_delay_s, 1.0),
            train_debounce_s=_float(env, "TRAIN_DEBOUNCE_S", d.train_debounce_s, 0.0),
            train_debounce_max_s=_float(env, "TRAIN_DEBOUNCE_MAX_S", d.train_debounce_max_s, 0.0),
            shard_min_tasks=_int(env, "SHARD_MIN_TASKS", d.shard_min_tasks, 1),
            shard_size=_int(env, "SHARD_SIZE", d.shard_size, 1),
            image_size=_int(env, "IMAGE_SIZE", d.image_size, 32),
            image_batch_size=_int(env, "IMAGE_BATCH_SIZE", d.image_batch_size, 1),
            image_fetch_workers=_int(env, "IMAGE_FETCH_WORKERS", d.image_fetch_workers, 1),
            image_fetch_timeout_s=_float(env, "IMAGE_FETCH_TIMEOUT_S", d.image_fetch_timeout_s, 0.1),
            image_max_bytes=_int(env, "IMAGE_MAX_BYTES", d.image_max_bytes, 1024),
            image_max_pixels=_int(env, "IMAGE_MAX_PIXELS", d.image_max_pixels, 1024),
        )

    def public(self) -> dict:
        """The settings without secrets, for /health and log lines."""
        secret = {"label_studio_api_key", "basic_auth_pass", "redis_url"}
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in secret:
                out[f.name] = "set" if value else None
            else:
                out[f.name] = str(value) if isinstance(value, Path) else value
        return out


ENV_DOC = {
    "LABEL_STUDIO_URL": "Label Studio base URL (default: the hostname Label Studio sends in /setup)",
    "LABEL_STUDIO_API_KEY": "legacy token or personal access token (default: the token from /setup)",
    "MODEL_DIR": "where model versions, labels and the feature cache live (default ./model_dir)",
    "MODEL_NAME": "Hugging Face encoder id or local path (default: the packaged all-MiniLM-L6-v2)",
    "BASIC_AUTH_USER / BASIC_AUTH_PASS": "protect every route with HTTP basic auth",
    "MIN_ANNOTATIONS_TO_TRAIN": "new or changed labels needed before an event retrains (default 1)",
    "USE_UNCERTAINTY_SAMPLING": "switch the project to 'Uncertainty sampling' (default false)",
    "STRATEGY": f"acquisition strategy (default {DEFAULT_STRATEGY}: DISAL's static form ranks the pool, its "
                "top 25 x QUERY_BATCH tasks are clustered by their features and the task nearest each k-means centre "
                "heads the queue; the protocol-v2 winner); disal (plain DISAL ranking over the trajectory), another "
                "disal-batch spec, or a baseline name",
    "PUSH_CHUNK_SIZE": "predictions per bulk import request (default 500)",
    "PUSH_TOP_K": "predictions pushed per round: the queue's first K tasks (default 1000; 0 = every task). "
                  "Label Studio spends ~2 ms importing and ~5 ms deleting each prediction, so pushing a "
                  "10k pool every round costs over a minute; the rest of the pool keeps no prediction "
                  "(sorted last, never served by uncertainty sampling) until it reaches the top K",
    "LOG_LEVEL": "DEBUG, INFO (default), WARNING",
    "PAGE_SIZE": "tasks per page when reading Label Studio (default 500)",
    "MAX_LENGTH": "encoder token limit (default 128)",
    "ENCODE_BATCH_SIZE": "texts per encoder batch (default 32)",
    "MAX_TEXT_CHARS": "texts are cut to this many characters before tokenizing (default 20000)",
    "COLDSTART_BATCH": "CoreSet picks at cold start; the rest follow by distance (default 500)",
    "QUERY_BATCH": "disal-batch: the diverse picks that head the queue each round, the rest follow by DISAL "
                   "score (default 20, the benchmarks' batch; set it near the labels your team adds per retrain)",
    "DELETE_OLD_VERSIONS": "delete predictions of older disal versions after a push (default true)",
    "OLD_VERSIONS_GRACE_S": "a version's predictions are deleted only once it was superseded this many seconds "
                            "ago (default 7200): a task open in the UI refers to the prediction it started from, "
                            "and Label Studio refuses its Submit (400 parent_prediction) once that is deleted",
    "LS_TIMEOUT / LS_RETRIES / LS_BACKOFF": "Label Studio request timeout (s), retries, first backoff (s)",
    "SEED": "seed for training and tie-breaking (default 0)",
    "TORCH_THREADS": "torch intra-op threads (default: half the cores, at most 4; 1 on a busy 2-core box)",
    "FIRST_QUEUE_SECONDS": "a project's first round encodes this long, then pushes a queue over the tasks encoded "
                           "so far and refines it as encoding proceeds (default 20; the rest sort last meanwhile)",
    "REFINE_GROWTH": "each refined push of that first round waits for this many times more encoded tasks "
                     "(default 4: a 10k pool gets about 3 pushes)",
    "BACKEND_URL": "this backend's URL as Label Studio reaches it (default: learnt from /setup's Host header)",
    "PREDICT_CONCURRENCY / PREDICT_WAIT_S": "/predict requests computed at once (default 2); another waits "
                                            "up to PREDICT_WAIT_S (default 1) and then gets 503 with Retry-After",
    "PREDICT_MAX_TASKS": "tasks per /predict request (default 1000; more gets 413)",
    "MAX_PREDICT_BYTES / MAX_WEBHOOK_BYTES / MAX_REQUEST_BYTES": "request body limits: /predict 32 MiB, "
                                                                 "/webhook 16 MiB, /setup and the rest 2 MiB (413 beyond)",
    "MAX_JSON_DEPTH": "deepest JSON nesting accepted in a request body (default 64; 400 beyond)",
    "REQUEST_TIMEOUT_S": "a client must send its request within this many seconds, or its connection is closed "
                         "(default 5): slow or half-open clients cannot hold the server's threads",
    "SETUP_VERIFY_TIMEOUT_S": "how long /setup waits for Label Studio to confirm the project exists (default 2)",
    "TRAIN_MODE": "what is trained: head (a linear head on the frozen features, default), mlp (one hidden layer of "
                  "MLP_HIDDEN units, non-convex training) or top-N (text projects: the encoder's last N blocks + a "
                  "head, fine-tuned from hidden states cached per task; image projects train the head and /health "
                  "says so). What each changes and costs is in docs/benchmarks.md",
    "HIDDEN_CACHE_MAX_MB / HIDDEN_CACHE_MAX_DISK_MB": "top-N: a project's cached hidden states, at most this much in "
                                                      "memory (default 4096) and on disk in MODEL_DIR/projects/<id>/"
                                                      "hidden-top-N (default 16384); a round that would pass either "
                                                      "fails naming the setting, and the current queue keeps serving",
    "WARM_START": "start each round at the previous round's model (same regime and label set; default false)",
    "MLP_HIDDEN / MLP_LR": "the mlp regime's hidden units (default 256) and AdamW learning rate (default 0.003)",
    "DEVICE": "where the encoders and heads run: auto (default: CUDA when present, else the CPU), cpu, cuda, cuda:N",
    "ONNX_DIR": "where exported ONNX encoder graphs are kept, keyed by model and torch version (default "
                "MODEL_DIR/onnx; several backends on one host can share one)",
    "ENCODER_RUNTIME": "what computes text features on a CPU: auto (default: ONNX Runtime where the model exports, "
                       "else torch, with a warning saying why), onnx (fail if it cannot), torch. Same features "
                       "within 1e-6; ONNX Runtime measured 1.19x faster (docs/benchmarks.md)",
    "REDIS_URL": "run jobs through this Redis (redis://host:6379/0): any number of `make worker` processes, on any "
                 "machines sharing MODEL_DIR, take them (default: none; jobs persist in MODEL_DIR/jobs, SQLite)",
    "REDIS_PREFIX": "the queue's name and the job store's key prefix in Redis (default disal): backends that share "
                    "one Redis but not MODEL_DIR (staging beside production) each need their own",
    "WORKERS": "job worker processes the backend starts beside its web process (default 1; 0 with REDIS_URL when "
               "every worker is started on its own with `make worker`)",
    "JOB_LEASE_S": "a running job renews its project's lease every JOB_LEASE_S/5 s; a worker killed mid-job has its "
                   "job taken over by another after JOB_LEASE_S (default 30)",
    "RETRY_MAX_DELAY_S": "a job that failed on Label Studio (down, refused, no credentials yet) is retried after 1, "
                         "2, 4 ... s, at most this many (default 30), until it succeeds",
    "TRAIN_DEBOUNCE_S / TRAIN_DEBOUNCE_MAX_S": "a job starts once no event arrived for TRAIN_DEBOUNCE_S (default 1) "
                                               "or TRAIN_DEBOUNCE_MAX_S (default 10) after the first: a burst of "
                                               "events trains once, on all its labels",
    "SHARD_MIN_TASKS / SHARD_SIZE": "a round with at least SHARD_MIN_TASKS (default 2000) uncached pool tasks, while "
                                    "other worker processes are alive, splits their encoding into shards of "
                                    "SHARD_SIZE (default 256) that every live worker takes (disal.pool_shards)",
    "IMAGE_SIZE": "image projects: the EfficientNet-Lite0 input side in pixels (default 128; 224 is ImageNet's, "
                  "about 3x slower on a CPU)",
    "IMAGE_BATCH_SIZE": "image projects: images per encoder batch (default 32)",
    "IMAGE_FETCH_WORKERS": "image projects: images fetched and decoded in parallel (default 8)",
    "IMAGE_FETCH_TIMEOUT_S": "image projects: timeout of one image download in seconds (default 20)",
    "IMAGE_MAX_BYTES / IMAGE_MAX_PIXELS": "image projects: larger files (default 20 MiB) or images (default 50 "
                                          "megapixels) are skipped with a log line naming the task",
}
