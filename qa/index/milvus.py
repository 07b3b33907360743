"""Dense, keyword and hybrid search served by Milvus: the store past one machine.

One collection per index holds, for each passage under its stable id: the document id,
offsets, page, the passage text, its index terms (our own tokenizer's output, joined by
spaces, under a whitespace analyzer feeding Milvus' BM25 function, so the engine scores
exactly the terms :func:`qa.index.terms.terms` gives locally) and the dense vector.
Milvus does the BM25 and dense searches, the document filter (a Milvus expression) and
the reciprocal rank fusion of both (:meth:`MilvusSearch.hybrid`).

The passage store (document texts, sentence offsets) stays in the index directory,
written in generations as for the local store; the collection is changed in place, in
an order that keeps the live generation answering (see :func:`qa.index.build_index`):
passages with ids at or above the manifest's ``next_id`` are never searched, so rows
left by a killed update are invisible and removed by the next one.

The index's fixed parameters (format, model, dimension, chunking) are the collection's
description and are checked against the manifest on open.

``store`` settings: ``milvus:PATH.db`` (milvus-lite, in process), ``milvus://HOST:PORT``
(a server or cluster; ``QA_MILVUS_TOKEN``, ``QA_MILVUS_TLS``, ``QA_MILVUS_SERVER_PEM``).
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from qa.index.store import IndexCorrupt, IndexMismatch, IndexProblem, reading
from qa.index.terms import terms
from qa.types import Passage

Hits = list[tuple[int, float]]
TEXT_MAX = 16_000  # characters of a passage's text kept in the collection (VARCHAR holds 65,535 bytes)
TERMS_MAX = 60_000
INSERT_BATCH = 1_000
TIMEOUT = 10.0  # seconds a search or count may take before the store counts as unreachable
WRITE_TIMEOUT = 300.0  # an insert, delete, create or flush
FIELDS = ("id", "doc_id", "start", "end", "page", "text", "terms", "dense", "sparse")


class StoreUnavailable(IndexProblem):
    """The search engine did not answer (stopped, unreachable, dropped connection)."""


@dataclass(frozen=True)
class MilvusTarget:
    """Where a Milvus store lives and how to reach it."""

    uri: str
    token: str = ""
    server_pem: str = ""
    server_name: str = ""
    shards: int = 1  # of a new collection: one per ~parallel writer (a cluster's data nodes)
    replicas: int = 1  # in-memory copies loaded for search: more serve more analysts at once

    @property
    def local(self) -> bool:
        return not self.uri.startswith(("http://", "https://"))

    def describe(self) -> str:
        return self.uri


def parse_store(spec: str, token: str = "", tls: bool = False, server_pem: str = "",
                server_name: str = "", shards: int = 1, replicas: int = 1) -> MilvusTarget | None:
    """``""``/``local`` → None (FAISS + bm25s); ``milvus:PATH.db`` or ``milvus://HOST:PORT`` → a target."""
    spec = (spec or "").strip()
    if spec in ("", "local", "faiss"):
        return None
    if spec.startswith("milvus://"):
        host = spec[len("milvus://"):].rstrip("/")
        if not re.fullmatch(r"[\w.-]+(:\d+)?", host):
            raise ValueError(f"store {spec!r}: expected milvus://HOST:PORT")
        scheme = "https" if tls or server_pem else "http"
        return MilvusTarget(f"{scheme}://{host}", token, server_pem, server_name, max(1, shards), max(1, replicas))
    if spec.startswith("milvus:"):
        db = Path(spec[len("milvus:"):]).expanduser()
        if db.suffix != ".db":
            raise ValueError(f"store {spec!r}: a milvus-lite file must end in .db (milvus:PATH.db)")
        return MilvusTarget(str(db.resolve()))
    raise ValueError(f"store {spec!r}: use milvus:PATH.db, milvus://HOST:PORT, or nothing for the local store")


_clients: dict[MilvusTarget, object] = {}
_clients_lock = threading.Lock()


def connect(target: MilvusTarget):
    """A client of ``target``, one per process (milvus-lite allows one opener of a file)."""
    with _clients_lock:
        return _connect(target)


def _connect(target: MilvusTarget):
    client = _clients.get(target)
    if client is None:
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:
            raise ValueError("a Milvus store needs the scale-out extra: pip install -e \".[scale]\"") from exc

        kwargs: dict[str, object] = {"uri": target.uri, "timeout": WRITE_TIMEOUT}
        if target.token:
            kwargs["token"] = target.token
        if target.server_pem:
            kwargs["server_pem_path"] = target.server_pem
        if target.server_name:
            kwargs["server_name"] = target.server_name
        if target.local:
            Path(target.uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            client = MilvusClient(**kwargs)
        except Exception as exc:
            raise StoreUnavailable(f"cannot reach the Milvus store at {target.describe()}: {_why(exc)}") from exc
        _clients[target] = client
    return client


def disconnect(target: MilvusTarget, client=None) -> None:
    """Close and forget the client of ``target`` (only if it is still ``client``, when given)."""
    with _clients_lock:
        if client is not None and _clients.get(target) is not client:
            return
        client = _clients.pop(target, None)
    if client is not None:
        try:
            client.close()
        except Exception:
            pass


def _why(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def collection_name(index_name: str) -> str:
    """A new collection's name: the index folder's name and the time, so a rebuild never
    overwrites the collection the live generation reads."""
    slug = re.sub(r"[^A-Za-z0-9_]", "_", index_name)[:120] or "index"
    return f"qa_{slug}_{time.time_ns():x}"


class MilvusSearch:
    """One index's collection: dense, BM25 and fused search by stable passage id.

    ``next_id`` bounds the ids searched (rows of a killed update are never returned);
    ``vocab``/``doc_freqs`` count the passages holding each term (answering weighs rare
    terms), kept with the passage store since Milvus does not expose them.
    """

    kind = "milvus"

    def __init__(self, target: MilvusTarget, collection: str, dim: int, next_id: int,
                 vocab: dict[str, int] | None = None, doc_freqs: np.ndarray | None = None) -> None:
        self.target = target
        self.collection = collection
        self.dim = dim
        self.next_id = next_id
        self.counts: Counter[str] = Counter()
        if vocab:
            self.counts.update({t: int(doc_freqs[i]) for t, i in vocab.items()})  # type: ignore[index]
        self.pending = np.zeros(0, np.int64)  # removed passages, deleted once the new generation is live
        self.stored_uri = ""  # where the collection was when its generation was saved

    # ------------------------------------------------------------ connection

    @property
    def client(self):
        return connect(self.target)

    def _call(self, what: str, fn, *args, **kwargs):
        """Run a client call with a deadline; an engine that does not answer becomes StoreUnavailable.

        Without a deadline pymilvus retries an unreachable server for minutes.
        """
        kwargs.setdefault("timeout", TIMEOUT if what in ("search", "hybrid search", "count", "has_collection",
                                                          "describe_collection", "load_collection")
                          else WRITE_TIMEOUT)
        client = getattr(fn, "__self__", None)
        try:
            return fn(*args, **kwargs)
        except IndexProblem:
            raise
        except Exception as exc:
            if _is_connection_error(exc):
                disconnect(self.target, client)
                raise StoreUnavailable(f"the Milvus store at {self.target.describe()} did not answer ({what}): "
                                       f"{_why(exc)}; is it running?") from exc
            raise IndexCorrupt(f"the Milvus collection {self.collection} at {self.target.describe()} refused "
                               f"{what}: {_why(exc)}") from exc

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, target: MilvusTarget, collection: str, dim: int, fixed: dict) -> MilvusSearch:
        """A new, empty collection whose description records the index's ``fixed`` parameters."""
        from pymilvus import DataType, Function, FunctionType

        search = cls(target, collection, dim, 0)
        client = search.client
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False,
                                      description=json.dumps(fixed, sort_keys=True))
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=65_535)
        schema.add_field("start", DataType.INT64)
        schema.add_field("end", DataType.INT64)
        schema.add_field("page", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=65_535)
        schema.add_field("terms", DataType.VARCHAR, max_length=65_535, enable_analyzer=True,
                         analyzer_params={"tokenizer": "whitespace"})
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(Function(name="terms_bm25", function_type=FunctionType.BM25,
                                     input_field_names=["terms"], output_field_names=["sparse"]))
        index_params = client.prepare_index_params()
        index_params.add_index(field_name="dense", index_type="AUTOINDEX", metric_type="IP")
        from qa.index.keyword import BM25_B, BM25_K1

        index_params.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                               params={"bm25_k1": BM25_K1, "bm25_b": BM25_B})
        extra = {} if target.local else {"num_shards": target.shards}
        search._call("create_collection", client.create_collection, collection_name=collection, schema=schema,
                     index_params=index_params, consistency_level="Strong", **extra)
        return search

    def check(self, fixed: dict, passages: int, path: Path, pending: int = 0) -> None:
        """The collection exists, was built with ``fixed`` and holds ``passages`` searchable rows
        (and up to ``pending`` removed ones whose delete comes after the save)."""
        client = self.client
        if not self._call("has_collection", client.has_collection, self.collection):
            raise IndexCorrupt(f"index at {path}: its Milvus collection {self.collection} is missing at "
                               f"{self.target.describe()}; rebuild it with `qa index CORPUS --index {path} --rebuild`")
        info = self._call("describe_collection", client.describe_collection, self.collection)
        try:
            have = json.loads(info.get("description") or "{}")
        except ValueError:
            have = {}
        if have != fixed:
            raise IndexMismatch(f"index at {path}: the Milvus collection {self.collection} was built with "
                                f"{have or 'unknown settings'}, the index says {fixed}; rebuild it with "
                                f"`qa index CORPUS --index {path} --rebuild`")
        held = self.count()
        if not passages <= held <= passages + pending:
            raise IndexCorrupt(f"index at {path}: the Milvus collection {self.collection} holds {held} passages, "
                               f"the index {passages} (rows were deleted or added outside qa); rebuild it with "
                               f"`qa index CORPUS --index {path} --rebuild`")

    def count(self) -> int:
        """Searchable rows (ids below ``next_id``)."""
        if self.target.local or self.target.replicas == 1:
            self._call("load_collection", self.client.load_collection, self.collection)
        else:
            self._call("load_collection", self.client.load_collection, self.collection,
                       replica_number=self.target.replicas)
        rows = self._call("count", self.client.query, self.collection, filter=f"id < {self.next_id}",
                          output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def drop(self) -> None:
        """Remove the whole collection (after a rebuild made another one live)."""
        self._call("drop_collection", self.client.drop_collection, self.collection)

    def __len__(self) -> int:
        return self.count()

    # ------------------------------------------------------------ writes

    def add_passages(self, passages: Sequence[Passage], vectors: np.ndarray,
                     searched: Sequence[str] | None = None) -> None:
        """Upsert ``passages`` (by id) with their vectors, in batches; counts their terms.

        ``searched``: the texts their terms come from, when not the passages' own (a lead before each).
        """
        rows = []
        for i, (p, vec) in enumerate(zip(passages, vectors)):
            toks = terms(searched[i] if searched is not None else p.text)
            self.counts.update(set(toks))
            rows.append({"id": int(p.passage_id), "doc_id": p.doc_id, "start": int(p.start), "end": int(p.end),
                         "page": -1 if p.page is None else int(p.page), "text": _clip(p.text, TEXT_MAX),
                         "terms": _clip(" ".join(toks), TERMS_MAX), "dense": np.asarray(vec, np.float32).tolist()})
            if len(rows) >= INSERT_BATCH:
                self._call("upsert", self.client.upsert, self.collection, rows)
                rows = []
        if rows:
            self._call("upsert", self.client.upsert, self.collection, rows)
        if len(passages):
            self.next_id = max(self.next_id, max(int(p.passage_id) for p in passages) + 1)

    def forget(self, texts: Iterable[str]) -> None:
        """Take the terms of removed passages (their ``texts``) out of the counts."""
        for text in texts:
            self.counts.subtract(set(terms(text)))
        self.counts = +self.counts

    def delete(self, ids: np.ndarray, texts: Iterable[str] = ()) -> None:
        """Delete passages ``ids`` from the collection; ``texts`` (theirs) also leave the counts."""
        self.forget(texts)
        ids = np.asarray(ids, dtype=np.int64)
        for lo in range(0, len(ids), 10_000):
            self._call("delete", self.client.delete, self.collection, ids=ids[lo:lo + 10_000].tolist())

    def delete_from(self, first_id: int) -> None:
        """Delete rows with ids ``>= first_id``: what a killed update inserted and never made live."""
        self._call("delete", self.client.delete, self.collection, filter=f"id >= {int(first_id)}")

    def flush(self) -> None:
        if not self.target.local:
            self._call("flush", self.client.flush, self.collection)

    # ------------------------------------------------------------ reads

    def _filter(self, doc_ids: Sequence[str] | None, doc_filter: np.ndarray | None) -> str:
        expr = f"id < {self.next_id}"
        if doc_ids is not None:
            expr += f" and doc_id in {json.dumps(list(doc_ids), ensure_ascii=False)}"
        elif doc_filter is not None:
            expr += f" and id in {json.dumps(np.asarray(doc_filter, dtype=np.int64).tolist())}"
        return expr

    def search(self, query, k: int, doc_filter: np.ndarray | None = None,
               doc_ids: Sequence[str] | None = None) -> Hits:
        """Dense search for a vector ``query``, BM25 for a list of index terms."""
        if isinstance(query, np.ndarray):
            return self.dense_search(query, k, doc_filter, doc_ids)
        return self.keyword_search(query, k, doc_filter, doc_ids)

    def dense_search(self, vector: np.ndarray, k: int, doc_filter: np.ndarray | None = None,
                     doc_ids: Sequence[str] | None = None) -> Hits:
        res = self._call("search", self.client.search, self.collection, data=[_vec(vector)], anns_field="dense",
                         limit=k, filter=self._filter(doc_ids, doc_filter), search_params={"metric_type": "IP"},
                         output_fields=["id"])
        return _hits(res)

    def keyword_search(self, query_terms: Sequence[str], k: int, doc_filter: np.ndarray | None = None,
                       doc_ids: Sequence[str] | None = None) -> Hits:
        text = " ".join(t for t in query_terms if t in self.counts)
        if not text:
            return []
        res = self._call("search", self.client.search, self.collection, data=[text], anns_field="sparse",
                         limit=k, filter=self._filter(doc_ids, doc_filter), search_params={"metric_type": "BM25"},
                         output_fields=["id"])
        return _hits(res)

    def hybrid(self, vector: np.ndarray, query_terms: Sequence[str], k: int, n: int, rrf_k: int,
               doc_filter: np.ndarray | None = None, doc_ids: Sequence[str] | None = None) -> Hits:
        """BM25 and dense, ``n`` candidates each, fused by the engine's RRF with constant ``rrf_k``."""
        from pymilvus import AnnSearchRequest, RRFRanker

        expr = self._filter(doc_ids, doc_filter)
        text = " ".join(t for t in query_terms if t in self.counts)
        reqs = [AnnSearchRequest(data=[_vec(vector)], anns_field="dense", param={"metric_type": "IP"},
                                 limit=n, expr=expr)]
        if text:
            reqs.append(AnnSearchRequest(data=[text], anns_field="sparse", param={"metric_type": "BM25"},
                                         limit=n, expr=expr))
        res = self._call("hybrid search", self.client.hybrid_search, self.collection, reqs=reqs,
                         ranker=RRFRanker(rrf_k), limit=k, output_fields=["id"])
        return _hits(res)

    def doc_freq(self, term: str) -> int:
        return int(self.counts.get(term, 0))

    # ------------------------------------------------------------ persistence (of the term counts)

    def save(self, directory: Path) -> None:
        """terms.json + doc_freq.npy (the term counts) and milvus.json (where the collection is)."""
        vocab = sorted(self.counts)
        (directory / "terms.json").write_text(json.dumps(vocab), encoding="utf-8")
        np.save(directory / "doc_freq.npy", np.array([self.counts[t] for t in vocab], dtype=np.int64))
        (directory / "milvus.json").write_text(json.dumps({"collection": self.collection, "uri": self.target.uri}),
                                               encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, target: MilvusTarget, dim: int, next_id: int) -> MilvusSearch:
        path = directory.parent
        with reading(path, "milvus.json"):
            info = json.loads((directory / "milvus.json").read_text(encoding="utf-8"))
            collection = info["collection"]
        with reading(path, "terms.json"):
            vocab = {t: i for i, t in enumerate(json.loads((directory / "terms.json").read_text(encoding="utf-8")))}
        with reading(path, "doc_freq.npy"):
            doc_freqs = np.load(directory / "doc_freq.npy")
            if len(doc_freqs) != len(vocab):
                raise ValueError("doc_freq.npy disagrees with terms.json")
        search = cls(target, collection, dim, next_id, vocab, doc_freqs)
        search.stored_uri = str(info.get("uri") or "")
        return search


def _vec(vector: np.ndarray) -> list[float]:
    return np.asarray(vector, dtype=np.float32).reshape(-1).tolist()


def _hits(res) -> Hits:
    if not res:
        return []
    return [(int(hit["id"]), float(hit["distance"])) for hit in res[0]]


def _clip(text: str, limit: int) -> str:
    """At most ``limit`` characters and 65,535 UTF-8 bytes (Milvus' VARCHAR bound)."""
    text = text[:limit]
    while len(text.encode("utf-8")) > 65_535:
        text = text[: len(text) * 9 // 10]
    return text


def _is_connection_error(exc: BaseException) -> bool:
    """pymilvus reports an unreachable server several ways (gRPC status, its own exceptions)."""
    name = type(exc).__name__
    text = str(exc).lower()
    return (name in ("MilvusUnavailableException", "RpcError", "_InactiveRpcError", "ConnectionNotExistException",
                     "FutureTimeoutError", "TimeoutError")
            or any(s in text for s in ("unavailable", "connect", "deadline", "timeout", "closed", "fail to",
                                       "socket", "broken pipe")))
