"""Keyword search: BM25 over passage terms, keyed by stable passage id.

bm25s has no incremental add or delete, and its ``index`` counts every document's terms
in Python: at a million passages about 35 s even from token ids, after about 150 s of
our own tokenizing. So :class:`Bm25Search` keeps, beside bm25s' score matrix, the term
frequency behind each of its entries (``keyword_tf.npy``, one byte an entry, about 35
bytes a passage). An update drops the entries of deleted passages, tokenizes only the
added ones, and recomputes every score from the frequencies (any change moves the IDF
and the mean passage length, hence every score) with bm25s' own scoring functions, in a
few vectorized passes: a few seconds at a million passages, and the very matrix a full
rebuild over the same passages makes (tests/test_index.py).

The only full rebuild, re-tokenizing every passage read back through ``texts_of``, is
of an index saved before the frequencies were kept, at its first update (once).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np

from qa.index.store import reading
from qa.index.terms import terms

BM25_K1, BM25_B = 0.9, 0.4  # Anserini's defaults, the reference figures' parameters
SCORE_BLOCK = 1 << 22  # matrix entries scored at a time: bounds the float64 temporaries (~150 MB)

Hits = list[tuple[int, float]]
TextsOf = Callable[[np.ndarray], Iterator[str]]


class KeywordSearch(Protocol):
    """Passages by the query terms they hold; every id is a stable passage id."""

    def __len__(self) -> int: ...

    def add(self, ids: np.ndarray, texts: Iterable[str]) -> None: ...

    def delete(self, ids: np.ndarray) -> None: ...

    def search(self, query: Sequence[str], k: int, doc_filter: np.ndarray | None = None) -> Hits:
        """The ``k`` best ``(passage_id, score)`` for the index terms ``query``, best first; passages
        holding none of them are left out; ``doc_filter`` holds the allowed ids."""
        ...

    def doc_freq(self, term: str) -> int:
        """How many passages hold ``term`` (0 for a term no passage holds)."""
        ...

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: Path, texts_of: TextsOf) -> KeywordSearch: ...


@dataclass
class TermCounts:
    """How often each term occurs in each passage, column by column as bm25s stores its scores.

    Column ``c`` (term ``terms[c]``) holds ``rows[indptr[c]:indptr[c+1]]`` (bm25s document
    numbers, ascending) and their frequencies ``tf`` at the same positions; a passage
    without terms holds ``""`` once, as bm25s is given it.
    """

    terms: list[str]
    indptr: np.ndarray  # int64, len(terms) + 1
    rows: np.ndarray  # int32
    tf: np.ndarray  # uint8 (uint16, uint32 when a passage repeats a term more often)
    n_docs: int

    @classmethod
    def empty(cls) -> TermCounts:
        return cls([], np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.uint8), 0)

    def without(self, keep: np.ndarray) -> TermCounts:
        """Only the documents where ``keep`` is true (renumbered in order); terms left in none go."""
        if keep.all():
            return self
        lengths = np.diff(self.indptr)
        cols = np.repeat(np.arange(len(self.terms), dtype=np.int32), lengths)
        kept = keep[self.rows]
        rows = (np.cumsum(keep, dtype=np.int64) - 1)[self.rows[kept]].astype(np.int32)
        counts = np.bincount(cols[kept], minlength=len(self.terms))
        held = counts > 0
        return TermCounts([t for t, h in zip(self.terms, held.tolist()) if h], _pointers(counts[held]), rows,
                          self.tf[kept], int(keep.sum()))

    def plus(self, token_lists: Iterable[list[str]]) -> TermCounts:
        """These documents appended (numbered from ``n_docs`` on), new terms after the known ones."""
        vocab = {t: c for c, t in enumerate(self.terms)}
        flat: list[int] = []
        lengths: list[int] = []
        for tokens in token_lists:
            tokens = tokens or [""]
            flat.extend(vocab.setdefault(t, len(vocab)) for t in tokens)
            lengths.append(len(tokens))
        if not lengths:
            return self
        # one sort by (term, document) gives the new entries in column order, repeats counted;
        # built in place (a token is 8 bytes an array here: 7M tokens at 89k passages)
        keys = np.array(flat, dtype=np.int64)
        del flat
        keys <<= 32
        keys |= np.repeat(np.arange(self.n_docs, self.n_docs + len(lengths), dtype=np.int64), lengths)
        keys, tf = np.unique(keys, return_counts=True)
        cols, rows = keys >> 32, (keys & 0xFFFFFFFF).astype(np.int32)
        old_counts = np.diff(self.indptr)
        n_terms = len(vocab)
        add_counts = np.bincount(cols, minlength=n_terms)
        counts = add_counts.copy()
        counts[:len(old_counts)] += old_counts
        indptr = _pointers(counts)
        # new documents come after the old ones: each column keeps its old entries, then the new
        old_at = np.arange(len(self.rows), dtype=np.int64) + np.repeat(indptr[:len(old_counts)] - self.indptr[:-1],
                                                                        old_counts)
        old_counts_all = np.zeros(n_terms, np.int64)
        old_counts_all[:len(old_counts)] = old_counts
        add_start = _pointers(add_counts)
        new_at = indptr[cols] + old_counts_all[cols] + np.arange(len(keys)) - add_start[cols]
        out_rows = np.empty(indptr[-1], np.int32)
        out_rows[old_at], out_rows[new_at] = self.rows, rows
        out_tf = np.empty(indptr[-1], np.min_scalar_type(max(int(tf.max()), int(self.tf.max(initial=0)))))
        out_tf[old_at], out_tf[new_at] = self.tf, tf
        return TermCounts(list(vocab), indptr, out_rows, out_tf, self.n_docs + len(lengths))

    def bm25(self, k1: float = BM25_K1, b: float = BM25_B) -> "bm25s.BM25":  # noqa: F821 (imported lazily)
        """A bm25s index (method "lucene") over these counts, its scores computed by bm25s' own functions."""
        from bm25s.tokenization import Tokenized

        bm25 = _counts_bm25()(k1=k1, b=b)
        # bm25s hands ``ids`` unread to build_index_from_ids, overridden below to take these counts
        bm25.index(Tokenized(ids=self, vocab={t: c for c, t in enumerate(self.terms)}), create_empty_token=False,
                   show_progress=False)
        return bm25


def _pointers(counts: np.ndarray) -> np.ndarray:
    indptr = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr


@functools.cache
def _counts_bm25():
    """bm25s.BM25 building its score matrix from :class:`TermCounts` rather than token lists.

    bm25s documents ``build_index_from_ids`` as the method to override "to build the index
    in a different way"; this one computes the same IDF and term-frequency components with
    bm25s' own scorers, vectorized over all entries instead of a Python loop per document.
    """
    import bm25s
    from bm25s.scoring import _build_idf_array, _select_idf_scorer, _select_tfc_scorer

    class CountsBM25(bm25s.BM25):
        def build_index_from_ids(self, unique_token_ids, corpus_token_ids: TermCounts, show_progress=True,
                                 leave_progress=False) -> dict:
            counts = corpus_token_ids
            if self.method in self.methods_requiring_nonoccurrence:
                raise ValueError(f"BM25 method {self.method!r} is not supported from term counts")
            self.nonoccurrence_array = None
            n = counts.n_docs
            lengths = np.bincount(counts.rows, weights=counts.tf, minlength=n).astype(np.int64)
            avg_len = np.float64(int(lengths.sum())) / max(n, 1)  # as bm25s' mean of the lengths, in any order
            df = np.diff(counts.indptr)
            values, which = np.unique(df, return_inverse=True)  # few distinct counts: bm25s' scalar IDF per value
            idf = _build_idf_array(dict(enumerate(values.tolist())), n, _select_idf_scorer(self.idf_method),
                                   self.dtype)[which]
            tfc = _select_tfc_scorer(self.method)
            cols = np.repeat(np.arange(len(df), dtype=np.int32), df)
            data = np.empty(len(counts.rows), dtype=self.dtype)
            for lo in range(0, len(data), SCORE_BLOCK):
                part = slice(lo, lo + SCORE_BLOCK)
                data[part] = idf[cols[part]] * tfc(tf_array=counts.tf[part].astype(np.float32),
                                                   l_d=lengths[counts.rows[part]], l_avg=avg_len, k1=self.k1,
                                                   b=self.b, delta=self.delta)
            return {"data": data, "indices": np.asarray(counts.rows, np.int32), "indptr": counts.indptr,
                    "num_docs": n}

    return CountsBM25


class Bm25Search:
    """bm25s (k1 0.9, b 0.4), the passage id of each of its documents and its term counts."""

    def __init__(self, texts_of: TextsOf, bm25=None, ids: np.ndarray | None = None,
                 vocab: dict[str, int] | None = None, doc_freqs: np.ndarray | None = None,
                 tf: np.ndarray | None = None) -> None:
        self.texts_of = texts_of
        self.bm25 = bm25
        self.ids = np.zeros(0, np.int64) if ids is None else ids
        self.vocab = vocab or {}
        self.doc_freqs = np.zeros(0, np.int64) if doc_freqs is None else doc_freqs
        # frequency behind each entry of bm25s' matrix; None: saved before they were kept
        self.tf = tf if tf is not None or len(self.ids) else np.zeros(0, np.uint8)
        self.rows = self.ids  # the passage id of each bm25s document
        self.refreshed = ""  # what the last refresh did: "updated", or "rebuilt: why"
        self._pending: dict[int, str] = {}
        self._stale = bm25 is None and len(self.ids) > 0

    @classmethod
    def build(cls, ids: np.ndarray, texts: Iterable[str], texts_of: TextsOf) -> Bm25Search:
        search = cls(texts_of)
        search.add(ids, texts)
        search.refresh()
        return search

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ids: np.ndarray, texts: Iterable[str]) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return
        self._pending.update(zip(ids.tolist(), texts))
        self.ids = np.concatenate([self.ids, ids])
        self._stale = True

    def delete(self, ids: np.ndarray) -> None:
        gone = np.isin(self.ids, ids)
        if not gone.any():
            return
        for i in self.ids[gone].tolist():
            self._pending.pop(i, None)
        self.ids = self.ids[~gone]
        self._stale = True

    def refresh(self) -> None:
        """Bring bm25s up to the passages now held: drop deleted ones, tokenize added ones, rescore."""
        if not self._stale and self.bm25 is not None:
            return
        added = np.isin(self.ids, np.fromiter(self._pending, np.int64, len(self._pending)))
        survivors, new = self.ids[~added], self.ids[added]
        counts = self.counts()
        if counts is None:  # saved before term counts were kept: re-tokenize every passage, once
            counts = TermCounts.empty().plus(terms(t) for t in self.texts_of(survivors))
            self.refreshed = "rebuilt: the index predates keyword_tf.npy, so every passage was re-tokenized"
        elif len(self.rows):
            keep = np.isin(self.rows, survivors)
            if not np.array_equal(self.rows[keep], survivors):  # add appends and delete keeps the order
                raise AssertionError("keyword passages out of order")
            counts = counts.without(keep)
            self.refreshed = "updated"
        else:
            self.refreshed = "built"
        counts = counts.plus(terms(self._pending[i]) for i in new.tolist())
        self.bm25 = counts.bm25()
        self.ids = self.rows = np.concatenate([survivors, new])
        self.tf = counts.tf
        self.vocab = {t: c for c, t in enumerate(counts.terms)}
        self.doc_freqs = np.diff(counts.indptr)
        self._pending, self._stale = {}, False

    def counts(self) -> TermCounts | None:
        """The term counts of bm25s' documents (``rows``), or None for an index saved without them."""
        if self.bm25 is None:
            return TermCounts.empty() if not len(self.rows) else None
        if self.tf is None:
            return None
        scores = self.bm25.scores
        by_column = [""] * len(self.bm25.vocab_dict)
        for term, column in self.bm25.vocab_dict.items():
            by_column[column] = term
        return TermCounts(by_column, np.asarray(scores["indptr"], np.int64), scores["indices"], self.tf,
                          int(scores["num_docs"]))

    def search(self, query: Sequence[str], k: int, doc_filter: np.ndarray | None = None) -> Hits:
        self.refresh()
        if not len(self.ids):
            return []
        known = [t for t in query if t in self.bm25.vocab_dict]
        if not known:
            return []
        scores = self.bm25.get_scores(known)
        # Most passages share no query term: rank only the scored ones (4x faster than
        # bm25s' retrieve, which partitions the whole score array).
        hits = np.flatnonzero(scores)
        if doc_filter is not None:
            hits = hits[np.isin(self.ids[hits], doc_filter)]
        if len(hits) > k:  # keep every passage tied with the k-th: the lower ids win, wherever bm25s holds them
            hits = hits[scores[hits] >= -np.partition(-scores[hits], k - 1)[k - 1]]
        ids = self.ids[hits]
        order = np.lexsort((ids, -scores[hits]))[:k]
        return [(int(ids[i]), float(scores[hits[i]])) for i in order]

    def doc_freq(self, term: str) -> int:
        self.refresh()
        pos = self.vocab.get(term)
        return 0 if pos is None else int(self.doc_freqs[pos])

    def save(self, directory: Path) -> None:
        """bm25/ (bm25s' files), keyword_ids.npy (its document number → passage id), keyword_tf.npy
        (the frequency behind each entry of its matrix), terms.json, doc_freq.npy."""
        self.refresh()
        if len(self.ids):
            self.bm25.save(str(directory / "bm25"), show_progress=False)
        np.save(directory / "keyword_ids.npy", self.ids)
        if self.tf is not None:  # None: an index saved before they were kept, unchanged since
            np.save(directory / "keyword_tf.npy", self.tf)
        np.save(directory / "doc_freq.npy", self.doc_freqs)
        (directory / "terms.json").write_text(json.dumps(list(self.vocab)), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, texts_of: TextsOf, mmap: bool = True) -> Bm25Search:
        """The saved index; one saved before keyword_tf.npy existed loads too (its first update rebuilds it).

        A generation that has keyword_tf.npy lists it in its manifest, so a missing one is
        reported as corrupt before this runs.
        """
        import bm25s

        path = directory.parent
        with reading(path, "keyword_ids.npy"):
            ids = np.load(directory / "keyword_ids.npy")
            if ids.ndim != 1 or ids.dtype != np.int64:
                raise ValueError("not a vector of ids")
        with reading(path, "bm25/"):
            bm25 = (bm25s.BM25.load(str(directory / "bm25"), mmap=mmap, show_progress=False) if len(ids)
                    else bm25s.BM25(k1=BM25_K1, b=BM25_B))
        tf = None
        if (directory / "keyword_tf.npy").exists():
            with reading(path, "keyword_tf.npy"):
                tf = np.load(directory / "keyword_tf.npy", mmap_mode="r" if mmap else None)
                if tf.ndim != 1 or tf.dtype.kind != "u":
                    raise ValueError("not a vector of counts")
        with reading(path, "terms.json"):
            vocab = {t: i for i, t in enumerate(json.loads((directory / "terms.json").read_text(encoding="utf-8")))}
        with reading(path, "doc_freq.npy"):
            doc_freqs = np.load(directory / "doc_freq.npy")
        return cls(texts_of, bm25, ids, vocab, doc_freqs, tf)

    def problem(self) -> str | None:
        """A count that cannot be right in the loaded files."""
        if len(self.vocab) != len(self.doc_freqs):
            return "doc_freq.npy disagrees with terms.json"
        if len(self.doc_freqs) and (self.doc_freqs.min() < 1 or self.doc_freqs.max() > max(len(self.ids), 1)):
            return "doc_freq.npy holds impossible counts"
        if self.tf is not None and len(self.ids):
            scores = self.bm25.scores
            if len(self.tf) != len(scores["data"]):
                return "keyword_tf.npy disagrees with bm25/ (another number of entries)"
            if len(self.tf) and self.tf.min() < 1:
                return "keyword_tf.npy holds impossible counts"
            if int(scores["num_docs"]) != len(self.ids) or len(self.bm25.vocab_dict) != len(scores["indptr"]) - 1 \
                    or not np.array_equal(np.diff(scores["indptr"]), self.doc_freqs):
                return "bm25/ disagrees with keyword_ids.npy, terms.json or doc_freq.npy"
        return None
