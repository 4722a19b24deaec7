"""Shared fixtures: a tiny random-weight BERT saved to a folder (offline, seconds to build), and ONE
real Label Studio per pytest session, shared by tests/e2e and tests/browser (it takes ~35 s to start
the first time and ~350 MB while it runs)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.local_services import LS_BIN, LabelStudioServer, RedisServer, free_port  # noqa: E402

WORDS = (
    "the a of and to in is it that was for on are with as be at by this have from or one had not but what all "
    "were when we there can an your which their said if do will each about how up out them then she many some "
    "so these would other into has more her two like him see time could no make than first been its who now "
    "people my made over did down only way find use may water long little very after words called just where "
    "most know get through back much before go good new write our used me man too any day same right look think "
    "also around another came come work three word must because does part even place well such here take why "
    "things help put years different away again off went old number great tell men say small every found still "
    "between name should home big give air line set own under read last never us left end along while might next "
    "sound below saw something thought both few those always looked show large often together asked house world "
    "going want school important until form food keep children feet land side without boy once animals life "
    "enough took sometimes four head above kind began almost live page got earth need far hand high year mother "
    "light parts country father let night following picture being study second eyes soon times story boys since "
    "white days ever paper hard near sentence better best across during today others however sure means knew "
    "sports football match team goal election vote minister party market shares profit bank film music award "
    "star phone software computer internet game"
).split()


def tiny_vocab() -> dict[str, int]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return {t: i for i, t in enumerate(specials + sorted(set(WORDS)))}


def build_tiny_bert(folder: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A BertModel with random weights + a BertTokenizer from an in-memory vocab, saved to `folder`.

    Trap (transformers 5.x): BertTokenizer(vocab_file=...) is silently ignored; pass vocab={...}.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(seed)
    vocab = tiny_vocab()
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(folder)
    BertTokenizer(vocab=vocab, do_lower_case=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def shared_onnx_dir(tmp_path_factory):
    """Every backend process the tests start (scripts/local_services.BackendServer copies os.environ) keeps its
    exported encoder graph in one session folder: MiniLM is exported once (~5 s), not once per backend."""
    folder = tmp_path_factory.mktemp("onnx")
    before = os.environ.get("ONNX_DIR")
    os.environ["ONNX_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("ONNX_DIR", None)
    else:
        os.environ["ONNX_DIR"] = before


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio 1.23.2 on 127.0.0.1 (scripts/local_services.py), started on first use."""
    if not LS_BIN.exists():
        pytest.fail(f"{LS_BIN} is missing: `make test` installs it (make install-ls)")
    server = LabelStudioServer(tmp_path_factory.mktemp("labelstudio"), free_port())
    server.start()
    print(f"\nLabel Studio started in {server.started_in:.1f}s at {server.url}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server (Debian's, installed by `make install-system`) on 127.0.0.1, one per session."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), free_port())
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


def pytest_addoption(parser):
    parser.addoption("--job-queue", choices=("sqlite", "redis"), default="sqlite",
                     help="the durable queue every backend of the session uses: sqlite (the embedded default, "
                          "MODEL_DIR) or redis (a real redis-server started for the session; `make test-redis`)")


@pytest.fixture(scope="session", autouse=True)
def job_queue_mode(request, tmp_path_factory):
    """With --job-queue=redis, every BackendServer (scripts/local_services) takes REDIS_URL from here."""
    if request.config.getoption("--job-queue") != "redis":
        yield "sqlite"
        return
    server = RedisServer(tmp_path_factory.mktemp("session-redis"), free_port()).start()
    os.environ["DISAL_TESTS_REDIS_URL"] = server.url
    try:
        yield "redis"
    finally:
        os.environ.pop("DISAL_TESTS_REDIS_URL", None)
        server.stop()
