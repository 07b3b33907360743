"""What an index stores: documents, passages under stable ids, sentences, vectors, generations.

A passage keeps its id (an int64) from the build that first indexed it for as long as
its document is unchanged; new passages take ids from the manifest's ``next_id``
counter. Table rows are only positions inside one generation: everything outside
this package names a passage by its id and a sentence by its row, and reads them
through :class:`PassageStore`.

A generation is a directory ``gen-<stamp>/`` beside ``CURRENT``; it is written whole,
every file hashed into its manifest, fsynced, and made live by replacing ``CURRENT``
(see :func:`write_generation`).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

from qa.chunk import page_statements, passage_leads, searched_text
from qa.types import Document, Page, Passage, Sentence

GENERATION = re.compile(r"gen-[\w.-]+")
# passages.npy columns and sentences.npy columns
P_DOC, P_START, P_END, P_PAGE, P_FIRST, P_LAST = range(6)
S_DOC, S_START, S_END, S_PAGE = range(4)
NO_PAGE = -1


class IndexProblem(RuntimeError):
    """Base of index problems; every message says how to fix it."""


class IndexNotFound(IndexProblem):
    """No index at the path."""


class IndexMismatch(IndexProblem):
    """The index was built under other settings (model, chunking, format)."""


class IndexCorrupt(IndexProblem):
    """A file of the index is missing, truncated, altered or unreadable."""


class IndexWriteError(IndexProblem):
    """A save failed (a full disk); the previous generation is still the live one."""


def corrupt(path: Path, why: str) -> str:
    """The message of an :class:`IndexCorrupt`: what is wrong and the command that fixes it."""
    return f"index at {path} is corrupt: {why}; rebuild it with `qa index CORPUS --index {path} --rebuild`"


@contextlib.contextmanager
def reading(path: Path, name: str) -> Iterator[None]:
    """Any failure while reading ``name`` becomes IndexCorrupt naming that file."""
    try:
        yield
    except IndexProblem:
        raise
    except Exception as exc:  # numpy, faiss, json and bm25s each raise their own kinds
        raise IndexCorrupt(corrupt(path, f"{name}: {type(exc).__name__}: {exc}")) from exc


# ---------------------------------------------------------------- documents


class DocumentStore(Sequence[Document]):
    """A saved index's documents: metadata in memory, each text decoded from a mapped file on use."""

    def __init__(self, meta: list[dict], blob, path: Path | None = None) -> None:
        self._meta = meta
        self._blob = blob
        self._path = path
        self.ids = [m["doc_id"] for m in meta]
        self.fingerprints = [m["fingerprint"] for m in meta]
        self.titles = [m.get("title") or "" for m in meta]
        self.page_counts = [len(m.get("pages") or ()) for m in meta]
        self.text_bytes = [int(m["b1"]) - int(m["b0"]) for m in meta]
        self._cached = functools.lru_cache(maxsize=1024)(self._load)

    def __len__(self) -> int:
        return len(self._meta)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._cached(i)

    def _load(self, i: int) -> Document:
        m = self._meta[i]
        raw = bytes(self._blob[m["b0"]:m["b1"]])
        if "h" in m and hashlib.sha256(raw).hexdigest()[:32] != m["h"]:
            raise IndexCorrupt(corrupt(self._path or Path("PATH"), f"texts.bin: the text of {m['doc_id']} does "
                                       f"not match its checksum (changed since it was written)"))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IndexCorrupt(corrupt(self._path or Path("PATH"), f"texts.bin: the text of {m['doc_id']} is "
                                       f"not UTF-8 ({exc})")) from exc
        return Document(m["doc_id"], text, tuple(Page(*p) for p in m["pages"]), m["title"], m["fingerprint"])


def write_documents(documents: Sequence[Document], gen: Path) -> None:
    """documents.jsonl (metadata, byte range and hash of each text) and texts.bin (the texts)."""
    with open(gen / "documents.jsonl", "w", encoding="utf-8") as fh, open(gen / "texts.bin", "wb") as blob:
        offset = 0
        for d in documents:
            raw = d.text.encode("utf-8")
            blob.write(raw)
            fh.write(json.dumps({"doc_id": d.doc_id, "title": d.title, "fingerprint": d.fingerprint,
                                 "pages": [[p.number, p.start, p.end] for p in d.pages],
                                 "b0": offset, "b1": offset + len(raw), "h": hashlib.sha256(raw).hexdigest()[:32]},
                                ensure_ascii=False) + "\n")
            offset += len(raw)


def read_documents(gen: Path) -> tuple[DocumentStore, list[int]]:
    """The documents of a generation and the byte length of each text (bounds for the tables)."""
    path = gen.parent
    with reading(path, "documents.jsonl"):
        with open(gen / "documents.jsonl", encoding="utf-8") as fh:
            meta = [json.loads(line) for line in fh]
        if not all(isinstance(m, dict) for m in meta):
            raise ValueError("a line is not an object")
    with reading(path, "texts.bin"):
        size = (gen / "texts.bin").stat().st_size
        blob = np.memmap(gen / "texts.bin", dtype=np.uint8, mode="r") if size else b""
    with reading(path, "documents.jsonl"):
        ends = [(int(m["b0"]), int(m["b1"])) for m in meta]
        if any(not 0 <= b0 <= b1 <= size for b0, b1 in ends):
            raise ValueError("document offsets fall outside texts.bin")
        return DocumentStore(meta, blob, path), [b1 - b0 for b0, b1 in ends]


# ---------------------------------------------------------------- passages and sentences


SENTENCE_CACHE = 50_000  # on-demand sentence vectors kept (about 75 MB): a long chat's worth of passages
ON_DEMAND_BATCH = 8  # length-sorted batches of 8: 20% faster than one padded batch of 20 sentences here


class SentenceEncoder(Protocol):
    """What embeds sentences on demand: the bundled model's light query encoder."""

    def encode(self, texts: Sequence[str], *, batch_size: int = ...) -> np.ndarray: ...

    def encode_with_spans(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
                          batch_size: int = ...) -> tuple[np.ndarray, list[np.ndarray]]: ...


@dataclass(frozen=True)
class DocumentPart:
    """One document's rows of a store, rebased to start at 0: what a build carries over unchanged."""

    passages: np.ndarray  # passages.npy rows, sentence columns relative to ``sentences``
    ids: np.ndarray
    sentences: np.ndarray
    passage_vectors: np.ndarray
    sentence_vectors: np.ndarray | None


class PassageStore:
    """Documents, passages by stable id, sentences by row, and their vectors.

    ``sentence_vectors(rows)`` is the one way sentence vectors are read: stored (half
    precision) when the index was built with them, else computed when first asked for and
    kept in a bounded cache, since a question only ever scores the sentences of the few
    passages it retrieved. On demand, ``context`` None embeds each sentence alone; a number
    pools it out of one forward pass over its first passage, less that share of the
    passage's vector (the same vectors a "derived" index stores).
    """

    def __init__(self, documents: Sequence[Document], passages: np.ndarray, passage_ids: np.ndarray,
                 sentences: np.ndarray, passage_vectors: np.ndarray, sentence_vectors: np.ndarray | None,
                 encoder: Callable[[], SentenceEncoder] | None = None, cache_size: int = SENTENCE_CACHE,
                 dim: int | None = None, context: float | None = None, lead: int = 0) -> None:
        self.documents = documents
        # passage vectors live in the search engine instead when it is not local (then 0 columns here)
        self.dim = int(dim if dim is not None else passage_vectors.shape[1])
        self.table = passages
        self.ids = np.asarray(passage_ids, dtype=np.int64)
        self.sentences = sentences
        self._p_vecs = passage_vectors
        # Sentence vectors only rank a few dozen sentences per question: half precision is
        # enough (the seeds eval is identical) and halves the largest file of the index.
        self._s_vecs = None if sentence_vectors is None else (
            sentence_vectors if sentence_vectors.dtype == np.float16 else sentence_vectors.astype(np.float16))
        self.encoder = encoder
        self.context = context
        self.lead = lead
        self._leads: dict[tuple[int, bool], dict[int | None, str]] = {}
        self._statements: dict[int, dict[str, np.ndarray]] = {}
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        if isinstance(documents, DocumentStore):
            self.doc_ids, self.fingerprints = documents.ids, documents.fingerprints
        else:
            self.doc_ids, self.fingerprints = [d.doc_id for d in documents], [d.fingerprint for d in documents]
        self._doc_pos = {doc_id: i for i, doc_id in enumerate(self.doc_ids)}
        self._row_of = np.full(int(self.ids.max()) + 1 if len(self.ids) else 0, -1, dtype=np.int64)
        self._row_of[self.ids] = np.arange(len(self.ids), dtype=np.int64)
        self._owners: np.ndarray | None = None
        self._doc_order: list[tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def sentence_count(self) -> int:
        return len(self.sentences)

    @property
    def next_id(self) -> int:
        """The smallest id no passage of this store has (a floor for the manifest's counter)."""
        return len(self._row_of)

    def rows(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Table rows of passage ``ids``; an id this store does not hold raises KeyError."""
        ids = np.asarray(ids, dtype=np.int64)
        ok = (ids >= 0) & (ids < len(self._row_of))
        rows = np.full(len(ids), -1, dtype=np.int64)
        rows[ok] = self._row_of[ids[ok]]
        if (rows < 0).any():
            raise KeyError(f"no passage with id {int(ids[rows < 0][0])}")
        return rows

    def _row(self, pid: int) -> int:
        row = int(self._row_of[pid]) if 0 <= pid < len(self._row_of) else -1
        if row < 0:
            raise KeyError(f"no passage with id {pid}")
        return row

    def document(self, doc_id: str) -> Document:
        """The document ``doc_id`` (KeyError when it is not indexed)."""
        return self.documents[self._doc_pos[doc_id]]

    def holds(self, pid: int) -> bool:
        """Whether passage ``pid`` is in this store."""
        return 0 <= pid < len(self._row_of) and self._row_of[pid] >= 0

    def has_document(self, doc_id: str) -> bool:
        return doc_id in self._doc_pos

    def passage(self, pid: int, score: float = 0.0) -> Passage:
        """Passage ``pid`` as a record, its text cut from its document."""
        doc_i, start, end, page = self.table[self._row(pid), :4].tolist()
        doc = self.documents[doc_i]
        return Passage(int(pid), doc.doc_id, start, end, doc.text[start:end],
                       None if page == NO_PAGE else page, float(score))

    def passage_texts(self, ids: np.ndarray | Sequence[int]) -> Iterator[str]:
        """The texts of passages ``ids``, in that order (lazily: a full corpus does not fit twice)."""
        for row in self.rows(ids).tolist():
            doc_i, start, end = self.table[row, :3].tolist()
            yield self.documents[doc_i].text[start:end]

    def keyword_texts(self, ids: np.ndarray | Sequence[int]) -> Iterator[str]:
        """The texts BM25 counts the terms of for passages ``ids``: with their keyword lead (a
        page's heading; the title too in indexes of lead rule 5 and before) when this index reads
        passages with leads, else as written."""
        return self._with_leads(ids, keyword=True)

    def embedded_texts(self, ids: np.ndarray | Sequence[int]) -> Iterator[str]:
        """The texts the vectors of passages ``ids`` were embedded from: their lead (title, page
        heading) then the passage, when this index reads passages with leads, else as written."""
        return self._with_leads(ids, keyword=False)

    def _with_leads(self, ids: np.ndarray | Sequence[int], keyword: bool) -> Iterator[str]:
        for row in self.rows(ids).tolist():
            doc_i, start, end = self.table[row, :3].tolist()
            text = self.documents[doc_i].text[start:end]
            yield searched_text(self._lead(doc_i, self.table[row, P_PAGE], keyword), text) if self.lead else text

    def _lead(self, doc_i: int, page: int, keyword: bool) -> str:
        leads = self._leads.get((doc_i, keyword))
        if leads is None:
            doc = self.documents[doc_i]
            numbers = [p.number for p in doc.pages] + [None]
            leads = self._leads[doc_i, keyword] = dict(zip(numbers, passage_leads(doc, numbers, self.lead,
                                                                                   keyword=keyword)))
        return leads.get(None if page == NO_PAGE else int(page), leads.get(None, ""))

    def statement_passages(self, doc_ids: Sequence[str], kind: str) -> np.ndarray:
        """Ids of the passages of ``doc_ids`` on pages that present financial statement ``kind``
        (:func:`qa.chunk.page_statements`), in table order. Read once per document and kept as
        those ids only (a few per filing)."""
        found = []
        for doc_id in doc_ids:
            doc_i = self._doc_pos.get(doc_id)
            if doc_i is None:
                continue
            by_kind = self._statements.get(doc_i)
            if by_kind is None:
                doc = self.documents[doc_i]
                kinds = page_statements(doc) if doc.pages else {}
                by_kind = {}
                if any(kinds.values()):
                    rows = np.flatnonzero(np.asarray(self.table[:, P_DOC]) == doc_i)
                    pages = np.asarray(self.table[rows, P_PAGE])
                    for k in set(kinds.values()) - {""}:
                        by_kind[k] = self.ids[rows[np.isin(pages, [p for p, v in kinds.items() if v == k])]]
                self._statements[doc_i] = by_kind
            if kind in by_kind:
                found.append(by_kind[kind])
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    def passage_vectors(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """The stored vectors of passages ``ids``, in that order (float32, whatever they are stored as)."""
        return np.asarray(self._p_vecs[self.rows(ids)], dtype=np.float32)

    def ids_of_documents(self, doc_ids: Sequence[str]) -> np.ndarray:
        """Ids of the passages of ``doc_ids`` (unknown documents are ignored), in table order."""
        wanted = np.array([self._doc_pos[d] for d in doc_ids if d in self._doc_pos], dtype=np.int64)
        return self.ids[np.isin(self.table[:, P_DOC], wanted)]

    def sentence_rows(self, pid: int) -> range:
        """Rows of the sentences that make up passage ``pid``."""
        first, last = self.table[self._row(pid), P_FIRST:P_LAST + 1].tolist()
        return range(first, last)

    def sentence(self, row: int) -> Sentence:
        """Sentence ``row``: its document and offsets, and its page (None when unpaginated)."""
        doc_i, start, end, page = self.sentences[row].tolist()
        return Sentence(self.doc_ids[doc_i], start, end, None if page == NO_PAGE else page)

    def sentence_text(self, row: int) -> str:
        doc_i, start, end = self.sentences[row, :3].tolist()
        return self.documents[doc_i].text[start:end]

    def previous_sentence(self, row: int) -> int | None:
        """The row of the sentence before ``row`` in the same document (None at its start)."""
        if row <= 0 or self.sentences[row - 1, S_DOC] != self.sentences[row, S_DOC]:
            return None
        return row - 1

    @property
    def stores_sentence_vectors(self) -> bool:
        """Whether sentence vectors were computed at build time (else on demand)."""
        return self._s_vecs is not None

    def sentence_vectors(self, rows: np.ndarray | Sequence[int] | slice,
                         within: Sequence[int] | None = None, alone: bool = False) -> np.ndarray:
        """Unit vectors of sentences ``rows``; ``slice(None)`` (all) only when they are stored.

        Pooled on demand, row ``i`` is read in the context of passage ``within[i]`` (one that
        holds it: the passage a question retrieved), else of the first passage that holds it;
        ``alone`` embeds each sentence by itself (a claim is compared with a sentence as written).
        """
        if self._s_vecs is not None:
            return np.asarray(self._s_vecs[rows], dtype=np.float32)
        if isinstance(rows, slice):
            raise ValueError("this index embeds sentences on demand: ask for the rows you score, not all")
        wanted = np.asarray(rows, dtype=np.int64).tolist()
        if not wanted:
            return np.zeros((0, self.passage_dim), dtype=np.float32)
        keys: list = wanted if self.context is None or alone else self._pooling_keys(wanted, within)
        with self._cache_lock:
            found = {key: self._cache[key] for key in dict.fromkeys(keys) if key in self._cache}
            for key in found:
                self._cache.move_to_end(key)
        missing = [key for key in dict.fromkeys(keys) if key not in found]
        if missing:
            if self.encoder is None:
                raise ValueError("sentence vectors are computed on demand and this store has no encoder")
            fresh = self._embed_sentences(missing)
            found.update(fresh)
            with self._cache_lock:
                for key, v in fresh.items():
                    self._cache[key] = v
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return np.stack([found[key] for key in keys])

    def _pooling_keys(self, rows: list[int], within: Sequence[int] | None) -> list[tuple[int, int]]:
        """(row, passage id) pairs: which passage's forward pass each sentence is pooled from."""
        if within is None:
            owners = self.sentence_owners()
            return [(r, int(owners[r])) for r in rows]
        return [(r, int(pid)) for r, pid in zip(rows, within)]

    def _embed_sentences(self, keys: list) -> dict:
        """Vectors for cache ``keys``: rows embedded alone, or (row, passage) pairs pooled in passage."""
        encoder = self.encoder()
        out: dict = {}
        # a row alone, or a sentence in no passage (no context to pool from), is embedded by itself
        alone = [key for key in keys if isinstance(key, int) or key[1] < 0]
        if alone:
            texts = [self.sentence_text(key if isinstance(key, int) else key[0]) for key in alone]
            out.update(zip(alone, np.asarray(encoder.encode(texts, batch_size=ON_DEMAND_BATCH), dtype=np.float32)))
        pids = list(dict.fromkeys(key[1] for key in keys if not isinstance(key, int) and key[1] >= 0))
        if not pids:
            return out
        texts, spans, members = [], [], []
        for pid in pids:
            passage = self.passage(pid)
            mine = list(self.sentence_rows(pid))  # every sentence of a passage costs the same one pass
            texts.append(passage.text)
            spans.append([(int(self.sentences[r, S_START]) - passage.start,
                           int(self.sentences[r, S_END]) - passage.start) for r in mine])
            members.append([(r, pid) for r in mine])
        p_vecs, s_vecs = encoder.encode_with_spans(texts, spans, batch_size=ON_DEMAND_BATCH)
        for mine, pv, sv in zip(members, p_vecs, s_vecs):
            sv = sv - self.context * pv
            sv /= np.maximum(np.linalg.norm(sv, axis=1, keepdims=True), 1e-12)
            out.update(zip(mine, sv.astype(np.float32)))
        return out

    @property
    def passage_dim(self) -> int:
        return self.dim

    def sentence_owners(self) -> np.ndarray:
        """For each sentence row, the id of the first passage that holds it (-1 for none); computed once."""
        if self._owners is None:
            owners = np.full(len(self.sentences), -1, dtype=np.int64)
            first, last = self.table[:, P_FIRST], self.table[:, P_LAST]
            counts = np.maximum(last - first, 0)
            if counts.sum():
                rows = np.repeat(np.arange(len(self.table)), counts)
                starts = np.repeat(first - np.cumsum(counts) + counts, counts)
                sentence = starts + np.arange(len(rows))
                # pairs come in row order, so the first occurrence of a sentence is its first passage
                uniq, at = np.unique(sentence, return_index=True)
                owners[uniq] = self.ids[rows[at]]
            self._owners = owners
        return self._owners

    def _rows_of_document(self, doc_i: int) -> tuple[np.ndarray, np.ndarray]:
        """Passage and sentence rows of document ``doc_i``, from an order computed once.

        An update keeping 100,000 documents asks this 100,000 times: a scan of the whole
        table per document would be quadratic.
        """
        if self._doc_order is None:
            orders = []
            for column in (self.table[:, P_DOC], self.sentences[:, S_DOC]):
                order = np.argsort(column, kind="stable")
                orders.append((order, np.asarray(column)[order]))
            self._doc_order = orders
        out = []
        for order, keys in self._doc_order:
            lo, hi = np.searchsorted(keys, doc_i, "left"), np.searchsorted(keys, doc_i, "right")
            out.append(order[lo:hi])
        return out[0], out[1]

    def part(self, doc_id: str) -> DocumentPart:
        """The rows of one document, rebased, for a build that keeps it unchanged."""
        doc_i = self._doc_pos[doc_id]
        p_rows, s_rows = self._rows_of_document(doc_i)
        p_tab = self.table[p_rows].copy()
        shift = s_rows[0] if len(s_rows) else 0
        p_tab[:, P_FIRST] -= shift
        p_tab[:, P_LAST] -= shift
        return DocumentPart(p_tab, self.ids[p_rows].copy(), self.sentences[s_rows].copy(),
                            np.asarray(self._p_vecs[p_rows]),
                            None if self._s_vecs is None else np.asarray(self._s_vecs[s_rows], dtype=np.float32))

    def save(self, gen: Path) -> None:
        """Documents, tables, passage ids and vectors, one file each."""
        write_documents(self.documents, gen)
        np.save(gen / "passages.npy", self.table)
        np.save(gen / "passage_ids.npy", self.ids)
        np.save(gen / "sentences.npy", self.sentences)
        np.save(gen / "passage_vectors.npy", self._p_vecs)
        if self._s_vecs is not None:
            np.save(gen / "sentence_vectors.npy", self._s_vecs)

    @classmethod
    def load(cls, gen: Path, manifest: dict, mmap: bool = True,
             encoder: Callable[[], SentenceEncoder] | None = None, context: float | None = None) -> PassageStore:
        """The store of generation ``gen``; a file that disagrees with ``manifest`` raises IndexCorrupt."""
        path = gen.parent
        documents, lengths = read_documents(gen)
        mode = "r" if mmap else None
        arrays = {}
        stored = (manifest.get("params") or {}).get("sentence_vectors") != "ondemand"
        arrays["sentence_vectors"] = None
        for name, mapped in (("passages", False), ("passage_ids", False), ("sentences", False),
                             ("passage_vectors", True)) + ((("sentence_vectors", True),) if stored else ()):
            with reading(path, f"{name}.npy"):
                arrays[name] = np.load(gen / f"{name}.npy", mmap_mode=mode if mapped else None)
        n_p, n_s, dim = manifest["passages"], manifest["sentences"], manifest["dimension"]
        local_dim = 0 if manifest.get("dense") == "milvus" else dim  # vectors kept by the engine
        shapes = [
            ("documents.jsonl", len(documents) == len(manifest["documents"])),
            ("passages.npy", arrays["passages"].shape == (n_p, 6)),
            ("passage_ids.npy", arrays["passage_ids"].shape == (n_p,)),
            ("sentences.npy", arrays["sentences"].shape == (n_s, 4)),
            ("passage_vectors.npy", arrays["passage_vectors"].shape == (n_p, local_dim)),
            ("sentence_vectors.npy", not stored or (arrays["sentence_vectors"].shape == (n_s, dim)
                                                    and arrays["sentence_vectors"].dtype == np.float16)),
        ]
        for name, ok in shapes:
            if not ok:
                raise IndexCorrupt(corrupt(path, f"{name} disagrees with the manifest"))
        problem = table_problem(arrays["passages"], arrays["sentences"], lengths) \
            or ids_problem(arrays["passage_ids"], manifest.get("next_id", 0))
        if problem:
            raise IndexCorrupt(corrupt(path, problem))
        return cls(documents, arrays["passages"], arrays["passage_ids"], arrays["sentences"],
                   arrays["passage_vectors"], arrays["sentence_vectors"], encoder, dim=dim, context=context,
                   lead=reads_lead(manifest.get("params") or {}))


def reads_lead(params: dict) -> int:
    """The lead rule an index built with ``params`` searches its passages with (0: none).

    "title/4" (the title alone) was written before page headings joined the lead (rule 5).
    """
    value = str(params.get("passage_lead", "none"))
    if not value.startswith("title"):
        return 0
    rule = value.partition("/")[2]
    return int(rule) if rule.isdigit() else 4


def table_problem(passages: np.ndarray, sentences: np.ndarray, lengths: Sequence[int]) -> str | None:
    """An offset or count in the tables that cannot be right (``lengths`` bound each document's text)."""
    n_docs, n_sent = len(lengths), len(sentences)
    limit = np.asarray(list(lengths) + [0], dtype=np.int64)
    for name, tab, doc, start, end in (("passages.npy", passages, P_DOC, P_START, P_END),
                                       ("sentences.npy", sentences, S_DOC, S_START, S_END)):
        if not len(tab):
            continue
        docs = tab[:, doc]
        if docs.min() < 0 or docs.max() >= n_docs:
            return f"{name} points at a document that does not exist"
        if (tab[:, start] < 0).any() or (tab[:, end] < tab[:, start]).any() or (tab[:, end] > limit[docs]).any():
            return f"{name} has offsets outside their document"
    if len(passages) and (passages[:, P_FIRST].min() < 0 or passages[:, P_LAST].max() > n_sent
                          or (passages[:, P_LAST] < passages[:, P_FIRST]).any()):
        return "passages.npy points at sentences that do not exist"
    return None


def ids_problem(ids: np.ndarray, next_id: int) -> str | None:
    """Passage ids must be distinct, non-negative and below the manifest's counter."""
    if not len(ids):
        return None
    if ids.min() < 0 or ids.max() >= next_id:
        return "passage_ids.npy holds impossible ids"
    seen = np.zeros(next_id, dtype=bool)
    seen[ids] = True
    return None if int(seen.sum()) == len(ids) else "passage_ids.npy holds repeated ids"


# ---------------------------------------------------------------- generations


def write_generation(path: Path, write: Callable[[Path], None], manifest: dict) -> Path:
    """Write a new generation under ``path`` with ``write(gen)`` and make it live atomically.

    The manifest gets every file's size and SHA-256. A failure (a full disk, an
    interrupt) removes the partial generation and leaves the previous one live; a full
    disk raises :class:`IndexWriteError` saying so.
    """
    path.mkdir(parents=True, exist_ok=True)
    gen = path / f"gen-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    gen.mkdir()
    pointer = path / "CURRENT.tmp"
    try:
        write(gen)
        files = [f for f in sorted(gen.rglob("*")) if f.is_file()]
        manifest = dict(manifest)
        manifest["files"] = {str(f.relative_to(gen)): f.stat().st_size for f in files}
        manifest["checksums"] = {str(f.relative_to(gen)): file_digest(f) for f in files}
        (gen / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        (gen / LEASE).touch()
        _fsync_tree(gen)
        with open(pointer, "w") as fh:
            fh.write(gen.name)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(pointer, path / "CURRENT")
    except BaseException as exc:
        full = _no_space(exc, path)
        shutil.rmtree(gen, ignore_errors=True)
        pointer.unlink(missing_ok=True)
        if full:
            raise IndexWriteError(f"no space left on {path}: the previous index is intact "
                                  f"({type(exc).__name__}: {exc})") from exc
        raise
    _fsync_dir(path)
    remove_stale(path, gen.name)
    return gen


# A reader holds a shared lock on this file of a generation while it loads it; a writer
# removes an old generation only under an exclusive lock, so a load is never cut short.
LEASE = "READERS"


class LeaseLost(Exception):
    """The generation was removed (or is being removed) before the reader could hold it."""


@contextlib.contextmanager
def leased(gen: Path) -> Iterator[None]:
    """Hold ``gen`` against removal while its files are opened (mapped files then outlive it).

    A generation written before leases existed has no lease file and is read unheld, as before.
    """
    try:
        fh = open(gen / LEASE, "rb")
    except FileNotFoundError:
        if not gen.is_dir():
            raise LeaseLost(gen.name) from None
        yield
        return
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LeaseLost(gen.name) from None
        try:  # the writer may have unlinked it between our open and our lock
            if os.stat(gen / LEASE).st_ino != os.fstat(fh.fileno()).st_ino:
                raise LeaseLost(gen.name)
        except FileNotFoundError:
            raise LeaseLost(gen.name) from None
        yield


def remove_stale(path: Path, keep: str | None) -> None:
    """Remove every generation but ``keep`` that no reader is loading (those wait for the next writer).

    Only a writer (holding the index lock) calls this: a generation still being written
    has no lease yet and would be removed too.
    """
    for stale in path.glob("gen-*"):
        if stale.name != keep:
            remove_generation(stale)


def remove_generation(gen: Path) -> bool:
    """Remove ``gen`` unless a reader holds it (then it is left for later): whether it is gone."""
    try:
        fh = open(gen / LEASE, "rb")
    except OSError:
        shutil.rmtree(gen, ignore_errors=True)
        return not gen.exists()
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        shutil.rmtree(gen, ignore_errors=True)
    return not gen.exists()


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in 4 MiB blocks (about 0.6 s per GB here, see README)."""
    h = hashlib.sha256()
    buf = bytearray(4 * 2**20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _no_space(exc: BaseException, path: Path) -> bool:
    """Whether a failed write ran out of disk (numpy and FAISS do not always keep the errno)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    try:
        return shutil.disk_usage(path).free < 2**20 or "requested and" in str(exc)
    except OSError:
        return False


def live(path: Path) -> str | None:
    """The name of the live generation, or None."""
    try:
        return (path / "CURRENT").read_text(encoding="utf-8").strip()
    except OSError:
        return None


def read_manifest(path: Path) -> tuple[Path, dict]:
    """The live generation's directory and a well-formed manifest, or a clear error."""
    current = path / "CURRENT"
    if not current.exists():
        raise IndexNotFound(f"no index at {path}: build it with `qa index CORPUS --index {path}`")
    try:
        name = current.read_text(encoding="utf-8").strip()
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(corrupt(path, f"CURRENT is unreadable ({exc})")) from exc
    if not GENERATION.fullmatch(name):
        raise IndexCorrupt(corrupt(path, f"CURRENT names no generation ({name[:40]!r})"))
    gen = path / name
    try:
        manifest = json.loads((gen / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(corrupt(path, f"manifest.json is unreadable ({exc})")) from exc
    problem = _manifest_problem(manifest)
    if problem:
        raise IndexCorrupt(corrupt(path, f"manifest.json {problem}"))
    return gen, manifest


def _manifest_problem(manifest: object) -> str | None:
    if not isinstance(manifest, dict):
        return f"holds a {type(manifest).__name__}, not an object"
    kinds = {"format": int, "params": dict, "dimension": int, "documents": dict, "passages": int, "sentences": int}
    for key, kind in kinds.items():
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
            return f"has no valid {key!r} (found {manifest.get(key)!r:.40})"
    for key in ("files", "checksums"):
        if key in manifest and not isinstance(manifest[key], dict):
            return f"has no valid {key!r}"
    if "next_id" in manifest and (not isinstance(manifest["next_id"], int) or manifest["next_id"] < 0):
        return "has no valid 'next_id'"
    if manifest["passages"] < 0 or manifest["sentences"] < 0 or manifest["dimension"] <= 0:
        return "has negative counts"
    return None


def verify_files(path: Path, gen: Path, manifest: dict, names: Sequence[str] | None = None) -> list[str]:
    """Problems with the files of a generation: missing, wrong size or wrong checksum."""
    problems = []
    checksums = manifest.get("checksums") or {}
    for name, size in (manifest.get("files") or {}).items():
        if names is not None and name not in names:
            continue
        f = gen / name
        try:
            if not f.is_file() or f.stat().st_size != size:
                problems.append(f"{name} is missing or has the wrong size")
            elif name in checksums and file_digest(f) != checksums[name]:
                problems.append(f"{name} does not match its checksum (changed since it was written)")
        except OSError as exc:
            problems.append(f"{name} is unreadable ({exc})")
    return problems


def _fsync_tree(root: Path) -> None:
    for f in root.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        _fsync_dir(d)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
