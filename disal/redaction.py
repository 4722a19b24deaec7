"""No credential reaches a log line: a logging filter that masks secrets in every record.

Why a filter on the handlers and not care at each call site: the libraries under us log too
(httpcore at DEBUG prints Label Studio's `Set-Cookie: sessionid=...` response headers, gunicorn
prints request lines, a traceback can quote a header). The filter masks
- every secret the process knows (LABEL_STUDIO_API_KEY, BASIC_AUTH_PASS, each token Label Studio
  sends in /setup), in plain, base64 and `user:pass` base64 forms;
- credential-shaped text: Authorization header values, `Token ...`/`Basic ...`/`Bearer ...` after
  an Authorization key, and session / CSRF cookies.
"""

from __future__ import annotations

import base64
import logging
import re
import threading

MASK = "[redacted]"

_PATTERNS = (
    # Authorization: Basic xxx / 'authorization': 'Token xxx' / (b'Authorization', b'Token xxx')
    re.compile(r"(?i)(authorization['\"]?\s*[:=,]\s*b?['\"]?\s*)(basic|token|bearer)\s+[^\s'\",;)]+"),
    # cookies: sessionid=..., csrftoken=..., any *session*=... or *csrf*=...
    re.compile(r"(?i)\b([\w.-]*(?:session|csrf)[\w.-]*=)[^;\s'\",)]+"),
)


class SecretRedactor(logging.Filter):
    """Rewrites each record's message (and traceback text) with secrets masked; never drops a record."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._users: set[str] = set()

    def add_secret(self, secret: str | None, user: str | None = None) -> None:
        """Mask `secret` and its base64 forms (with `user:` prefixed too when a user is given)."""
        if not secret or len(secret) < 4:
            return
        forms = {secret, base64.b64encode(secret.encode("utf-8")).decode()}
        if user:
            for enc in ("utf-8", "latin-1"):
                try:
                    forms.add(base64.b64encode(f"{user}:{secret}".encode(enc)).decode())
                except UnicodeEncodeError:
                    pass
        with self._lock:
            self._secrets |= forms

    def redact(self, text: str) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for s in secrets:
            if s in text:
                text = text.replace(s, MASK)
        for rx in _PATTERNS:
            text = rx.sub(lambda m: m.group(1) + MASK, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not hide the record
            message = str(record.msg)
        clean = self.redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


REDACTOR = SecretRedactor()

# Loggers whose handlers get the filter: the root (ours and every library that propagates) and
# gunicorn's own, which do not propagate.
LOGGERS = ("", "gunicorn.error", "gunicorn.access")


def install(redactor: SecretRedactor = REDACTOR) -> SecretRedactor:
    """Put the filter on every handler of LOGGERS (idempotent)."""
    for name in LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if redactor not in handler.filters:
                handler.addFilter(redactor)
    return redactor
