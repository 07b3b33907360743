"""Dense search: passages by inner product with a query vector, keyed by stable passage id.

The default implementation keys FAISS by passage id (IVF natively, flat and HNSW
through ``IndexIDMap2``), so ``remove_ids`` takes our ids and searches return them.
It is exact up to ``EXACT_MAX`` passages, HNSW up to ``HNSW_MAX``, and IVF with 8-bit
scalar quantization beyond. HNSW cannot remove vectors: :func:`carry_over` rebuilds it from the stored vectors when passages go, and
rebuilds any kind when the corpus crosses into another size class.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

EXACT_MAX = 50_000
HNSW_MAX = 250_000
HNSW_EF_SEARCH = 128
IVF_NPROBE = 32
EXACT_FILTER_MAX = 100_000  # a filter to this many passages or fewer is scored exactly
FILE = "dense.faiss"

Hits = list[tuple[int, float]]
VectorsOf = Callable[[np.ndarray], np.ndarray]


class DenseSearch(Protocol):
    """Passages by similarity to a vector; every id is a stable passage id."""

    kind: str

    def __len__(self) -> int: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def delete(self, ids: np.ndarray) -> None: ...

    def search(self, query: np.ndarray, k: int, doc_filter: np.ndarray | None = None) -> Hits:
        """The ``k`` best ``(passage_id, score)``, best first; ``doc_filter`` holds the allowed ids."""
        ...

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: Path, vectors_of: VectorsOf) -> DenseSearch: ...


def kind_for(n: int) -> str:
    """The FAISS index for ``n`` passages: exact, then HNSW, then IVF + SQ8 (the manifest's ``dense``)."""
    if n <= EXACT_MAX:
        return "flat-ip"
    if n <= HNSW_MAX:
        return "hnsw32"
    return f"IVF{1 << round(math.log2(2 * math.sqrt(n)))},SQ8"


class FaissSearch:
    """FAISS keyed by passage id; ``vectors_of(ids)`` reads stored vectors to score a small filter exactly.

    IVF keeps ids in its inverted lists; flat and HNSW cannot, so they sit in an
    ``IndexIDMap2`` (saved with them). Searches go to the inner index and labels are
    translated here: the id map's own search translates in an OpenMP loop whose thread
    wake-up cost milliseconds a query on a busy machine.
    """

    def __init__(self, index, kind: str, vectors_of: VectorsOf) -> None:
        import faiss

        self.index = index
        self.kind = kind
        self.vectors_of = vectors_of
        self._mapped = isinstance(index, faiss.IndexIDMap2)
        self._inner = faiss.downcast_index(index.index) if self._mapped else index
        self._labels = self._read_labels()
        _tune(self._inner)

    def _read_labels(self) -> np.ndarray | None:
        """Inner position -> passage id, for an id-mapped index."""
        import faiss

        return faiss.vector_to_array(self.index.id_map).astype(np.int64) if self._mapped else None

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, vectors_of: VectorsOf, kind: str | None = None) -> FaissSearch:
        """A new index of ``vectors`` under ``ids``, sized to their number unless ``kind`` is given."""
        import faiss

        n, dim = vectors.shape
        kind = kind or kind_for(n)
        if kind == "flat-ip":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        elif kind == "hnsw32":
            inner = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = 80
            index = faiss.IndexIDMap2(inner)
        else:
            index = faiss.index_factory(dim, kind, faiss.METRIC_INNER_PRODUCT)
            nlist = faiss.extract_index_ivf(index).nlist
            sample = np.random.default_rng(0).choice(n, size=min(n, 40 * nlist), replace=False)
            index.train(np.ascontiguousarray(vectors[np.sort(sample)], dtype=np.float32))
        dense = cls(index, kind, vectors_of)
        dense.add(ids, vectors)
        return dense

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        for lo in range(0, len(ids), 100_000):
            self.index.add_with_ids(np.ascontiguousarray(vectors[lo:lo + 100_000], dtype=np.float32),
                                    np.ascontiguousarray(ids[lo:lo + 100_000]))
        self._labels = self._read_labels()

    @property
    def removable(self) -> bool:
        """HNSW cannot remove vectors; the others can."""
        return not self.kind.startswith("hnsw")

    def delete(self, ids: np.ndarray) -> None:
        """Remove ``ids`` (HNSW raises: see :func:`carry_over`)."""
        import faiss

        if not len(ids):
            return
        if not self.removable:
            raise NotImplementedError("FAISS HNSW cannot remove vectors: rebuild it")
        self.index.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64)))
        self._labels = self._read_labels()

    def search(self, query: np.ndarray, k: int, doc_filter: np.ndarray | None = None) -> Hits:
        total = len(self)
        if total == 0:
            return []
        k = min(k, total if doc_filter is None else len(doc_filter))
        if doc_filter is not None and (len(doc_filter) <= EXACT_FILTER_MAX or total <= EXACT_FILTER_MAX):
            # A filter to a few documents: score their passages exactly, no ANN recall loss.
            ids = np.sort(np.asarray(doc_filter, dtype=np.int64))
            scores = self.vectors_of(ids) @ query
            top = np.argsort(-scores, kind="stable")[:k]
            return [(int(ids[i]), float(scores[i])) for i in top]
        params = None
        if doc_filter is not None:
            import faiss

            allowed = np.asarray(doc_filter, dtype=np.int64)
            if self._labels is not None:
                allowed = np.flatnonzero(np.isin(self._labels, allowed)).astype(np.int64)
            selector = faiss.IDSelectorBatch(allowed)
            params = (faiss.SearchParametersHNSW(sel=selector, efSearch=max(HNSW_EF_SEARCH, k))
                      if self.kind.startswith("hnsw")
                      else faiss.SearchParametersIVF(sel=selector, nprobe=64) if self.kind.startswith("IVF")
                      else faiss.SearchParameters(sel=selector))
        scores, found = self._inner.search(query.reshape(1, -1).astype(np.float32), k, params=params)
        keep = found[0] >= 0
        ids = found[0][keep] if self._labels is None else self._labels[found[0][keep]]
        return [(int(i), float(s)) for i, s in zip(ids, scores[0][keep])]

    def save(self, directory: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(directory / FILE))

    @classmethod
    def load(cls, directory: Path, vectors_of: VectorsOf, kind: str = "") -> FaissSearch:
        import faiss

        index = faiss.read_index(str(directory / FILE))
        if not isinstance(index, faiss.IndexIDMap2):
            faiss.extract_index_ivf(index)  # else not an index keyed by passage id: raises
        return cls(index, kind or _kind_of(index), vectors_of)

    def ids(self) -> np.ndarray:
        """Every passage id held."""
        import faiss

        if self._labels is not None:
            return self._labels.copy()
        invlists = faiss.extract_index_ivf(self.index).invlists
        parts = [faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
                 for i in range(invlists.nlist) if invlists.list_size(i)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def carry_over(previous: FaissSearch, removed: np.ndarray, added: np.ndarray, added_vectors: np.ndarray,
               all_ids: np.ndarray, all_vectors: Callable[[], np.ndarray], vectors_of: VectorsOf) -> FaissSearch:
    """``previous`` with ``removed`` deleted and ``added`` added, in place when FAISS allows it.

    Rebuilt from all stored vectors instead when passages go from an HNSW index (it
    cannot remove) or when the new size wants another kind of index (exact → HNSW →
    IVF, or another IVF list count), so an index never outgrows its kind.
    """
    n = len(all_ids)
    if kind_for(n) != previous.kind or (len(removed) and not previous.removable):
        return FaissSearch.build(all_ids, all_vectors(), vectors_of)
    previous.delete(removed)
    previous.add(added, added_vectors)
    previous.vectors_of = vectors_of
    return previous


def _tune(inner) -> None:
    """Search-time accuracy knobs of approximate indexes (not stored by FAISS)."""
    import faiss

    if hasattr(inner, "hnsw"):
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    try:
        faiss.extract_index_ivf(inner).nprobe = IVF_NPROBE
    except RuntimeError:
        pass


def _kind_of(index) -> str:
    import faiss

    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if hasattr(inner, "hnsw"):
        return "hnsw32"
    try:
        return f"IVF{faiss.extract_index_ivf(inner).nlist},SQ8"
    except RuntimeError:
        return "flat-ip"

