"""Shared fixtures: the real bundled model, real FAISS indexes in temporary folders.

Every answer produced in-process is checked for verbatim citations (see ``_verified``).
"""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
SHARED = ROOT.parent / "shared"

# Tests never touch the repository's indexes/: the default index lives in a temp dir.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="qa-tests-"))
os.environ["QA_INDEX"] = str(_SESSION_DIR / "default")
os.environ["QA_CORPUS"] = str(SEEDS)

import qa  # noqa: E402
import qa.api  # noqa: E402
from qa.settings import Settings  # noqa: E402

PRODUCED: list = []


def assert_verbatim(result, index=None, settings=None) -> None:
    """Every citation's quote is the document text at its offsets (and in the file, for files)."""
    settings = settings or Settings.from_env()
    idx = qa.api.get_engine(index, settings).index
    for n, c in enumerate(result.citations, start=1):
        text = idx.store.document(c.doc_id).text
        assert text[c.start:c.end] == c.quote, f"[{n}] not verbatim at {c.doc_id}:{c.start}-{c.end}"
        assert c.quote in c.passage, f"[{n}] quote not inside its passage"
        assert f"[{n}]" in result.text, f"marker [{n}] missing from the answer text"
        source = SEEDS / c.doc_id
        if source.exists():
            assert source.read_text(encoding="utf-8")[c.start:c.end] == c.quote
    markers = {int(m) for m in __import__("re").findall(r"\[(\d+)\]", result.text)}
    assert markers <= set(range(1, len(result.citations) + 1)), "a marker points to no citation"


def _verified(fn):
    @functools.wraps(fn)
    def wrapper(question, history=None, **kwargs):
        result = fn(question, history, **kwargs)
        assert_verbatim(result, kwargs.get("index"), kwargs.get("settings"))
        PRODUCED.append(result)
        return result

    return wrapper


qa.answer = qa.api.answer = _verified(qa.api.answer)


@pytest.fixture(scope="session")
def embedder():
    from qa.embed import get_embedder

    return get_embedder()


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def seeds_index(embedder, settings) -> Path:
    """A real index of the seed reports, built once per session."""
    path = _SESSION_DIR / "seeds"
    qa.index_paths([SEEDS], index=path, settings=settings)
    return path


@pytest.fixture()
def corpus(tmp_path) -> Path:
    """A writable copy of the seed corpus."""
    target = tmp_path / "corpus"
    shutil.copytree(SEEDS, target)
    return target


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MilvusServer:
    """A real milvus-lite server process answering gRPC on 127.0.0.1 (Milvus' own engine, embedded)."""

    def __init__(self, folder: Path) -> None:
        from milvus_lite.server import Server

        folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.server = Server(str(folder / "milvus.db"), address=f"127.0.0.1:{self.port}")
        if not self.server.start():
            raise RuntimeError("milvus-lite did not start")
        self.store = f"milvus://127.0.0.1:{self.port}"
        self._wait()

    def _wait(self) -> None:
        import time

        from pymilvus import MilvusClient

        deadline = time.monotonic() + 60
        while True:
            try:
                MilvusClient(uri=f"http://127.0.0.1:{self.port}", timeout=5).list_collections()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self) -> None:
        from qa.index.milvus import parse_store, disconnect

        disconnect(parse_store(self.store))
        self.server.stop()


@pytest.fixture(scope="session")
def milvus_server():
    """One milvus-lite server for the session, on a free port."""
    folder = Path(tempfile.mkdtemp(prefix="qa-milvus-", dir=_SESSION_DIR))
    server = MilvusServer(folder)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster (2 CPUs, a small object store) for the session."""
    import ray

    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def titled_report(folder: Path) -> Path:
    """An HTML report whose later paragraphs never repeat the words of its title."""
    body = "".join(f"<p>{s}</p>" for s in [
        "Rescue boats reached the capsized vessel two hours after it left the harbour at dawn.",
        "Coast guard divers searched the hull through the night while families waited on the quay.",
        "Officials said the boat carried twice the number of passengers it was licensed for. " * 8,
        "The port authority suspended all sailings until an inquiry reports, the minister told parliament. " * 8,
        "Insurers estimated the losses at four million dollars, most of it cargo and the vessel itself. " * 8,
    ])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ferry.html"
    path.write_text(f"<html><head><title>Zanzibar ferry disaster</title></head><body>{body}</body></html>",
                    encoding="utf-8")
    return path
