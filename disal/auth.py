"""HTTP basic auth that never raises: credentials are compared as bytes, whatever their characters.

Why bytes: `hmac.compare_digest` raises TypeError on str with non-ASCII characters, which turned a
request with `Basic base64('ü:x')` (or any request once BASIC_AUTH_PASS held a non-ASCII
character) into a 500. The header is decoded by hand, and the configured user and password are
compared in their UTF-8 form and, where possible, their Latin-1 form (the encoding Python's
`requests`, which Label Studio uses, gives a str password), each in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac


def basic_credentials(header: str | None) -> tuple[bytes, bytes] | None:
    """(user, password) as raw bytes from an `Authorization: Basic ...` value; None when absent or malformed."""
    if not header:
        return None
    scheme, _, param = header.strip().partition(" ")
    if scheme.lower() != "basic" or not param.strip():
        return None
    try:
        raw = base64.b64decode(param.strip().encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    return user, password


def _encodings(value: str) -> tuple[bytes, ...]:
    forms = [value.encode("utf-8")]
    try:
        latin = value.encode("latin-1")
    except UnicodeEncodeError:
        latin = None
    if latin is not None and latin not in forms:
        forms.append(latin)
    return tuple(forms)


def _matches(given: bytes, expected: tuple[bytes, ...]) -> bool:
    ok = False
    for form in expected:  # no early exit: every form is compared
        ok |= hmac.compare_digest(given, form)
    return ok


class BasicAuth:
    """The configured credentials; `check(header)` is True only for an exact match."""

    def __init__(self, user: str, password: str) -> None:
        if not user or not password:
            raise ValueError("basic auth needs both a user and a password")
        self._users = _encodings(user)
        self._passwords = _encodings(password)

    def __repr__(self) -> str:  # never the password
        return "BasicAuth(<configured>)"

    def check(self, header: str | None) -> bool:
        creds = basic_credentials(header)
        if creds is None:
            return False
        user, password = creds
        return _matches(user, self._users) & _matches(password, self._passwords)
