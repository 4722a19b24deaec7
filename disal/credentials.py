"""Where the Label Studio API key may go: the one rule, in one place (README "Security").

- The operator's key (LABEL_STUDIO_API_KEY) is sent only to the host the operator named
  (LABEL_STUDIO_URL). Without LABEL_STUDIO_URL it is never sent anywhere.
- A host learnt from /setup (its `hostname`) carries only the token that came with that same
  /setup request (`access_token`), never the operator's key.
- A project's learnt host is pinned by its first successful /setup; a later /setup naming another
  host is refused unless the request was authenticated (BASIC_AUTH_USER/PASS).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx


class CredentialsError(ValueError):
    """No (host, key) pair the rule allows; the message says what the operator can do."""


def normalize_host_url(url: str) -> str:
    """'http://Host:8080/' -> 'http://host:8080': the form hosts are compared in."""
    u = httpx.URL(url.strip())
    if u.scheme not in ("http", "https") or not u.host:
        raise CredentialsError(f"{url!r} is not an http(s) URL")
    if u.userinfo:
        raise CredentialsError(f"{u.scheme}://…@{u.host}: a Label Studio URL must not carry credentials")
    port = f":{u.port}" if u.port else ""
    path = u.path.rstrip("/")
    return f"{u.scheme}://{u.host.lower()}{port}{path}"


@dataclass(frozen=True)
class SetupToken:
    """A token Label Studio sent in /setup, with the host that came in the same request."""

    host: str | None
    token: str

    def __repr__(self) -> str:  # never the token
        return f"SetupToken(host={self.host!r})"


def resolve(configured_url: str | None, operator_key: str | None, pinned_host: str | None,
            setup_token: SetupToken | None) -> tuple[str, str]:
    """(base URL, key) for a project's Label Studio calls, or CredentialsError naming the fix."""
    if configured_url:
        url = normalize_host_url(configured_url)
        key = operator_key or (setup_token.token if setup_token else None)
        if not key:
            raise CredentialsError(f"no API key for {url}: set LABEL_STUDIO_API_KEY, or reconnect the backend in "
                                   "the project's settings so that Label Studio sends its token")
        return url, key
    if not pinned_host:
        raise CredentialsError("no Label Studio URL: set LABEL_STUDIO_URL, or connect the backend from Label "
                               "Studio (its /setup names the host)")
    url = normalize_host_url(pinned_host)
    if setup_token is None or setup_token.host != url:
        hint = (" (LABEL_STUDIO_API_KEY is set but is only ever sent to LABEL_STUDIO_URL, which is not set)"
                if operator_key else "")
        raise CredentialsError(f"no token for {url}: only the token Label Studio sent with its /setup may go to a "
                               f"host learnt from /setup{hint}; reconnect the backend in the project's settings")
    return url, setup_token.token
