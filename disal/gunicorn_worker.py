"""gunicorn's threaded worker with a read deadline, so slow or half-open clients cannot hold threads.

Why: gunicorn's gthread worker hands a connection to a thread once its first bytes arrive, then
reads headers and body with a blocking socket and no timeout. A client that sends half a request
and stops holds that thread forever; 16 of them held every webhook for over 20 s, and Label Studio
gives a webhook 1 s and never retries it. Here every socket read and write of a request gets
REQUEST_TIMEOUT_S (default 5 s); a client slower than that is disconnected (or answered 408 when
the body stalls), and the thread goes back to the pool. Closing connections happens in the pool too:
gunicorn lingers up to 2 s on each close, on the thread that accepts new connections.
"""

from __future__ import annotations


import logging
import sys

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
        # a request thread waiting for the GIL behind a /predict's Python-bound work gets it after
        # 1 ms instead of 5 ms: webhooks stay quick while /predict computes
        sys.setswitchinterval(0.001)
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

    def finish_request(self, conn, fs) -> None:  # noqa: ANN001 - gunicorn's TConn and Future
        """Close finished connections in the thread pool, not on the main loop.

        gunicorn closes a connection "gracefully": it half-closes and then lingers up to 2 s on the
        read side until the peer hangs up. It does so on the main thread, which also accepts new
        connections, so 16 slow clients that never hang up froze accepting for 16 x 2 s (measured:
        29 of 40 webhooks timed out). Keep-alive and deferred connections go back to gunicorn as usual.
        """
        try:
            result = fs.result() if not fs.cancelled() else False
        except Exception:  # noqa: BLE001 - gunicorn's own handling: close at once
            result = None
        if result is False or result is None:
            self.nr_conns -= 1
            graceful = result is False
            try:
                self.tpool.submit(conn.close, graceful)
            except RuntimeError:  # the pool is shutting down: close here, at once
                conn.close()
            return
        super().finish_request(conn, fs)


__all__ = ["DeadlineThreadWorker", "request_timeout"]
