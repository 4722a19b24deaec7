"""Entry point: `app` for gunicorn (make serve), `python _wsgi.py --port N` for development.

This process answers requests only; training jobs go through the durable job queue (disal.job_queue)
to worker processes (disal.worker): `gunicorn _wsgi:app` reads ./gunicorn.conf.py, which starts
WORKERS of them beside the web worker and restarts any that dies.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from disal.config import ConfigError, Settings
from disal.job_queue import JobQueue
from disal.logs import configure_logging
from disal.server import create_app
from model import DisalModel


def build_app(settings: Settings | None = None):
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    import torch

    torch.set_num_threads(settings.effective_torch_threads())
    logging.getLogger("disal").info("starting disal-backend (%d torch threads): %s", torch.get_num_threads(),
                                    settings.public())
    if settings.label_studio_api_key and not settings.label_studio_url:
        logging.getLogger("disal").warning(
            "LABEL_STUDIO_API_KEY is set without LABEL_STUDIO_URL: the key is only ever sent to LABEL_STUDIO_URL, "
            "so it is not used; each project uses the token Label Studio sends with its /setup")
    # jobs go to the durable queue; the worker processes (disal.worker, started by gunicorn.conf.py
    # and `make worker`) run them
    return create_app(DisalModel(settings, warm_up=True, job_queue=JobQueue(settings)))


try:
    app = build_app()
except ConfigError as exc:  # a clear one-line message instead of a traceback
    sys.stderr.write(f"disal-backend: configuration error: {exc}\n")
    raise SystemExit(2) from None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="DISAL Label Studio ML backend (development server)")
    parser.add_argument("--host", default=os.environ.get("HOST_BIND", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "9090")))
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args()
    app.run(host=args.host, port=args.port, debug=args.debug, threaded=True, use_reloader=False)
