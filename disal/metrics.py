"""Prometheus metrics for /metrics, in a registry of their own (one per app, so tests can build many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

disable_created_metrics()  # the *_created timestamp series only add noise to /metrics

PHASE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """The counters the backend exposes: trainings, durations, queue length, pushes, errors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.trainings = Counter("disal_trainings", "Rounds that pushed a new version, by kind (head, coldstart)",
                                 ["project", "kind"], registry=r)
        self.jobs = Counter("disal_jobs", "Background jobs run, by outcome", ["project", "outcome"], registry=r)
        self.phase_seconds = Histogram("disal_job_phase_seconds", "Duration of job phases (fetch, encode, train, "
                                       "score, push, total)", ["phase"], buckets=PHASE_BUCKETS, registry=r)
        self.queue_length = Gauge("disal_queue_length", "Unlabeled tasks in the pushed queue", ["project"], registry=r)
        self.labeled = Gauge("disal_labeled_tasks", "Labeled tasks the current version was trained on",
                             ["project"], registry=r)
        self.jobs_waiting = Gauge("disal_jobs_waiting", "Projects with a job queued behind a running one",
                                  registry=r)
        self.predictions_pushed = Counter("disal_predictions_pushed", "Predictions imported into Label Studio",
                                          ["project"], registry=r)
        self.errors = Counter("disal_errors", "Errors, by where they happened", ["where"], registry=r)
        self.webhook_events = Counter("disal_webhook_events", "Webhook events received, by action", ["action"],
                                      registry=r)
        self.predict_seconds = Histogram("disal_predict_seconds", "Time to answer /predict", buckets=PHASE_BUCKETS,
                                         registry=r)
        self.predicted_tasks = Counter("disal_predicted_tasks", "Tasks answered by /predict", registry=r)
        self.media_seconds = Counter("disal_media_seconds", "Image projects: seconds waiting for downloads and "
                                     "decoding (part=fetch) and in the encoder model (part=model)", ["part"],
                                     registry=r)
        self.skipped_inputs = Counter("disal_skipped_inputs", "Tasks skipped because their input (an image) could "
                                      "not be read or decoded", ["project"], registry=r)
        self.shards = Counter("disal_pool_shards", "Pool shards this worker encoded for another worker's job "
                              "(disal.pool_shards)", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def snapshot(registry: CollectorRegistry) -> list[dict]:
    """A registry's values, JSON-able: what a worker process publishes for the web's /metrics."""
    return [{"name": f.name, "type": f.type, "doc": f.documentation,
             "samples": [[s.name, s.labels, s.value] for s in f.samples]} for f in registry.collect()]


def render_merged(own: CollectorRegistry, snapshots: list[list[dict]], extra: list | None = None) -> bytes:
    """The web process's metrics plus every worker's (`snapshot`s, oldest first), as one exposition.

    Counters and histograms add up across workers (a dead worker's last counts stay in the sum, so
    totals never go down); a gauge takes the newest value any process reported.
    """
    from prometheus_client.metrics_core import Metric

    families: dict[str, dict] = {}
    for fam in snapshot(own):
        families[fam["name"]] = {**fam, "values": {}}
        for name, labels, value in fam["samples"]:
            families[fam["name"]]["values"][(name, tuple(sorted(labels.items())))] = value
    for snap in snapshots:
        for fam in snap:
            into = families.setdefault(fam["name"], {**fam, "values": {}})
            for name, labels, value in fam["samples"]:
                key = (name, tuple(sorted(labels.items())))
                if fam["type"] == "gauge":
                    into["values"][key] = value
                else:
                    into["values"][key] = into["values"].get(key, 0.0) + value

    class _Merged:
        def collect(self):
            for fam in families.values():
                m = Metric(fam["name"], fam["doc"], fam["type"])
                for (name, labels), value in fam["values"].items():
                    m.add_sample(name, dict(labels), value)
                yield m
            yield from extra or ()

    registry = CollectorRegistry()
    registry.register(_Merged())
    return generate_latest(registry)
