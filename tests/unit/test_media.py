"""Every URL form an image task's data can hold, and every bad image, read by disal.media and the
image module's decoder. Two real HTTP servers on 127.0.0.1 play Label Studio and another host, and
record every request, so the tests see which one received the token."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reliability.harness import RecordingServer  # noqa: E402

from disal.media import MediaError, MediaFetcher, describe_ref  # noqa: E402
from disal.tasks.image_classification import ImageDecodeError, decode_image  # noqa: E402

TOKEN = "Token media-test-token-123"


def png(w: int = 12, h: int = 9, color=(200, 30, 60)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


IMG = png()


@pytest.fixture(scope="module")
def other_server():
    """Another host: a CDN, or the presigned S3 URL Label Studio redirects to."""
    srv = RecordingServer(lambda m, p, h, b: (200, IMG) if p.startswith("/ok") and "missing" not in p
                          else (404, {"detail": "nope"}))
    yield srv
    srv.close()


@pytest.fixture
def other(other_server):
    other_server.requests.clear()
    return other_server


@pytest.fixture
def ls(ls_server):
    ls_server.requests.clear()
    return ls_server


@pytest.fixture(scope="module")
def ls_server(other_server):
    """A Label Studio that serves uploads and local files, and resolves cloud URIs by redirecting
    to `other` (a presigned URL), as 1.23's /tasks/<id>/resolve/ does for storages with presign on."""
    def respond(method, path, headers, body):
        if headers.get("Authorization") != TOKEN:
            return 401, {"detail": "Authentication credentials were not provided."}
        if path.startswith("/data/upload/") or path.startswith("/data/local-files/?d="):
            return 200, IMG
        if path.startswith("/tasks/7/resolve/?fileuri="):
            uri = base64.urlsafe_b64decode(path.split("fileuri=", 1)[1]).decode()
            return 302, b"", {"Location": f"{other_server.url}/ok/{uri.split('://', 1)[1]}?X-Amz-Signature=s3cr3t"}
        if path.startswith("/loop"):
            return 302, b"", {"Location": "/loop"}
        if path.startswith("/same-origin-redirect"):
            return 302, b"", {"Location": "/data/upload/1/moved.png"}
        return 404, {"detail": "Not found"}
    srv = RecordingServer(respond)
    yield srv
    srv.close()


def fetcher(ls_url, **kw) -> MediaFetcher:
    return MediaFetcher(ls_url, lambda: {"Authorization": TOKEN}, **kw)


@pytest.mark.parametrize("ref", ["/data/upload/3/ab12-cat.png", "/data/local-files/?d=pets/cat.png"])
def test_label_studio_paths_are_read_from_label_studio_with_the_token(ls, other, ref):
    assert fetcher(ls.url).fetch(ref, 1) == IMG
    assert ls.requests[-1].path == ref and ls.requests[-1].headers["Authorization"] == TOKEN
    assert other.requests == []


def test_an_absolute_url_on_the_label_studio_origin_carries_the_token(ls):
    assert fetcher(ls.url).fetch(f"{ls.url}/data/upload/3/x.png", 1) == IMG
    assert ls.authorizations() == [TOKEN]


@pytest.mark.parametrize("scheme", ["s3", "gs", "azure-blob"])
def test_a_cloud_uri_is_resolved_by_label_studio_and_the_presigned_url_gets_no_token(ls, other, scheme):
    uri = f"{scheme}://bucket/pets/cat.png"
    assert fetcher(ls.url).fetch(uri, 7) == IMG
    resolve = ls.requests[-1]
    assert resolve.path == "/tasks/7/resolve/?fileuri=" + base64.urlsafe_b64encode(uri.encode()).decode()
    assert resolve.headers["Authorization"] == TOKEN
    assert other.requests[-1].path.startswith("/ok/bucket/pets/cat.png")
    assert "Authorization" not in other.requests[-1].headers, "the token followed a redirect to another host"


def test_the_storage_proxy_url_the_api_returns_is_read_from_label_studio(ls, other):
    proxied = "/tasks/7/resolve/?fileuri=" + base64.urlsafe_b64encode(b"s3://bucket/a.png").decode()
    assert fetcher(ls.url).fetch(proxied, 7) == IMG
    assert ls.authorizations() == [TOKEN] and "Authorization" not in other.requests[-1].headers


def test_a_redirect_within_label_studio_keeps_the_token(ls):
    assert fetcher(ls.url).fetch("/same-origin-redirect", 1) == IMG
    assert ls.authorizations() == [TOKEN, TOKEN]


def test_a_plain_url_on_another_host_never_gets_the_token(ls, other):
    assert fetcher(ls.url).fetch(f"{other.url}/ok/cat.png", 1) == IMG
    assert "Authorization" not in other.requests[-1].headers and ls.requests == []


def test_an_inline_data_uri_needs_no_request(ls, other):
    ref = "data:image/png;base64," + base64.b64encode(IMG).decode()
    assert fetcher(ls.url).fetch(ref, 1) == IMG
    assert ls.requests == [] and other.requests == []


@pytest.mark.parametrize("ref, words", [
    ("ftp://files.example/cat.png", "ftp:// is not supported"),
    ("file:///etc/passwd", "file:// is not supported"),
    ("cat.png", "is not a URL"),
    ("", "empty"),
])
def test_unreadable_forms_are_named(ls, ref, words):
    with pytest.raises(MediaError, match=words):
        fetcher(ls.url).fetch(ref, 1)
    assert ls.requests == []


def test_a_label_studio_path_without_a_label_studio_url_is_named():
    with pytest.raises(MediaError, match="no Label Studio URL is known"):
        MediaFetcher(None, None).fetch("/data/upload/1/a.png", 1)
    with pytest.raises(MediaError, match="needs the task's id"):
        MediaFetcher("http://127.0.0.1:9", None).fetch("s3://b/a.png", None)


@pytest.mark.parametrize("ref, words", [
    ("/data/upload/1/gone.png?missing", None),
    ("/nothing-here.png", "HTTP 404 from http://127.0.0.1:[0-9]+/nothing-here.png"),
    ("/loop", "more than 5 redirects"),
])
def test_http_failures_are_named(ls, other, ref, words):
    if words is None:  # a 404 behind a redirect (the presigned URL expired) is named too
        ref = "s3://bucket/missing.png"
        with pytest.raises(MediaError, match=f"HTTP 404 from {other.url}/ok/bucket/missing.png$"):
            fetcher(ls.url).fetch(ref, 7)
        return
    with pytest.raises(MediaError, match=words):
        fetcher(ls.url).fetch(ref, 1)


def test_a_refused_token_is_an_http_401_naming_the_file(ls):
    with pytest.raises(MediaError, match=r"HTTP 401 from .*/data/upload/3/x.png"):
        MediaFetcher(ls.url, lambda: {"Authorization": "Token wrong"}).fetch("/data/upload/3/x.png", 1)


def test_an_unreachable_host_is_named():
    with pytest.raises(MediaError, match="could not read http://127.0.0.1:9/a.png: ConnectError"):
        MediaFetcher(None, None, timeout=2).fetch("http://127.0.0.1:9/a.png", 1)


def test_a_file_over_the_byte_cap_is_refused_while_it_streams(ls):
    cap = len(IMG) - 1
    with pytest.raises(MediaError, match=f"over IMAGE_MAX_BYTES={cap:,}"):
        fetcher(ls.url, max_bytes=cap).fetch("/data/upload/1/a.png", 1)
    with pytest.raises(MediaError, match=f"IMAGE_MAX_BYTES={cap:,}"):
        fetcher(ls.url, max_bytes=cap).fetch("data:image/png;base64," + base64.b64encode(IMG * 3).decode(), 1)
    assert fetcher(ls.url, max_bytes=len(IMG)).fetch("/data/upload/1/a.png", 1) == IMG


def test_log_forms_never_carry_a_query_signature():
    assert describe_ref("https://b.s3.amazonaws.com/a.png?X-Amz-Signature=s3cr3t") == "https://b.s3.amazonaws.com/a.png"
    assert describe_ref("/data/local-files/?d=pets/cat.png") == "/data/local-files/?d=pets/cat.png"
    assert "base64" not in describe_ref("data:image/png;base64,AAAA")


# -- decoding --------------------------------------------------------------------------------------
def test_decode_gives_fixed_size_rgb_from_any_mode():
    from PIL import Image

    for mode in ("RGB", "L", "RGBA", "P", "1"):
        buf = io.BytesIO()
        Image.new(mode, (40, 20)).save(buf, format="PNG")
        out = decode_image(buf.getvalue(), 32, 10_000)
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 200, 10)).save(buf, format="JPEG")
    out = decode_image(buf.getvalue(), 32, 10**6)
    assert out.shape == (32, 32, 3) and abs(int(out[..., 1].mean()) - 200) < 10


def _truncated() -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    data = buf.getvalue()
    return data[: len(data) // 2]


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"<html><body>Sign in</body></html>", "not an image Pillow can read"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "not an image|broken"),
    (_truncated(), "broken image"),
    (png(400, 300), "400x300 = 120,000 pixels, over IMAGE_MAX_PIXELS=100,000"),
])
def test_bad_images_are_refused_with_the_reason(data, words):
    with pytest.raises(ImageDecodeError, match=words):
        decode_image(data, 32, 100_000)


@pytest.mark.parametrize("side, words", [
    (9000, "9000x9000 = 81,000,000 pixels, over IMAGE_MAX_PIXELS=50,000,000"),  # our cap, from the header
    (20000, "decompression bomb: Image size \\(400000000 pixels\\)"),  # Pillow's own, at open
])
def test_a_decompression_bomb_is_refused_from_its_header(side, words):
    """A huge 1-bit PNG compresses to a few KB: it must be refused before its pixels are decoded."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 2_000_000
    with pytest.raises(ImageDecodeError, match=words):
        decode_image(buf.getvalue(), 32, 50_000_000)
