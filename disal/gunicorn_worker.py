"""gunicorn's threaded worker with a read deadline, so slow or half-open clients cannot hold threads.

Why: gunicorn's gthread worker hands a connection to a thread once its first bytes arrive, then
reads headers and body with a blocking socket and no timeout. A client that sends half a request
and stops holds that thread forever; 16 of them held every webhook for over 20 s, and Label Studio
gives a webhook 1 s and never retries it. Here every socket read and write of a request gets
REQUEST_TIMEOUT_S (default 5 s); a client slower than that is disconnected (or answered 408 when
the body stalls), and the thread goes back to the pool.
"""

from __future__ import annotations


import logging

from gunicorn.workers.gthread import ThreadWorker

from .config import ConfigError, Settings


def request_timeout() -> float:
    try:
        return Settings.from_env().request_timeout_s
    except ConfigError:
        return Settings.request_timeout_s


class SlowClientLogFilter(logging.Filter):
    """gunicorn logs a read deadline as "Socket error processing request." with a traceback; one
    INFO line says what happened instead (a user reads these logs)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, TimeoutError) and str(record.msg).startswith("Socket error"):
            record.msg = (f"closed a connection whose request did not arrive within {self.timeout:g} s "
                          "(REQUEST_TIMEOUT_S)")
            record.args, record.exc_info, record.exc_text = (), None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class DeadlineThreadWorker(ThreadWorker):
    """ThreadWorker whose request sockets carry a timeout (gunicorn sets them blocking, timeout None)."""

    def init_process(self) -> None:
        self.request_timeout_s = request_timeout()
        logging.getLogger("gunicorn.error").addFilter(SlowClientLogFilter(self.request_timeout_s))
        super().init_process()

    def handle(self, conn):  # noqa: ANN001 - gunicorn's TConn
        init = conn.init
        timeout = self.request_timeout_s

        def init_with_deadline() -> None:
            init()
            conn.sock.settimeout(timeout)  # after gunicorn's setblocking(True), which clears any timeout

        conn.init = init_with_deadline
        try:
            return super().handle(conn)
        finally:
            conn.init = init


__all__ = ["DeadlineThreadWorker", "request_timeout"]
