"""gunicorn settings for the backend, read by `gunicorn _wsgi:app` from the repository root.

ONE web worker process with threads; the worker class gives every request a read deadline
(REQUEST_TIMEOUT_S) so slow or half-open clients cannot hold the threads that /webhook needs
(disal/gunicorn_worker.py). Training runs elsewhere: the hooks below start WORKERS job worker
processes (disal/worker.py, default 1) beside it, restart one that dies, and stop them with the
server. Command-line flags override these settings.
"""

import os

workers = 1
worker_class = "disal.gunicorn_worker.DeadlineThreadWorker"
# threads blocked on a slow client's socket cost no CPU; enough of them that a few dozen slow clients
# (each held at most REQUEST_TIMEOUT_S) never take the last thread a webhook needs
threads = int(os.environ.get("THREADS", "32"))
bind = f"{os.environ.get('HOST_BIND', '0.0.0.0')}:{os.environ.get('PORT', '9090')}"
timeout = 120
graceful_timeout = 10
keepalive = 5
# request line and header limits (gunicorn's defaults, stated): 413/400 from gunicorn itself beyond
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190


def when_ready(server):
    from disal.worker import EmbeddedWorkers

    count = int(os.environ.get("WORKERS", "1") or 0)
    server.disal_workers = EmbeddedWorkers(count).start()


def on_exit(server):
    workers = getattr(server, "disal_workers", None)
    if workers is not None:
        workers.stop()
