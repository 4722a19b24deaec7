"""Logging for every process of the backend (web and workers): one format, secrets masked."""

from __future__ import annotations

import logging

from .redaction import install as install_redaction


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request URL at INFO, and httpcore at DEBUG prints every header Label Studio
    # answers (its Set-Cookie included): both stay at WARNING even under LOG_LEVEL=DEBUG
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # huey logs each task it runs at INFO ("Executing disal.project_job: <id>"): the job's own lines say more
    logging.getLogger("huey").setLevel(logging.WARNING)
    # and whatever still reaches a handler has its secrets masked (disal.redaction)
    install_redaction()
