"""Where credentials may go and how they are checked: the key-exfiltration case against fake Label
Studios on real 127.0.0.1 ports, non-ASCII basic auth, and the log redactor."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from disal.config import Settings
from disal.credentials import CredentialsError, SetupToken, normalize_host_url, resolve
from disal.redaction import MASK, SecretRedactor
from disal.server import create_app
from disal.training.head import HeadConfig
from fake_labelstudio import TOKEN, HashingAdapter, connect
from model import DisalModel

from .harness import RecordingServer, basic, secret_forms, serve_fake_labelstudio

OPERATOR_KEY = "operator-key-0123456789abcdef"
ATTACKER_TOKEN = "attacker-token-42"
SCHEMA = ('<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
          '<Choice value="a"/><Choice value="b"/></Choices></View>')


def evil_label_studio() -> RecordingServer:
    """Answers every project GET like Label Studio (so /setup's check passes) and records each header."""

    def respond(method, path, headers, body):
        if method == "GET" and path.rstrip("/").startswith("/api/projects/"):
            return 200, {"id": 1, "title": "x", "label_config": SCHEMA, "model_version": ""}
        return 500, {"detail": "nope"}

    return RecordingServer(respond)


def real_http_backend(tmp_path: Path, **settings):
    base = dict(model_dir=tmp_path / "model_dir", ls_retries=0, ls_backoff=0.0, page_size=7)
    base.update(settings)
    model = DisalModel(Settings(**base), adapter_factory=HashingAdapter, head_config=HeadConfig(steps=30))
    return create_app(model).test_client(), model


def setup(client, host: str, token: str | None, project: str = "1.1", auth: dict | None = None):
    body = {"project": project, "schema": SCHEMA, "hostname": host}
    if token is not None:
        body["access_token"] = token
    return client.post("/setup", json=body, headers=auth or {})


def assert_never_sent(server: RecordingServer, secret: str) -> None:
    forms = secret_forms(secret)
    for rec in server.requests:
        flat = " ".join(f"{k}: {v}" for k, v in rec.headers.items()) + rec.path + rec.body.decode(errors="replace")
        assert not any(f in flat for f in forms), f"{secret[:6]}… was sent to {server.url}{rec.path}"


@pytest.fixture
def evil():
    servers = [evil_label_studio(), evil_label_studio()]
    yield servers
    for s in servers:
        s.close()


def test_the_operator_key_never_goes_to_a_host_learnt_from_setup(tmp_path, evil):
    host, other = evil
    client, model = real_http_backend(tmp_path, label_studio_url=None, label_studio_api_key=OPERATOR_KEY)
    try:
        # the probe's exact attack: no token in /setup, the operator's key would have been used
        r = setup(client, host.url, None)
        assert r.status_code == 422 and "no token for" in r.get_json()["message"]
        assert "only ever sent to LABEL_STUDIO_URL" in r.get_json()["message"]
        assert host.requests == []  # nothing at all was sent to the caller's host
        assert not (model.settings.model_dir / "projects").exists()
        # with its own token, a learnt host gets that token and nothing else
        r = setup(client, host.url, ATTACKER_TOKEN)
        assert r.status_code == 200, r.get_json()
        client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
        assert model.jobs.wait_idle(1, 30)
        assert host.requests and set(host.authorizations()) == {f"Token {ATTACKER_TOKEN}"}
        assert_never_sent(host, OPERATOR_KEY)
        # an unauthenticated /setup cannot move the project to another host
        r = setup(client, other.url, "another-token-123")
        assert r.status_code == 409 and f"bound to the Label Studio at {host.url}" in r.get_json()["message"]
        assert other.requests == []
        client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
        assert model.jobs.wait_idle(1, 30)
        assert other.requests == [] and set(host.authorizations()) == {f"Token {ATTACKER_TOKEN}"}
    finally:
        model.close()


def test_with_label_studio_url_set_a_setup_hostname_is_never_contacted(tmp_path, evil, fake):
    host, _ = evil
    real = serve_fake_labelstudio(fake)
    client, model = real_http_backend(tmp_path, label_studio_url=real.url, label_studio_api_key=TOKEN)
    try:
        r = setup(client, host.url, ATTACKER_TOKEN)
        assert r.status_code == 200, r.get_json()
        assert model.jobs.wait_idle(1, 30)
        assert host.requests == []
        assert real.requests and set(real.authorizations()) == {f"Token {TOKEN}"}
        assert fake.project["model_version"].startswith("disal-0001-coldstart-")
    finally:
        model.close()
        real.close()


def test_an_authenticated_setup_may_move_a_project_and_carries_only_its_own_token(tmp_path, evil):
    host, other = evil
    client, model = real_http_backend(tmp_path, label_studio_url=None, label_studio_api_key=OPERATOR_KEY,
                                      basic_auth_user="ml", basic_auth_pass="pass-word-1")
    auth = {"Authorization": basic("ml", "pass-word-1")}
    try:
        assert setup(client, host.url, ATTACKER_TOKEN, auth=auth).status_code == 200
        r = setup(client, other.url, "moved-token-77", auth=auth)
        assert r.status_code == 200, r.get_json()
        assert model.jobs.wait_idle(1, 30)
        assert set(other.authorizations()) == {"Token moved-token-77"}
        assert_never_sent(other, OPERATOR_KEY)
        assert_never_sent(host, OPERATOR_KEY)
        assert_never_sent(other, ATTACKER_TOKEN)  # the old host's token stays with the old host
    finally:
        model.close()


def test_the_rule_itself():
    tok = SetupToken("http://ls.local:8080", "t-123")
    assert resolve("http://LS.local:8080/", "key", None, None) == ("http://ls.local:8080", "key")
    assert resolve("http://ls.local:8080", None, None, tok) == ("http://ls.local:8080", "t-123")
    assert resolve(None, "key", "http://ls.local:8080/", tok) == ("http://ls.local:8080", "t-123")
    with pytest.raises(CredentialsError, match="no token for"):
        resolve(None, "key", "http://elsewhere:8080", tok)  # a token goes only to the host it came with
    with pytest.raises(CredentialsError, match="no Label Studio URL"):
        resolve(None, "key", None, None)
    with pytest.raises(CredentialsError, match="must not carry credentials"):
        normalize_host_url("http://user:pw@ls.local")
    assert "t-123" not in repr(tok)


# -- non-ASCII basic auth -----------------------------------------------------------------------
@pytest.mark.parametrize("password", ["pässwörd-ü", "пароль-секрет", "plain-ascii-pass"])
def test_basic_auth_with_any_characters_answers_200_or_401_never_500(backend_with, password, caplog):
    client, _ = backend_with(basic_auth_user="annotator", basic_auth_pass=password)
    good = [basic("annotator", password)]
    try:
        good.append(basic("annotator", password, "latin-1"))  # how Python's requests encodes a str password
    except UnicodeEncodeError:
        pass
    bad = [basic("ü", "x"), basic("annotator", password + "x"), basic("annotator", "ü" + password[1:]),
           basic("annötator", password), "Basic ü", "Basic ====", "Basic", "Basic " + base64.b64encode(b"no-colon").decode(),
           "Bearer " + password.encode("utf-8").hex(), "Digest username=annotator", "Basic " + "A" * 5000, ""]
    with caplog.at_level(logging.ERROR):
        for header in good:
            assert client.get("/health", headers={"Authorization": header}).status_code == 200
        for header in bad:
            r = client.get("/health", headers={"Authorization": header} if header else {})
            assert r.status_code == 401, header
            assert r.get_json()["message"] == "authentication required"
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


# -- the redactor ---------------------------------------------------------------------------------
def record(msg, *args, exc=None) -> logging.LogRecord:
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, msg, args, exc)
    return rec


def test_the_redactor_masks_secrets_their_base64_forms_headers_and_cookies():
    red = SecretRedactor()
    red.add_secret("tok-SECRET-123")
    red.add_secret("pässwort", user="ml")
    b64 = base64.b64encode("ml:pässwort".encode()).decode()
    cases = [
        record("calling with token %s", "tok-SECRET-123"),
        record("header Authorization: Basic " + b64),
        record("(b'Set-Cookie', b'sessionid=abc123def; expires=...'), (b'Set-Cookie', b'csrftoken=XyZ')"),
        record("{'authorization': 'Token 0f1e2d3c4b5a'}"),
        record("b64 %s plain %s", base64.b64encode(b"tok-SECRET-123").decode(), "pässwort"),
    ]
    for rec in cases:
        red.filter(rec)
        text = rec.getMessage()
        for s in ("tok-SECRET-123", "pässwort", b64, "abc123def", "XyZ", "0f1e2d3c4b5a",
                  base64.b64encode(b"tok-SECRET-123").decode()):
            assert s not in text, text
        assert MASK in text
    try:
        raise RuntimeError("failed with Authorization: Token tok-SECRET-123")
    except RuntimeError:
        import sys

        rec = record("job failed", exc=sys.exc_info())
    red.filter(rec)
    assert "tok-SECRET-123" not in rec.exc_text and MASK in rec.exc_text
    plain = record("project 3: pushed 20 predictions in 0.4s")
    red.filter(plain)
    assert plain.getMessage() == "project 3: pushed 20 predictions in 0.4s"


def test_the_backend_masks_setup_tokens_in_its_logs(backend_with, fake, caplog):
    client, model = backend_with(label_studio_url=None, label_studio_api_key=None)
    from disal.redaction import REDACTOR

    with caplog.at_level(logging.INFO):
        connect(client, model, fake)
        logging.getLogger("disal.test").info("echo %s", TOKEN)
    for rec in caplog.records:
        REDACTOR.filter(rec)
        assert TOKEN not in rec.getMessage()


# -- the /setup token across a restart ------------------------------------------------------------
def test_a_restarted_backend_uses_the_saved_setup_token_kept_0600_and_nowhere_else(backend_with, fake, tmp_path):
    import json
    import os
    import stat

    from fake_labelstudio import setup_payload

    model_dir = tmp_path / "shared_model_dir"
    client, model = backend_with(label_studio_url=None, label_studio_api_key=None, model_dir=model_dir)
    connect(client, model, fake)
    path = model_dir / "projects" / "1" / "setup_token.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text()) == {"host": "http://labelstudio.test", "token": TOKEN}
    assert TOKEN not in (model_dir / "projects" / "1" / "project.json").read_text()
    model.close()
    # a new process on the same MODEL_DIR, before Label Studio calls /setup again
    client2, model2 = backend_with(label_studio_url=None, label_studio_api_key=None, model_dir=model_dir)
    before = len(fake.requests)
    fake.annotate(1, ["business"])
    fake.annotate(2, ["sport"])
    r = client2.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert r.status_code == 201
    assert model2.jobs.wait_idle(1, 30)
    health = client2.get("/health").get_json()
    assert health["projects"]["1"]["kind"] == "head", health["projects"]["1"]
    assert TOKEN not in json.dumps(health)
    assert len(fake.requests) > before
    # the saved token stays paired with its host: a /setup naming another host is still refused
    r = client2.post("/setup", json=setup_payload(fake, hostname="http://elsewhere.test", access_token="t-999"))
    assert r.status_code == 409
