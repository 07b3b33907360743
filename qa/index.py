"""The on-disk index: FAISS over passage vectors, BM25 over passage terms, and tables.

Layout of ``indexes/<name>/``::

    CURRENT          name of the live generation (replaced atomically)
    gen-<stamp>/     manifest.json, documents.jsonl (metadata), texts.bin (all document texts,
                     UTF-8, memory-mapped), passages.npy, sentences.npy, passage_vectors.npy,
                     sentence_vectors.npy, dense.faiss, bm25/, terms.json

Vectors, BM25 and texts are memory-mapped, so a large index opens in seconds and only
what a query touches becomes resident. The FAISS index is exact up to
``EXACT_MAX`` passages, HNSW up to ``HNSW_MAX``, and IVF with 8-bit scalar
quantization beyond.

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
import errno
import fcntl
import functools
import hashlib
import math
import json
import os
import re
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from qa.chunk import chunk_document
from qa.embed import Embedder
from qa.settings import Settings
from qa.types import Document, Page, Passage

FORMAT_VERSION = 3
READABLE_FORMATS = (1, 2, 3)  # 1 kept document texts inside documents.jsonl; 3 added checksums
EAGER_VERIFY_MAX = 64 * 2**20  # bigger files are hashed in the background after open
_GENERATION = re.compile(r"gen-[\w.-]+")
EXACT_MAX = 50_000
HNSW_MAX = 250_000
HNSW_EF_SEARCH = 128
IVF_NPROBE = 32
# passages.npy columns and sentences.npy columns
P_DOC, P_START, P_END, P_PAGE, P_FIRST, P_LAST = range(6)
S_DOC, S_START, S_END, S_PAGE = range(4)
NO_PAGE = -1
BM25_K1, BM25_B = 0.9, 0.4  # Anserini's defaults, the reference figures' parameters
LONG_DOCUMENT = 1_000_000  # characters: a document this long reports its own chunking progress

Progress = Callable[[str, int, int], None]


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


@dataclass
class BuildReport:
    """What an (incremental) build did; ``embedded_*`` count fresh model work."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    embedded_passages: int = 0
    embedded_sentences: int = 0
    seconds: float = 0.0


class DocumentStore(Sequence[Document]):
    """A saved index's documents: metadata in memory, each text decoded from a mapped file on use."""

    def __init__(self, meta: list[dict], blob, path: Path | None = None) -> None:
        self._meta = meta
        self._blob = blob
        self._path = path
        self.ids = [m["doc_id"] for m in meta]
        self.fingerprints = [m["fingerprint"] for m in meta]
        self.titles = [m.get("title") or "" for m in meta]
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
            raise IndexCorrupt(_corrupt(self._path or Path("PATH"), f"texts.bin: the text of {m['doc_id']} does "
                                        f"not match its checksum (changed since it was written)"))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IndexCorrupt(_corrupt(self._path or Path("PATH"), f"texts.bin: the text of {m['doc_id']} is "
                                        f"not UTF-8 ({exc})")) from exc
        return Document(m["doc_id"], text, tuple(Page(*p) for p in m["pages"]), m["title"], m["fingerprint"])


@dataclass
class Index:
    """A loaded index: documents, passage/sentence tables, vectors, FAISS and BM25."""

    manifest: dict
    documents: Sequence[Document]
    passages: np.ndarray
    sentences: np.ndarray
    passage_vectors: np.ndarray
    sentence_vectors: np.ndarray
    dense: object
    keyword: object
    vocab: dict[str, int]
    doc_freq: np.ndarray
    path: Path | None = None
    doc_pos: dict[str, int] = field(default_factory=dict)
    doc_ids: list[str] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)
    problem: str | None = None  # set when a background checksum finds a file altered
    verified: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        docs = self.documents
        if isinstance(docs, DocumentStore):
            self.doc_ids, self.fingerprints = docs.ids, docs.fingerprints
        else:
            self.doc_ids, self.fingerprints = [d.doc_id for d in docs], [d.fingerprint for d in docs]
        self.doc_pos = {doc_id: i for i, doc_id in enumerate(self.doc_ids)}
        self.verified.set()

    def passage(self, row: int, score: float = 0.0) -> Passage:
        """The passage at ``row`` as a record, its text cut from its document."""
        doc_i, start, end, page = (int(x) for x in self.passages[row, :4])
        doc = self.documents[doc_i]
        return Passage(row, doc.doc_id, start, end, doc.text[start:end],
                       None if page == NO_PAGE else page, float(score))

    def sentence_rows(self, row: int) -> range:
        """Rows of the sentences that make up passage ``row``."""
        return range(int(self.passages[row, P_FIRST]), int(self.passages[row, P_LAST]))

    def rows_of_documents(self, doc_ids: Sequence[str]) -> np.ndarray:
        """Passage rows belonging to ``doc_ids`` (unknown ids are ignored)."""
        wanted = np.array([self.doc_pos[d] for d in doc_ids if d in self.doc_pos], dtype=np.int64)
        return np.flatnonzero(np.isin(self.passages[:, P_DOC], wanted))


# ---------------------------------------------------------------- terms


_ACRONYM = re.compile(r"\b(?:[A-Za-z]\.){2,}")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_stemmer = None


def terms(text: str) -> list[str]:
    """Stemmed, lower-cased content words; "P.M.F." and "PMF" both become ``pmf``."""
    global _stemmer
    if _stemmer is None:
        import Stemmer

        _stemmer = Stemmer.Stemmer("english")
    text = _ACRONYM.sub(lambda m: m.group(0).replace(".", "") + " ", text)
    words = [w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in STOPWORDS]
    return _stemmer.stemWords(words)


STOPWORDS = frozenset(
    """a about above after again against al all am an and any are aren as at be because been
    before being below between both but by can could did do does doing don down during each
    few for from further had has have having he her here hers herself him himself his how
    i if in into is it its itself just me more most my myself no nor not now of off on once
    only or other our ours ourselves out over own same she should so some such than that the
    their theirs them themselves then there these they this those through to too under until
    up very was we were what when where which while who whom why will with would you your
    yours yourself yourselves also said say says""".split()
)


# ---------------------------------------------------------------- build


def build_index(
    documents: Sequence[Document],
    settings: Settings,
    embedder: Embedder,
    previous: Index | None = None,
    progress: Progress | None = None,
) -> tuple[Index, BuildReport]:
    """Chunk and embed ``documents``, reusing vectors of unchanged documents in ``previous``."""
    started = time.perf_counter()
    report = BuildReport()
    old = {d: (i, f) for i, (d, f) in enumerate(zip(previous.doc_ids, previous.fingerprints))} if previous else {}
    new_ids = {d.doc_id for d in documents}
    report.removed = sorted(set(old) - new_ids)

    doc_blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]] = []
    fresh_p_text: list[str] = []
    fresh_s_text: list[str] = []
    fresh_slots: list[tuple[int, int, int]] = []  # (block, n_passages, n_sentences)
    for doc_i, doc in enumerate(documents):
        prior = old.get(doc.doc_id)
        if prior is not None and prior[1] == doc.fingerprint and previous is not None:
            p_rows = np.flatnonzero(previous.passages[:, P_DOC] == prior[0])
            s_rows = np.flatnonzero(previous.sentences[:, S_DOC] == prior[0])
            p_tab = previous.passages[p_rows].copy()
            s_tab = previous.sentences[s_rows].copy()
            p_tab[:, P_DOC] = doc_i
            s_tab[:, S_DOC] = doc_i
            shift = (s_rows[0] if len(s_rows) else 0)
            p_tab[:, P_FIRST] -= shift
            p_tab[:, P_LAST] -= shift
            doc_blocks.append((p_tab, s_tab, previous.passage_vectors[p_rows], previous.sentence_vectors[s_rows]))
            report.unchanged += 1
            continue
        (report.changed if prior is not None else report.added).append(doc.doc_id)
        within = None
        if progress and len(doc.text) >= LONG_DOCUMENT:
            within = functools.partial(progress, f"chunking {doc.doc_id} (characters)")
        sentences, spans = chunk_document(doc, settings.chunk_chars, settings.chunk_overlap, within)
        s_tab = np.array([[doc_i, s.start, s.end, NO_PAGE if s.page is None else s.page] for s in sentences],
                         dtype=np.int64).reshape(-1, 4)
        p_tab = np.array([[doc_i, p.start, p.end, NO_PAGE if p.page is None else p.page, p.first, p.last]
                          for p in spans], dtype=np.int64).reshape(-1, 6)
        fresh_slots.append((len(doc_blocks), len(spans), len(sentences)))
        fresh_p_text.extend(doc.text[p.start:p.end] for p in spans)
        fresh_s_text.extend(doc.text[s.start:s.end] for s in sentences)
        doc_blocks.append((p_tab, s_tab, None, None))
        if progress:
            progress("chunking", doc_i + 1, len(documents))

    if settings.sentence_vectors == "derived":
        p_vecs, s_vecs = _embed_derived(embedder, fresh_p_text, fresh_s_text, doc_blocks, fresh_slots,
                                        settings.batch_size, progress, settings.sentence_context)
    else:
        p_vecs, s_vecs = _embed_unique(embedder, fresh_p_text, fresh_s_text, settings.batch_size, progress)
    report.embedded_passages = len(fresh_p_text)
    report.embedded_sentences = len(fresh_s_text) if settings.sentence_vectors != "derived" else 0
    p_off = s_off = 0
    for block, n_p, n_s in fresh_slots:
        p_tab, s_tab, _, _ = doc_blocks[block]
        doc_blocks[block] = (p_tab, s_tab, p_vecs[p_off:p_off + n_p], s_vecs[s_off:s_off + n_s])
        p_off += n_p
        s_off += n_s

    dim = embedder.dim
    passages, sentences = _concat_tables(doc_blocks)
    passage_vectors = _stack([b[2] for b in doc_blocks], dim)
    sentence_vectors = _stack([b[3] for b in doc_blocks], dim)
    texts = (documents[int(r[P_DOC])].text[int(r[P_START]):int(r[P_END])] for r in passages)
    keyword, vocab, doc_freq = _keyword_index(texts)
    manifest = {
        "format": FORMAT_VERSION,
        "params": settings.index_params(),
        "dimension": dim,
        "documents": {d.doc_id: d.fingerprint for d in documents},
        "passages": int(len(passages)),
        "sentences": int(len(sentences)),
        "dense": "flat-ip",
        "bm25": {"k1": BM25_K1, "b": BM25_B},
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    dense, manifest["dense"] = dense_index(passage_vectors)
    index = Index(manifest, list(documents), passages, sentences, passage_vectors, sentence_vectors,
                  dense, keyword, vocab, doc_freq)
    report.seconds = time.perf_counter() - started
    return index, report


def _embed_unique(embedder: Embedder, p_text: list[str], s_text: list[str], batch_size: int,
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
    pos = {t: i for i, t in enumerate(unique)}
    take = lambda texts: vectors[[pos[t] for t in texts]] if texts else np.zeros((0, embedder.dim), np.float32)
    return take(p_text), take(s_text)


def _embed_derived(embedder: Embedder, p_text: list[str], s_text: list[str], blocks: list,
                   slots: list[tuple[int, int, int]], batch_size: int, progress: Progress | None,
                   context: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Passage vectors and, from the same forward pass, each sentence's pooled tokens.

    A sentence shared by two passages (the overlap) takes its vector from the first,
    less ``context`` times that passage's vector (what all its sentences share).
    """
    spans: list[list[tuple[int, int]]] = []
    owners: list[tuple[int, int] | None] = []  # per fresh sentence, in table order: (fresh passage, span)
    for block, _, _ in slots:
        p_tab, s_tab = blocks[block][0], blocks[block][1]
        found: list[tuple[int, int] | None] = [None] * len(s_tab)
        for _, p0, _, _, f, l in p_tab.tolist():
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
    for p_tab, s_tab, _, _ in blocks:
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


def dense_index(vectors: np.ndarray):
    """FAISS inner-product index sized to the corpus: exact, then HNSW, then IVF + SQ8.

    Returns the index and its kind (kept in the manifest).
    """
    import faiss

    n, dim = vectors.shape
    if n <= EXACT_MAX:
        index, kind = faiss.IndexFlatIP(dim), "flat-ip"
    elif n <= HNSW_MAX:
        index, kind = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT), "hnsw32"
        index.hnsw.efConstruction = 80
    else:
        nlist = 1 << round(math.log2(2 * math.sqrt(n)))
        kind = f"IVF{nlist},SQ8"
        index = faiss.index_factory(dim, kind, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, size=min(n, 40 * nlist), replace=False)
        index.train(np.ascontiguousarray(vectors[np.sort(sample)], dtype=np.float32))
    if n:
        for lo in range(0, n, 100_000):
            index.add(np.ascontiguousarray(vectors[lo:lo + 100_000], dtype=np.float32))
    tune_search(index)
    return index, kind


def tune_search(index) -> None:
    """Search-time accuracy knobs of approximate indexes (not stored by FAISS)."""
    import faiss

    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = HNSW_EF_SEARCH
    try:
        faiss.extract_index_ivf(index).nprobe = IVF_NPROBE
    except RuntimeError:
        pass


def _keyword_index(texts: Iterator[str]):
    import bm25s

    tokens = [terms(t) or [""] for t in texts]
    retriever = bm25s.BM25(k1=BM25_K1, b=BM25_B)
    if tokens:
        retriever.index(tokens, show_progress=False)
    vocab: dict[str, int] = {}
    counts: Counter[str] = Counter()
    for toks in tokens:
        counts.update(set(toks))
    for term in counts:
        vocab[term] = len(vocab)
    doc_freq = np.array([counts[t] for t in vocab], dtype=np.int64)
    return retriever, vocab, doc_freq


# ---------------------------------------------------------------- save / load


def save_index(index: Index, path: Path) -> Path:
    """Write ``index`` as a new generation under ``path`` and make it live atomically.

    A failure (a full disk, an interrupt) removes the partial generation and leaves the
    previous one live; a full disk raises :class:`IndexWriteError` saying so.
    """
    path.mkdir(parents=True, exist_ok=True)
    gen = path / f"gen-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    gen.mkdir()
    pointer = path / "CURRENT.tmp"
    try:
        _write_generation(index, gen)
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
    for stale in path.glob("gen-*"):
        if stale.name != gen.name:
            shutil.rmtree(stale, ignore_errors=True)
    index.path = path
    return gen


def _write_generation(index: Index, gen: Path) -> None:
    import faiss

    with open(gen / "documents.jsonl", "w", encoding="utf-8") as fh, open(gen / "texts.bin", "wb") as blob:
        offset = 0
        for d in index.documents:
            raw = d.text.encode("utf-8")
            blob.write(raw)
            fh.write(json.dumps({"doc_id": d.doc_id, "title": d.title, "fingerprint": d.fingerprint,
                                 "pages": [[p.number, p.start, p.end] for p in d.pages],
                                 "b0": offset, "b1": offset + len(raw), "h": hashlib.sha256(raw).hexdigest()[:32]},
                                ensure_ascii=False) + "\n")
            offset += len(raw)
    np.save(gen / "passages.npy", index.passages)
    np.save(gen / "sentences.npy", index.sentences)
    np.save(gen / "passage_vectors.npy", index.passage_vectors)
    np.save(gen / "sentence_vectors.npy", index.sentence_vectors)
    faiss.write_index(index.dense, str(gen / "dense.faiss"))
    if index.manifest["passages"]:
        index.keyword.save(str(gen / "bm25"), show_progress=False)
    np.save(gen / "doc_freq.npy", index.doc_freq)
    (gen / "terms.json").write_text(json.dumps(list(index.vocab)), encoding="utf-8")
    manifest = dict(index.manifest, format=FORMAT_VERSION)
    files = [f for f in sorted(gen.rglob("*")) if f.is_file()]
    manifest["files"] = {str(f.relative_to(gen)): f.stat().st_size for f in files}
    manifest["checksums"] = {str(f.relative_to(gen)): file_digest(f) for f in files}
    (gen / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    _fsync_tree(gen)


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


def read_manifest(path: Path) -> tuple[Path, dict]:
    """The live generation's directory and a well-formed manifest, or a clear error."""
    current = path / "CURRENT"
    if not current.exists():
        raise IndexNotFound(f"no index at {path}: build it with `qa index CORPUS --index {path}`")
    try:
        name = current.read_text(encoding="utf-8").strip()
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(_corrupt(path, f"CURRENT is unreadable ({exc})")) from exc
    if not _GENERATION.fullmatch(name):
        raise IndexCorrupt(_corrupt(path, f"CURRENT names no generation ({name[:40]!r})"))
    gen = path / name
    try:
        manifest = json.loads((gen / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(_corrupt(path, f"manifest.json is unreadable ({exc})")) from exc
    problem = _manifest_problem(manifest)
    if problem:
        raise IndexCorrupt(_corrupt(path, f"manifest.json {problem}"))
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
    if manifest["passages"] < 0 or manifest["sentences"] < 0 or manifest["dimension"] <= 0:
        return "has negative counts"
    return None


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


def load_index(path: Path, settings: Settings, *, mmap: bool = True) -> Index:
    """Load the live generation at ``path``; mismatch or corruption raise with a rebuild hint."""
    for attempt in range(3):
        gen, manifest = read_manifest(path)
        check_compatible(manifest, settings, path)
        try:
            return _load_generation(path, gen, manifest, mmap)
        except IndexCorrupt:
            if attempt < 2 and _live(path) != gen.name:
                continue  # a writer made another generation live (and removed this one) while we read
            raise
    raise AssertionError("unreachable")


def _live(path: Path) -> str | None:
    try:
        return (path / "CURRENT").read_text(encoding="utf-8").strip()
    except OSError:
        return None


@contextlib.contextmanager
def _reading(path: Path, name: str) -> Iterator[None]:
    """Any failure while reading ``name`` becomes IndexCorrupt naming that file."""
    try:
        yield
    except IndexProblem:
        raise
    except Exception as exc:  # numpy, faiss, json and bm25s each raise their own kinds
        raise IndexCorrupt(_corrupt(path, f"{name}: {type(exc).__name__}: {exc}")) from exc


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


def _load_generation(path: Path, gen: Path, manifest: dict, mmap: bool) -> Index:
    import bm25s
    import faiss

    files = manifest.get("files") or {}
    big = [n for n, size in files.items() if isinstance(size, int) and size > EAGER_VERIFY_MAX]
    sizes_ok = verify_files(path, gen, {"files": files})
    if sizes_ok:
        raise IndexCorrupt(_corrupt(path, sizes_ok[0]))
    problems = verify_files(path, gen, manifest, [n for n in files if n not in big])
    if problems:
        raise IndexCorrupt(_corrupt(path, problems[0]))
    with _reading(path, "documents.jsonl"):
        with open(gen / "documents.jsonl", encoding="utf-8") as fh:
            meta = [json.loads(line) for line in fh]
        if not all(isinstance(m, dict) for m in meta):
            raise ValueError("a line is not an object")
    documents: Sequence[Document]
    if (gen / "texts.bin").exists():
        with _reading(path, "texts.bin"):
            size = (gen / "texts.bin").stat().st_size
            blob = np.memmap(gen / "texts.bin", dtype=np.uint8, mode="r") if size else b""
        with _reading(path, "documents.jsonl"):
            ends = [(int(m["b0"]), int(m["b1"])) for m in meta]
            if any(not 0 <= b0 <= b1 <= size for b0, b1 in ends):
                raise ValueError("document offsets fall outside texts.bin")
            documents = DocumentStore(meta, blob, path)
    else:
        with _reading(path, "documents.jsonl"):
            documents = [Document(r["doc_id"], r["text"], tuple(Page(*p) for p in r["pages"]), r["title"],
                                  r["fingerprint"]) for r in meta]
    mode = "r" if mmap else None
    with _reading(path, "passages.npy"):
        passages = np.load(gen / "passages.npy")
    with _reading(path, "sentences.npy"):
        sentences = np.load(gen / "sentences.npy")
    with _reading(path, "passage_vectors.npy"):
        p_vecs = np.load(gen / "passage_vectors.npy", mmap_mode=mode)
    with _reading(path, "sentence_vectors.npy"):
        s_vecs = np.load(gen / "sentence_vectors.npy", mmap_mode=mode)
    with _reading(path, "dense.faiss"):
        dense = faiss.read_index(str(gen / "dense.faiss"))
        tune_search(dense)
    with _reading(path, "bm25/"):
        if manifest["passages"]:
            keyword = bm25s.BM25.load(str(gen / "bm25"), mmap=mmap, show_progress=False)
        else:
            keyword = bm25s.BM25(k1=BM25_K1, b=BM25_B)
    with _reading(path, "terms.json"):
        vocab = {t: i for i, t in enumerate(json.loads((gen / "terms.json").read_text(encoding="utf-8")))}
    with _reading(path, "doc_freq.npy"):
        doc_freq = np.load(gen / "doc_freq.npy")
    shapes = [
        ("documents.jsonl", len(documents) == len(manifest["documents"])),
        ("passages.npy", passages.shape == (manifest["passages"], 6)),
        ("sentences.npy", sentences.shape == (manifest["sentences"], 4)),
        ("passage_vectors.npy", p_vecs.shape == (manifest["passages"], manifest["dimension"])),
        ("sentence_vectors.npy", s_vecs.shape == (manifest["sentences"], manifest["dimension"])),
        ("dense.faiss", dense.ntotal == manifest["passages"]),
        ("doc_freq.npy", len(vocab) == len(doc_freq)),
    ]
    for name, ok in shapes:
        if not ok:
            raise IndexCorrupt(_corrupt(path, f"{name} disagrees with the manifest"))
    problem = table_problem(passages, sentences, doc_freq, [m.get("b1", 0) - m.get("b0", 0) for m in meta]
                            if isinstance(documents, DocumentStore) else [len(d.text) for d in documents])
    if problem:
        raise IndexCorrupt(_corrupt(path, problem))
    index = Index(manifest, documents, passages, sentences, p_vecs, s_vecs, dense, keyword, vocab, doc_freq, path)
    if big and manifest.get("checksums"):
        index.verified.clear()
        _verify_in_background(index, path, gen, manifest, big)
    return index


def table_problem(passages: np.ndarray, sentences: np.ndarray, doc_freq: np.ndarray,
                  lengths: Sequence[int]) -> str | None:
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
    if len(doc_freq) and (doc_freq.min() < 1 or doc_freq.max() > max(len(passages), 1)):
        return "doc_freq.npy holds impossible counts"
    return None


def _verify_in_background(index: Index, path: Path, gen: Path, manifest: dict, names: list[str]) -> None:
    """Hash the big files after open; a mismatch marks the index so every search refuses it."""
    def run() -> None:
        try:
            problems = verify_files(path, gen, manifest, names)
        except OSError as exc:  # the generation was replaced and removed meanwhile
            problems = [] if _live(path) != gen.name else [f"unreadable ({exc})"]
        if problems:
            index.problem = _corrupt(path, problems[0])
        index.verified.set()

    threading.Thread(target=run, name=f"qa-verify-{gen.name}", daemon=True).start()


def check_index(path: Path) -> list[str]:
    """Everything wrong with the index at ``path`` (empty when it is sound): for ``qa check``."""
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
        index = _load_generation(path, gen, dict(manifest, checksums={}), mmap=True)
        for i in range(len(index.documents)):
            index.documents[i]
        lengths = [len(d.text) for d in index.documents]
        problem = table_problem(index.passages, index.sentences, index.doc_freq, lengths)
        if problem:
            problems.append(problem)
    except (IndexProblem, ValueError) as exc:
        problems.append(str(exc))
    return problems


def update_index(
    path: Path,
    documents: Sequence[Document],
    settings: Settings,
    embedder: Embedder,
    *,
    rebuild: bool = False,
    sources: Sequence[str] = (),
    progress: Progress | None = None,
) -> tuple[Index, BuildReport]:
    """Bring the index at ``path`` up to ``documents``: embed only new or changed ones."""
    with index_lock(path):
        live = _live(path)
        for stale in path.glob("gen-*"):  # left by a writer that was killed (we hold the lock)
            if stale.name != live:
                shutil.rmtree(stale, ignore_errors=True)
        previous = None
        if not rebuild:
            try:
                previous = load_index(path, settings, mmap=False)
            except IndexNotFound:
                previous = None
        index, report = build_index(documents, settings, embedder, previous, progress)
        index.manifest["sources"] = [str(s) for s in sources]
        if previous is None or report.added or report.changed or report.removed \
                or previous.manifest.get("sources") != index.manifest["sources"]:
            save_index(index, path)
        else:
            index = previous
        index.path = path
        return index, report


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


def _corrupt(path: Path, why: str) -> str:
    return f"index at {path} is corrupt: {why}; rebuild it with `qa index CORPUS --index {path} --rebuild`"


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
