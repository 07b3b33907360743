"""The on-disk index: a store of passages under stable ids, dense and keyword search over them.

Modules by concern: :mod:`qa.index.terms` (text normalization), :mod:`qa.index.store`
(documents, passages, sentences, vectors, manifest, generations, checksums),
:mod:`qa.index.dense` (FAISS) and :mod:`qa.index.keyword` (BM25); this module is the
:class:`Index` facade and builds, updates, saves, loads and checks indexes.

Layout of ``indexes/<name>/``::

    CURRENT          name of the live generation (replaced atomically)
    gen-<stamp>/     manifest.json (settings, counts, next passage id, sizes and SHA-256 of every file),
                     documents.jsonl (metadata), texts.bin (all document texts, UTF-8, memory-mapped),
                     passages.npy (doc, start, end, page, first sentence, last sentence),
                     passage_ids.npy (the stable id of each passages.npy row),
                     sentences.npy (doc, start, end, page), passage_vectors.npy, sentence_vectors.npy,
                     dense.faiss (FAISS under an id map), bm25/ + keyword_ids.npy (bm25s and the passage
                     id of each of its documents), keyword_tf.npy (the term frequency behind each entry
                     of bm25s' matrix), terms.json + doc_freq.npy (passages holding each term)

Vectors, BM25 and texts are memory-mapped, so a large index opens in seconds and only
what a query touches becomes resident.

A passage's id is given when it is first indexed and kept while its document is
unchanged; search results, :class:`qa.types.Passage` and the dense and keyword indexes
all use it. An update deletes the ids of removed and changed documents from the
previous dense index and adds the new passages (FAISS HNSW, which cannot delete, and
an index whose size class changed are rebuilt from the stored vectors). BM25 drops
the removed passages' entries, tokenizes only the added passages and rescores every
entry from the stored term frequencies (:mod:`qa.index.keyword`), the same scores a
full rebuild gives; it is rebuilt in full, re-tokenizing every passage, only for an
index saved before keyword_tf.npy existed (its first update says so).

A save writes a new generation beside the live one and then swaps ``CURRENT`` with
``os.replace``, so a run killed at any moment leaves the previous index loadable; a
failed save (a full disk) removes its partial generation.

Every file's SHA-256 is in the manifest (hashed once, at save). On open, files up to
``EAGER_VERIFY_MAX`` bytes are verified before use and larger ones in a background
thread (a mismatch then stops every search); each document's text also carries its own
hash, checked whenever it is decoded, so a quote never comes from altered text.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from qa.chunk import chunk_document, passage_leads, searched_text
from qa.embed import Embedder, QueryEncoder, get_query_encoder, passage_encoder
from qa.index.dense import EXACT_FILTER_MAX, EXACT_MAX, HNSW_MAX, DenseSearch, FaissSearch, carry_over, kind_for
from qa.index.keyword import BM25_B, BM25_K1, Bm25Search, KeywordSearch
from qa.index.milvus import MilvusSearch, MilvusTarget, StoreUnavailable, collection_name, parse_store
from qa.index.store import (NO_PAGE, P_DOC, P_END, P_FIRST, P_LAST, P_PAGE, P_START, S_DOC, S_END, S_PAGE, S_START,
                            DocumentStore, IndexCorrupt, IndexMismatch, IndexNotFound, IndexProblem, IndexWriteError,
                            LeaseLost, PassageStore, corrupt, file_digest, leased, live, read_manifest, reading,
                            reads_lead, remove_generation, remove_stale, table_problem, verify_files,
                            write_generation, SentenceEncoder)
from qa.index.terms import STOPWORDS, terms
from qa.settings import Settings
from qa.types import Document

__all__ = [
    "BM25_B", "BM25_K1", "EXACT_FILTER_MAX", "EXACT_MAX", "FORMAT_VERSION", "HNSW_MAX", "NO_PAGE", "P_DOC", "P_END",
    "P_FIRST", "P_LAST", "P_PAGE", "P_START", "READABLE_FORMATS", "S_DOC", "S_END", "S_PAGE", "S_START", "STOPWORDS",
    "Bm25Search", "BuildReport", "DenseSearch", "DocumentStore", "FaissSearch", "Index", "IndexCorrupt",
    "IndexMismatch", "IndexNotFound", "IndexProblem", "IndexWriteError", "KeywordSearch", "MilvusSearch",
    "PassageStore", "StoreUnavailable", "fixed_params", "parse_store", "store_target",
    "Prepared", "build_index", "check_compatible", "check_index", "excluded_ids", "exclude_documents", "file_digest",
    "index_lock", "kind_for", "load_index", "read_manifest", "save_index", "table_problem", "terms", "update_index",
    "verify_files",
]

FORMAT_VERSION = 4
READABLE_FORMATS = (4,)  # 3 added checksums; 4 stable passage ids and id-keyed FAISS and BM25
EAGER_VERIFY_MAX = 64 * 2**20  # bigger files are hashed in the background after open
LONG_DOCUMENT = 1_000_000  # characters: a document this long reports its own chunking progress
# Generations replaced while a reader opens one, in a row, before it gives up: a writer that saves
# every second can replace several in a row while a busy machine opens one (tests/test_faults.py).
LOAD_ATTEMPTS = 20
EXCLUDED = "excluded.json"  # beside the generations: document ids every update of this index leaves out

Progress = Callable[[str, int, int], None]


class Prepared(NamedTuple):
    """A document chunked and embedded elsewhere: its sentences, passage spans and passage vectors."""

    sentences: list
    spans: list
    vectors: np.ndarray

    @classmethod
    def from_rows(cls, doc_id: str, sentences, spans, vectors: np.ndarray) -> Prepared:
        """From plain rows: sentences ``(start, end, page)``, spans ``(start, end, page, first, last)``; page -1: none."""
        from qa.chunk import PassageSpan
        from qa.types import Sentence

        page = lambda pg: None if int(pg) < 0 else int(pg)
        return cls([Sentence(doc_id, int(a), int(b), page(pg)) for a, b, pg in sentences],
                   [PassageSpan(doc_id, int(a), int(b), page(pg), int(f), int(l)) for a, b, pg, f, l in spans],
                   vectors)


@dataclass
class BuildReport:
    """What an (incremental) build did; ``embedded_*`` count fresh model work."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    unchanged: int = 0
    embedded_passages: int = 0
    embedded_sentences: int = 0
    seconds: float = 0.0
    keyword: str = ""  # what happened to the keyword index: "built", "updated", "rebuilt: why", or "" (untouched)


@dataclass
class Index:
    """A loaded index: the passage store and the dense and keyword search over its passage ids."""

    manifest: dict
    store: PassageStore
    dense: DenseSearch
    keyword: KeywordSearch
    path: Path | None = None
    problem: str | None = None  # set when a background checksum finds a file altered
    verified: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.verified.set()

    @property
    def documents(self) -> Sequence[Document]:
        return self.store.documents

    @property
    def doc_ids(self) -> list[str]:
        return self.store.doc_ids

    @property
    def fingerprints(self) -> list[str]:
        return self.store.fingerprints


# ---------------------------------------------------------------- build


def build_index(
    documents: Sequence[Document],
    settings: Settings,
    embedder: Embedder | QueryEncoder,
    previous: Index | None = None,
    progress: Progress | None = None,
    name: str = "index",
    prepared: Mapping[str, Prepared] | None = None,
) -> tuple[Index, BuildReport]:
    """Chunk and embed ``documents``, reusing passages, ids and vectors of unchanged documents in ``previous``.

    With ``previous``, its dense and keyword indexes are updated (and changed in place):
    the ids of removed and changed documents deleted, the new passages added. With a
    Milvus store (``settings.store``) a new build fills a new collection named after
    ``name``; an update deletes, then inserts above the previous ``next_id``, so the live
    generation keeps answering until the new one replaces it. ``prepared`` holds documents
    already chunked and embedded elsewhere (:mod:`qa.index.parallel`), by document id.
    """
    prepared = prepared or {}
    repeated = _repeated_id(documents)
    if repeated is not None:  # the store keys documents by id: a second one would make an unloadable index
        raise ValueError(f"document id {repeated!r} is given twice: every document needs its own id")
    target = store_target(settings)
    started = time.perf_counter()
    report = BuildReport()
    old = dict(zip(previous.doc_ids, previous.fingerprints)) if previous else {}
    new_ids = {d.doc_id for d in documents}
    report.removed = sorted(set(old) - new_ids)
    next_id = max(int(previous.manifest.get("next_id", 0)), previous.store.next_id) if previous else 0
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    # when each document was last (re)indexed; an index written before this was kept says when it was built
    was = previous.manifest.get("indexed") if previous else None
    was = was if isinstance(was, dict) else {}
    indexed: dict[str, str] = {}

    # per document: passages table, sentences table, passage vectors, sentence vectors, passage ids
    doc_blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]] = []
    fresh_p_text: list[str] = []
    fresh_s_text: list[str] = []
    fresh_shift: list[int] = []  # per fresh passage: characters of lead put before it
    fresh_slots: list[tuple[int, int, int]] = []  # (block, n_passages, n_sentences)
    if settings.passage_lead not in ("title", "none"):
        raise ValueError(f"QA_PASSAGE_LEAD={settings.passage_lead!r}: use 'title' or 'none'")
    with_lead = reads_lead(settings.index_params())
    ready_vecs: list[np.ndarray | None] = []  # per fresh slot: vectors made elsewhere, or None to embed here
    for doc_i, doc in enumerate(documents):
        prior = old.get(doc.doc_id)
        if prior is not None and prior == doc.fingerprint and previous is not None:
            part = previous.store.part(doc.doc_id)
            part.passages[:, P_DOC] = doc_i
            part.sentences[:, S_DOC] = doc_i
            doc_blocks.append((part.passages, part.sentences, part.passage_vectors, part.sentence_vectors, part.ids))
            report.unchanged += 1
            indexed[doc.doc_id] = was.get(doc.doc_id) or str(previous.manifest.get("built") or now)
            continue
        indexed[doc.doc_id] = now
        (report.changed if prior is not None else report.added).append(doc.doc_id)
        within = None
        if progress and len(doc.text) >= LONG_DOCUMENT:
            within = functools.partial(progress, f"chunking {doc.doc_id} (characters)")
        ready = prepared.get(doc.doc_id)
        if ready is not None:
            sentences, spans = ready.sentences, ready.spans
        else:
            sentences, spans = chunk_document(doc, settings.chunk_chars, settings.chunk_overlap, within)
        s_tab = np.array([[doc_i, s.start, s.end, NO_PAGE if s.page is None else s.page] for s in sentences],
                         dtype=np.int64).reshape(-1, 4)
        p_tab = np.array([[doc_i, p.start, p.end, NO_PAGE if p.page is None else p.page, p.first, p.last]
                          for p in spans], dtype=np.int64).reshape(-1, 6)
        fresh_slots.append((len(doc_blocks), len(spans), len(sentences)))
        if ready is not None:
            ready_vecs.append(ready.vectors)
        else:
            ready_vecs.append(None)
            leads = passage_leads(doc, [p.page for p in spans], with_lead) if with_lead else [""] * len(spans)
            for p, lead in zip(spans, leads):
                text = doc.text[p.start:p.end]
                fresh_p_text.append(searched_text(lead, text) if lead else text)
                fresh_shift.append(len(fresh_p_text[-1]) - len(text))
            if settings.sentence_vectors != "ondemand":  # on demand, no sentence is embedded now
                fresh_s_text.extend(doc.text[s.start:s.end] for s in sentences)
        doc_blocks.append((p_tab, s_tab, None, None, np.arange(next_id, next_id + len(spans), dtype=np.int64)))
        next_id += len(spans)
        if progress:
            progress("chunking", doc_i + 1, len(documents))

    on_demand = settings.sentence_vectors == "ondemand"
    if prepared and not on_demand:
        raise ValueError("documents embedded elsewhere carry passage vectors only: use QA_SENTENCE_VECTORS=ondemand")
    encoder = passage_encoder(embedder, settings.model_cache, settings.passage_precision) if fresh_p_text else embedder
    if settings.sentence_vectors == "derived":
        p_vecs, s_vecs = _embed_derived(encoder, fresh_p_text, fresh_s_text, doc_blocks, fresh_slots,
                                        settings.batch_size, progress, settings.sentence_context, fresh_shift)
    else:
        p_vecs, s_vecs = _embed_unique(encoder, fresh_p_text, [] if on_demand else fresh_s_text,
                                       settings.batch_size, progress)
    report.embedded_sentences = len(fresh_s_text) if settings.sentence_vectors == "separate" else 0
    del fresh_p_text, fresh_s_text  # embedded; BM25 reads its texts (keyword leads) from the store again
    p_off = s_off = 0
    fresh_ids, fresh_vecs = [], []
    for (block, n_p, n_s), ready_v in zip(fresh_slots, ready_vecs):
        p_tab, s_tab, _, _, ids = doc_blocks[block]
        if ready_v is not None:
            vecs = (np.asarray(ready_v, dtype=np.float32).reshape(n_p, -1) if n_p
                    else np.zeros((0, embedder.dim), np.float32))
            sv = None
        else:
            vecs, sv = p_vecs[p_off:p_off + n_p], None if on_demand else s_vecs[s_off:s_off + n_s]
            p_off += n_p
            s_off += n_s
        doc_blocks[block] = (p_tab, s_tab, vecs, sv, ids)
        fresh_ids.append(ids)
        fresh_vecs.append(vecs)
    report.embedded_passages = sum(n_p for _, n_p, _ in fresh_slots)
    # A new index embedded here holds the embedder's output as it is, in document order: no copies
    # (each a float32 row per passage: 136 MB at 89k passages, several of which set the build's peak).
    all_here = len(fresh_slots) == len(doc_blocks) and all(v is None for v in ready_vecs) and p_off == len(p_vecs)
    p_vecs = p_vecs if all_here else _stack(fresh_vecs, embedder.dim)

    dim = embedder.dim
    if target is not None:  # the engine keeps the passage vectors
        doc_blocks = [(p, s, np.zeros((len(p), 0), np.float32), sv, ids) for p, s, _, sv, ids in doc_blocks]
    passages, sentences = _concat_tables(doc_blocks)
    if target is not None:
        passage_vectors = np.zeros((len(passages), 0), np.float32)
    elif all_here:
        passage_vectors = p_vecs
    else:
        passage_vectors = _stack([b[2] for b in doc_blocks], dim)
    # The store's copy (exact scoring under a filter, rebuilds) is kept in half precision: half the
    # largest file of a big index; FAISS itself is built from the float32 vectors.
    store = PassageStore(list(documents), passages, _ids([b[4] for b in doc_blocks]), sentences,
                         passage_vectors.astype(np.float16),
                         None if on_demand else _stack([b[3] for b in doc_blocks], dim), sentence_encoder(settings),
                         dim=dim, context=pooling_context(settings), lead=with_lead)
    added = _ids(fresh_ids)
    if target is not None:
        dense = keyword = _fill_milvus(target, store, previous, added, p_vecs, dim,
                                       fixed_params(settings, dim), name, progress)
    elif previous is None:
        dense: DenseSearch = FaissSearch.build(store.ids, passage_vectors, store.passage_vectors)
        # FAISS holds its own copy now: the float32 vectors go before the terms are counted,
        # which is where a big build peaks (136 MB at 89k passages)
        del p_vecs, passage_vectors, fresh_vecs, s_vecs
        doc_blocks.clear()
        keyword: KeywordSearch = Bm25Search.build(store.ids, store.keyword_texts(store.ids), store.keyword_texts)
        report.keyword = "built"
    else:
        removed = previous.store.ids[~np.isin(previous.store.ids, store.ids)]
        dense, keyword = previous.dense, previous.keyword
        if isinstance(dense, FaissSearch):
            dense = carry_over(dense, removed, added, p_vecs, store.ids, lambda: passage_vectors, store.passage_vectors)
        else:
            dense.delete(removed)
            dense.add(added, p_vecs)
        if isinstance(dense, MilvusSearch):
            raise IndexMismatch("a Milvus index cannot be updated as a local one")
        if len(removed) or len(added):
            if isinstance(keyword, Bm25Search):
                keyword.texts_of = store.keyword_texts  # the survivors' texts, should it have to rebuild
            keyword.delete(removed)
            keyword.add(added, store.keyword_texts(added))
            if isinstance(keyword, Bm25Search):
                keyword.refresh()
                report.keyword = keyword.refreshed
    manifest = {
        "format": FORMAT_VERSION,
        "params": settings.index_params(),
        "dimension": dim,
        "documents": {d.doc_id: d.fingerprint for d in documents},
        "passages": int(len(passages)),
        "sentences": int(len(sentences)),
        "next_id": int(next_id),
        "dense": getattr(dense, "kind", type(dense).__name__),
        "bm25": {"k1": BM25_K1, "b": BM25_B},
        "built": now,
        "indexed": indexed,
    }
    if isinstance(dense, MilvusSearch):  # deleted from the collection once this generation is live
        manifest["milvus_pending"] = [int(i) for i in dense.pending]
    index = Index(manifest, store, dense, keyword)
    report.seconds = time.perf_counter() - started
    return index, report


def _repeated_id(documents: Sequence[Document]) -> str | None:
    seen: set[str] = set()
    for doc in documents:
        if doc.doc_id in seen:
            return doc.doc_id
        seen.add(doc.doc_id)
    return None


def store_target(settings: Settings) -> MilvusTarget | None:
    """The Milvus store ``settings`` name, or None for the local FAISS + bm25s files."""
    return parse_store(settings.store, settings.milvus_token, settings.milvus_tls, settings.milvus_server_pem,
                       settings.milvus_server_name, settings.milvus_shards, settings.milvus_replicas)


def fixed_params(settings: Settings, dim: int) -> dict:
    """What a Milvus collection records of its index, checked on every open."""
    return {"format": FORMAT_VERSION, "dimension": dim, **settings.index_params()}


def _fill_milvus(target: MilvusTarget, store: PassageStore, previous: Index | None, added: np.ndarray,
                 vectors: np.ndarray, dim: int, fixed: dict, name: str, progress: Progress | None) -> MilvusSearch:
    """Insert the new passages; the removed ones are only marked (``pending``) for after the save.

    The live generation must keep answering until the new one replaces it, so nothing it
    holds is deleted here: rows a killed update inserted (ids at or above its ``next_id``)
    and deletes a killed update left undone (its manifest's ``milvus_pending``) are cleaned
    first, then new rows go in above ``next_id``. A collection this build created is dropped
    if the build fails.
    """
    created = previous is None or not isinstance(previous.dense, MilvusSearch)
    if not created:
        search = previous.dense
        search.delete_from(int(previous.manifest.get("next_id", 0)))
        unfinished = np.asarray(previous.manifest.get("milvus_pending") or [], dtype=np.int64)
        if len(unfinished):
            search.delete(unfinished)
        removed = previous.store.ids[~np.isin(previous.store.ids, store.ids)]
        search.forget(previous.store.keyword_texts(removed))
    else:
        search = MilvusSearch.create(target, collection_name(name), dim, fixed)
        removed = np.zeros(0, np.int64)
    try:
        block = 5_000
        for lo in range(0, len(added), block):
            ids = added[lo:lo + block]
            search.add_passages([store.passage(int(i)) for i in ids], vectors[lo:lo + block],
                                list(store.keyword_texts(ids)))
            if progress:
                progress("storing in Milvus", min(lo + block, len(added)), len(added))
        search.next_id = max(search.next_id, store.next_id)
        search.flush()
    except BaseException:
        if created:
            with contextlib.suppress(Exception):
                search.drop()
        raise
    search.pending = removed
    return search


def _embed_unique(embedder: Embedder | QueryEncoder, p_text: list[str], s_text: list[str], batch_size: int,
                  progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """Embed each distinct text once, longest first in fixed blocks for a steady progress bar."""
    unique = list(dict.fromkeys(p_text + s_text))
    order = sorted(range(len(unique)), key=lambda i: -len(unique[i]))
    vectors = np.zeros((len(unique), embedder.dim), dtype=np.float32)
    block = max(batch_size * 8, 256)
    if progress:
        progress("embedding", 0, len(order))
    for lo in range(0, len(order), block):
        rows = order[lo:lo + block]
        vectors[rows] = embedder.encode([unique[i] for i in rows], batch_size=batch_size)
        if progress:
            progress("embedding", min(lo + block, len(order)), len(order))
    if len(unique) == len(p_text) and not s_text:  # no repeats: already in passage order
        return vectors, np.zeros((0, embedder.dim), np.float32)
    pos = {t: i for i, t in enumerate(unique)}
    take = lambda texts: vectors[[pos[t] for t in texts]] if texts else np.zeros((0, embedder.dim), np.float32)
    return take(p_text), take(s_text)


def _embed_derived(embedder: Embedder | QueryEncoder, p_text: list[str], s_text: list[str], blocks: list,
                   slots: list[tuple[int, int, int]], batch_size: int, progress: Progress | None,
                   context: float = 0.0, shifts: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Passage vectors and, from the same forward pass, each sentence's pooled tokens.

    ``shifts``: per passage, the characters its searched text puts before it (its lead).

    A sentence shared by two passages (the overlap) takes its vector from the first,
    less ``context`` times that passage's vector (what all its sentences share).
    """
    spans: list[list[tuple[int, int]]] = []
    owners: list[tuple[int, int] | None] = []  # per fresh sentence, in table order: (fresh passage, span)
    for block, _, _ in slots:
        p_tab, s_tab = blocks[block][0], blocks[block][1]
        found: list[tuple[int, int] | None] = [None] * len(s_tab)
        for _, p0, _, _, f, l in p_tab.tolist():
            p0 -= shifts[len(spans)] if shifts else 0
            spans.append([(int(s_tab[r, 1]) - p0, int(s_tab[r, 2]) - p0) for r in range(f, l)])
            for j, r in enumerate(range(f, l)):
                if found[r] is None:
                    found[r] = (len(spans) - 1, j)
        owners.extend(found)
    if progress:
        progress("embedding", 0, len(p_text))
    p_vecs = np.zeros((len(p_text), embedder.dim), dtype=np.float32)
    span_vecs: list[np.ndarray] = [np.zeros((0, embedder.dim), np.float32)] * len(p_text)
    block = max(batch_size * 8, 256)
    for lo in range(0, len(p_text), block):
        vecs, by_span = embedder.encode_with_spans(p_text[lo:lo + block], spans[lo:lo + block],
                                                   batch_size=batch_size)
        p_vecs[lo:lo + len(vecs)] = vecs
        span_vecs[lo:lo + len(vecs)] = by_span
        if progress:
            progress("embedding", min(lo + block, len(p_text)), len(p_text))
    s_vecs = np.zeros((len(owners), embedder.dim), dtype=np.float32)
    for n, owner in enumerate(owners):
        if owner is not None:
            s_vecs[n] = span_vecs[owner[0]][owner[1]] - context * p_vecs[owner[0]]
    s_vecs /= np.maximum(np.linalg.norm(s_vecs, axis=1, keepdims=True), 1e-12)
    alone = [n for n, owner in enumerate(owners) if owner is None]
    if alone:  # a sentence in no passage (not made by chunk_document today): embed it by itself
        s_vecs[alone] = embedder.encode([s_text[n] for n in alone], batch_size=batch_size)
    return p_vecs, s_vecs


def _concat_tables(blocks: list) -> tuple[np.ndarray, np.ndarray]:
    p_parts, s_parts = [], []
    s_base = 0
    for p_tab, s_tab, *_ in blocks:
        p_tab = p_tab.copy()
        p_tab[:, P_FIRST] += s_base
        p_tab[:, P_LAST] += s_base
        p_parts.append(p_tab)
        s_parts.append(s_tab)
        s_base += len(s_tab)
    passages = np.concatenate(p_parts) if p_parts else np.zeros((0, 6), np.int64)
    sentences = np.concatenate(s_parts) if s_parts else np.zeros((0, 4), np.int64)
    return passages, sentences


def _stack(parts: list, dim: int) -> np.ndarray:
    parts = [p for p in parts if p is not None and len(p)]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32) if parts else np.zeros((0, dim), np.float32)


def _ids(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


# ---------------------------------------------------------------- save / load


def save_index(index: Index, path: Path) -> Path:
    """Write ``index`` as a new generation under ``path`` and make it live atomically.

    A failure (a full disk, an interrupt) removes the partial generation and leaves the
    previous one live; a full disk raises :class:`IndexWriteError` saying so.
    """
    def write(gen: Path) -> None:
        index.store.save(gen)
        index.dense.save(gen)
        if index.keyword is not index.dense:
            index.keyword.save(gen)

    gen = write_generation(path, write, dict(index.manifest, format=FORMAT_VERSION))
    index.path = path
    return gen


def check_compatible(manifest: dict, settings: Settings, path: Path) -> None:
    """Refuse an index built with another model, chunking or format."""
    if manifest.get("format") not in READABLE_FORMATS:
        raise IndexMismatch(f"index at {path} has format {manifest.get('format')}, this version reads "
                            f"{', '.join(map(str, READABLE_FORMATS))}: rebuild it with `qa index CORPUS --index {path} --rebuild`")
    want = settings.index_params()
    have = manifest.get("params") or {}
    diffs = [f"{k}: index has {have.get(k)!r}, settings ask {want.get(k)!r}"
             for k in dict.fromkeys([*want, *have]) if have.get(k) != want.get(k)]
    if diffs:
        raise IndexMismatch(f"index at {path} was built with other settings ({'; '.join(diffs)}): "
                            f"rebuild it with `qa index CORPUS --index {path} --rebuild`, "
                            f"or use the settings it was built with")


# CPython 3.11 keeps one AST recursion counter per interpreter, so two threads parsing at once
# can raise "SystemError: AST constructor recursion depth mismatch" (cpython gh-106905). np.load
# parses every .npy header with ast.literal_eval, and loading is all of this process's parsing:
# one generation is read at a time (each is read once, then cached by its reader).
_LOADING = threading.RLock()  # re-entered only by the same thread (a test loads inside a load)


def load_index(path: Path, settings: Settings, *, mmap: bool = True, check_store: bool = True) -> Index:
    """Load the live generation at ``path``; mismatch or corruption raise with a rebuild hint.

    ``check_store``: a Milvus collection must hold exactly the manifest's passages (an
    update that repairs an interrupted one loads without that check).
    """
    for attempt in range(LOAD_ATTEMPTS):
        seen = live(path)
        try:
            gen, manifest = read_manifest(path)
            check_compatible(manifest, settings, path)
            with leased(gen), _LOADING:
                index = _load_generation(path, gen, manifest, mmap, sentence_encoder(settings),
                                         store_target(settings), check_store, pooling_context(settings))
        except LeaseLost:
            # a writer removed this generation before we held it: the live one is newer
            if attempt < LOAD_ATTEMPTS - 1:
                continue
            raise IndexCorrupt(corrupt(path, "the index kept changing while it was read")) from None
        except IndexCorrupt:
            # a writer made another generation live (and removed the one we were reading
            # before its manifest was read or its lease taken): read the new one
            if attempt < LOAD_ATTEMPTS - 1 and live(path) != seen:
                continue
            raise
        if live(path) != gen.name:  # replaced while we loaded it; its writer left it to us
            remove_generation(gen)
        return index
    raise AssertionError("unreachable")


def sentence_encoder(settings: Settings) -> Callable[[], SentenceEncoder]:
    """The encoder on-demand sentence vectors use: the light one answering loads anyway."""
    return lambda: get_query_encoder(settings.model, settings.model_cache, settings.batch_size)


def pooling_context(settings: Settings) -> float | None:
    """How on-demand sentence vectors are made: pooled in passage (the share of the passage
    vector taken out) or, for None, each sentence embedded alone."""
    if settings.sentence_pooling not in ("passage", "sentence"):
        raise ValueError(f"QA_SENTENCE_POOLING={settings.sentence_pooling!r}: use 'passage' or 'sentence'")
    return settings.sentence_context if settings.sentence_pooling == "passage" else None


def _load_generation(path: Path, gen: Path, manifest: dict, mmap: bool,
                     encoder: Callable[[], SentenceEncoder] | None = None, target: MilvusTarget | None = None,
                     check_store: bool = True, context: float | None = None) -> Index:
    files = manifest.get("files") or {}
    big = [n for n, size in files.items() if isinstance(size, int) and size > EAGER_VERIFY_MAX]
    sizes_ok = verify_files(path, gen, {"files": files})
    if sizes_ok:
        raise IndexCorrupt(corrupt(path, sizes_ok[0]))
    problems = verify_files(path, gen, manifest, [n for n in files if n not in big])
    if problems:
        raise IndexCorrupt(corrupt(path, problems[0]))
    store = PassageStore.load(gen, manifest, mmap, encoder, context)
    if manifest.get("dense") == "milvus":
        if target is None:
            raise IndexMismatch(f"index at {path} is served by Milvus: set QA_STORE (or --store) to its store")
        search = MilvusSearch.load(gen, target, manifest["dimension"], int(manifest.get("next_id", 0)))
        if check_store:
            fixed = {"format": manifest["format"], "dimension": manifest["dimension"], **manifest["params"]}
            search.check(fixed, manifest["passages"], path, len(manifest.get("milvus_pending") or []))
        return Index(manifest, store, search, search, path)
    with reading(path, "dense.faiss"):
        dense = FaissSearch.load(gen, store.passage_vectors, str(manifest.get("dense") or ""))
    keyword = Bm25Search.load(gen, store.keyword_texts, mmap)
    shapes = [
        ("dense.faiss", len(dense) == manifest["passages"]),
        ("keyword_ids.npy", len(keyword) == manifest["passages"]),
    ]
    for name, ok in shapes:
        if not ok:
            raise IndexCorrupt(corrupt(path, f"{name} disagrees with the manifest"))
    problem = keyword.problem()
    if problem:
        raise IndexCorrupt(corrupt(path, problem))
    index = Index(manifest, store, dense, keyword, path)
    if big and manifest.get("checksums"):
        index.verified.clear()
        _verify_in_background(index, path, gen, manifest, big)
    return index


def _verify_in_background(index: Index, path: Path, gen: Path, manifest: dict, names: list[str]) -> None:
    """Hash the big files after open; a mismatch marks the index so every search refuses it."""
    def run() -> None:
        try:
            problems = verify_files(path, gen, manifest, names)
        except OSError as exc:  # the generation was replaced and removed meanwhile
            problems = [] if live(path) != gen.name else [f"unreadable ({exc})"]
        if problems:
            index.problem = corrupt(path, problems[0])
        index.verified.set()

    threading.Thread(target=run, name=f"qa-verify-{gen.name}", daemon=True).start()


def check_index(path: Path, settings: Settings | None = None) -> list[str]:
    """Everything wrong with the index at ``path`` (empty when it is sound): for ``qa check``.

    An index served by Milvus is checked against its collection in the store ``settings`` name.
    """
    try:
        gen, manifest = read_manifest(path)
    except IndexProblem as exc:
        return [str(exc)]
    problems = []
    if manifest["format"] not in READABLE_FORMATS:
        problems.append(f"format {manifest['format']} is not one this version reads")
    if not manifest.get("checksums"):
        problems.append("the manifest has no checksums (built before format 3), so changed files cannot be found")
    problems += verify_files(path, gen, manifest)
    if problems:
        return problems
    try:
        index = _load_generation(path, gen, dict(manifest, checksums={}), mmap=True,
                                 target=store_target(settings) if settings else None)
        for i in range(len(index.documents)):
            index.documents[i]
        lengths = [len(d.text) for d in index.documents]
        problem = table_problem(index.store.table, index.store.sentences, lengths)
        if problem:
            problems.append(problem)
    except (IndexProblem, ValueError) as exc:
        problems.append(str(exc))
    return problems


def update_index(
    path: Path,
    documents: Sequence[Document],
    settings: Settings,
    embedder: Embedder | QueryEncoder,
    *,
    rebuild: bool = False,
    sources: Sequence[str] = (),
    progress: Progress | None = None,
    prepared: Mapping[str, Prepared] | None = None,
) -> tuple[Index, BuildReport]:
    """Bring the index at ``path`` up to ``documents``: embed only new or changed ones.

    The previous generation's FAISS index is updated by deleting and adding ids rather
    than rebuilt (except HNSW losing passages, or a change of size class: see
    :func:`qa.index.dense.carry_over`); BM25 is updated in place (rebuilt only for an index
    saved before keyword_tf.npy: ``report.keyword`` says which).
    The result is a new generation; the previous one stays live until it is complete.
    """
    with index_lock(path):
        left_out = excluded_ids(path)
        dropped = sorted(d.doc_id for d in documents if d.doc_id in left_out)
        documents = [d for d in documents if d.doc_id not in left_out]
        current = live(path)
        remove_stale(path, current)  # left by a killed writer, or by one while a reader loaded them
        previous = None
        if not rebuild:
            try:
                previous = load_index(path, settings, mmap=False, check_store=False)
            except IndexNotFound:
                previous = None
        replaced = None if previous is not None else _milvus_of(path, settings)
        index, report = build_index(documents, settings, embedder, previous, progress, name=path.name,
                                    prepared=prepared)
        report.excluded = dropped
        index.manifest["sources"] = [str(s) for s in sources]
        fresh = isinstance(index.dense, MilvusSearch) and (previous is None or index.dense is not previous.dense)
        try:
            if previous is None or report.added or report.changed or report.removed \
                    or previous.manifest.get("sources") != index.manifest["sources"]:
                save_index(index, path)
            else:
                index = previous
        except BaseException:
            if fresh:  # a new collection no generation will ever name
                with contextlib.suppress(Exception):
                    index.dense.drop()
            raise
        if isinstance(index.dense, MilvusSearch) and len(index.dense.pending):
            # the new generation is live: the passages it dropped can go (if this fails, the
            # manifest lists them and the next update deletes them)
            with contextlib.suppress(IndexProblem):
                index.dense.delete(index.dense.pending)
                index.dense.pending = np.zeros(0, np.int64)
        if replaced is not None and fresh and replaced.collection != index.dense.collection \
                and replaced.stored_uri in ("", replaced.target.uri):
            with contextlib.suppress(IndexProblem):  # the rebuilt index is live; the old collection is garbage
                replaced.drop()
        index.path = path
        return index, report


def excluded_ids(path: Path) -> set[str]:
    """Document ids left out of every update of the index at ``path`` (removed by a user, files kept)."""
    try:
        data = json.loads((Path(path) / EXCLUDED).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return set()
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(corrupt(Path(path), f"{EXCLUDED} is unreadable ({exc})")) from exc
    ids = data.get("doc_ids") if isinstance(data, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise IndexCorrupt(corrupt(Path(path), f"{EXCLUDED} must hold {{\"doc_ids\": [...]}}"))
    return set(ids)


def exclude_documents(path: Path, add: Sequence[str] = (), restore: Sequence[str] = ()) -> set[str]:
    """Leave ``add`` out of this index from its next update on (their files stay), and let ``restore`` back in.

    Why a list beside the index rather than in a generation: a rebuild, the CLI and the
    chat's re-index all go through :func:`update_index`, which honours it.
    """
    path = Path(path)
    with index_lock(path):
        ids = (excluded_ids(path) | set(add)) - set(restore)
        target = path / EXCLUDED
        if not ids:
            target.unlink(missing_ok=True)
            return ids
        partial = path / f".{EXCLUDED}.partial"
        partial.write_text(json.dumps({"doc_ids": sorted(ids)}, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(partial, target)
        return ids


def _milvus_of(path: Path, settings: Settings) -> MilvusSearch | None:
    """The collection of the live generation at ``path`` when it is a Milvus index (for a rebuild to drop)."""
    target = store_target(settings)
    try:
        gen, manifest = read_manifest(path)
        if target is None or manifest.get("dense") != "milvus":
            return None
        return MilvusSearch.load(gen, target, int(manifest["dimension"]), int(manifest.get("next_id", 0)))
    except (IndexProblem, KeyError, ValueError, TypeError):
        return None


@contextlib.contextmanager
def index_lock(path: Path) -> Iterator[None]:
    """One writer per index at a time, across processes."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
