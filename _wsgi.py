"""Entry point: `app` for gunicorn (make serve), `python _wsgi.py --port N` for development.

Jobs run in threads of this process, so serve with ONE worker process and several threads
(`gunicorn _wsgi:app` reads ./gunicorn.conf.py: one worker, threads, the slow-client-safe worker
class): more worker processes would each train on their own.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from disal.config import ConfigError, Settings
from disal.redaction import install as install_redaction
from disal.server import create_app
from model import DisalModel


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request URL at INFO, and httpcore at DEBUG prints every header Label Studio
    # answers (its Set-Cookie included): both stay at WARNING even under LOG_LEVEL=DEBUG
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # and whatever still reaches a handler has its secrets masked (disal.redaction)
    install_redaction()


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
    return create_app(DisalModel(settings, warm_up=True))


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
