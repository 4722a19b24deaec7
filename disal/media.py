"""Fetching a task's media file (an image) the way Label Studio stores it, with the right credentials.

The URL forms a task's data holds, and how each is read:

| form | example | read from | credentials |
|---|---|---|---|
| uploaded file | `/data/upload/3/ab12-cat.png` | Label Studio | the project's token |
| local-files storage | `/data/local-files/?d=pets/cat.png` | Label Studio | the project's token |
| storage proxy | `/tasks/7/resolve/?fileuri=czM6Ly8...` (what the API returns for cloud tasks) | Label Studio | the project's token |
| cloud URI | `s3://bucket/cat.png`, `gs://...`, `azure-blob://...` | Label Studio's resolve endpoint for the task, which proxies the file or redirects to a presigned URL | the token to Label Studio only |
| plain URL | `https://example.com/cat.png` | that host | none, unless it is the Label Studio host |
| inline | `data:image/png;base64,...` | the task itself | - |

Why this rule: the API key goes only to the host the operator configured (disal.credentials). A
redirect is followed by hand, so the token never follows it to another origin (a presigned S3 URL
needs none). Bodies are capped at IMAGE_MAX_BYTES while they stream, so a huge file costs nothing.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from typing import Callable
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import httpx

log = logging.getLogger(__name__)

CLOUD_SCHEMES = ("s3", "s3a", "gs", "gcs", "azure-blob", "azure-spi")
MAX_REDIRECTS = 5


class MediaError(Exception):
    """A file could not be fetched; the message names why (status, size, scheme), never a credential."""


@dataclass(frozen=True)
class Resolved:
    url: str
    credentials: bool  # whether the Label Studio token goes with the request


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def describe_ref(ref: str) -> str:
    """A short, credential-free form of a reference for log lines (no query string: presigned URLs
    carry signatures there; an inline image is named by its size)."""
    if ref.startswith("data:"):
        return f"an inline data: URI of {len(ref):,} characters"
    parts = urlsplit(ref)
    if parts.path.startswith("/data/local-files") and parts.query:
        return f"{parts.path}?{parts.query[:120]}"  # ?d=<path> is the file, not a secret
    shown = f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else parts.path
    return shown[:200]


class MediaFetcher:
    """Reads media files for one project. `ls_url`: the project's Label Studio (where relative paths
    and cloud URIs resolve); `auth_headers`: a callable giving its Authorization header at request
    time (a personal access token is refreshed by the SDK)."""

    def __init__(self, ls_url: str | None, auth_headers: Callable[[], dict[str, str]] | None, *,
                 client: httpx.Client | None = None, timeout: float = 20.0, max_bytes: int = 20 * 1024 * 1024) -> None:
        self.ls_url = ls_url.rstrip("/") if ls_url else None
        self._auth = auth_headers
        self._own = client is None
        self._client = client or httpx.Client(timeout=timeout, follow_redirects=False)
        self.timeout = timeout
        self.max_bytes = int(max_bytes)

    # -- which URL, with or without the token ----------------------------------------------------
    def resolve(self, ref: str, task_id: int | None) -> Resolved:
        """The URL to GET for a task's reference; MediaError for a form that cannot be read."""
        ref = ref.strip()
        scheme = urlsplit(ref).scheme.lower()
        if scheme in CLOUD_SCHEMES:
            if task_id is None:
                raise MediaError(f"a {scheme}:// URI needs the task's id for Label Studio to resolve it")
            fileuri = base64.urlsafe_b64encode(ref.encode("utf-8")).decode("ascii")
            return self._on_label_studio(f"/tasks/{int(task_id)}/resolve/?fileuri={fileuri}")
        if ref.startswith("/") and not ref.startswith("//"):
            return self._on_label_studio(ref)
        if scheme in ("http", "https"):
            return Resolved(ref, self._is_label_studio(ref))
        if not scheme:
            raise MediaError(f"{describe_ref(ref)!r} is not a URL (expected /data/upload/..., /data/local-files/?d=..., "
                             "http(s)://..., s3://... or data:...)")
        raise MediaError(f"URL scheme {scheme}:// is not supported (read: Label Studio paths, http(s), "
                         f"{', '.join(s + '://' for s in CLOUD_SCHEMES)}, data:)")

    def _on_label_studio(self, path: str) -> Resolved:
        if not self.ls_url:
            raise MediaError(f"{describe_ref(path)} is a Label Studio path, and no Label Studio URL is known for this "
                             "project (set LABEL_STUDIO_URL or reconnect the backend)")
        return Resolved(urljoin(self.ls_url + "/", path.lstrip("/")), True)

    def _is_label_studio(self, url: str) -> bool:
        return bool(self.ls_url) and _origin(url) == _origin(self.ls_url)

    # -- reading ---------------------------------------------------------------------------------
    def fetch(self, ref: str, task_id: int | None = None) -> bytes:
        """The file's bytes; MediaError naming the reason (HTTP status, too large, unreachable)."""
        if not isinstance(ref, str) or not ref.strip():
            raise MediaError("the image reference is empty")
        if ref.startswith("data:"):
            return self._inline(ref)
        target = self.resolve(ref, task_id)
        url, credentials = target.url, target.credentials
        for _ in range(MAX_REDIRECTS + 1):
            headers = dict(self._auth() if credentials and self._auth else {})
            try:
                with self._client.stream("GET", url, headers=headers, timeout=self.timeout,
                                         follow_redirects=False) as resp:
                    if resp.status_code in (301, 302, 303, 307, 308) and resp.headers.get("location"):
                        nxt = urljoin(url, resp.headers["location"])
                        # the token goes on only while the redirect stays on Label Studio's origin
                        credentials = credentials and _origin(nxt) == _origin(url)
                        url = nxt
                        continue
                    if resp.status_code != 200:
                        raise MediaError(f"HTTP {resp.status_code} from {describe_ref(url)}")
                    declared = resp.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > self.max_bytes:
                        raise MediaError(f"{int(declared):,} bytes at {describe_ref(url)}, over IMAGE_MAX_BYTES="
                                         f"{self.max_bytes:,}")
                    chunks, size = [], 0
                    for chunk in resp.iter_bytes():
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise MediaError(f"over IMAGE_MAX_BYTES={self.max_bytes:,} bytes at {describe_ref(url)}")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpx.HTTPError as exc:
                raise MediaError(f"could not read {describe_ref(url)}: {type(exc).__name__}: {exc}"[:300]) from None
        raise MediaError(f"more than {MAX_REDIRECTS} redirects from {describe_ref(ref)}")

    def _inline(self, ref: str) -> bytes:
        head, _, payload = ref.partition(",")
        if len(payload) > self.max_bytes * 4 // 3 + 4:
            raise MediaError(f"an inline data: URI over IMAGE_MAX_BYTES={self.max_bytes:,} bytes")
        try:
            return base64.b64decode(payload, validate=False) if head.endswith(";base64") else unquote_to_bytes(payload)
        except (binascii.Error, ValueError) as exc:
            raise MediaError(f"an inline data: URI that does not decode ({exc})") from None

    def close(self) -> None:
        if self._own:  # a client lent by LabelStudioClient stays open for it
            self._client.close()
