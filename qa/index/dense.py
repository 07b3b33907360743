"""Dense search: passages by inner product with a query vector, keyed by stable passage id.

The default implementation wraps FAISS in ``IndexIDMap2``, so FAISS returns our passage
ids and ``remove_ids`` takes them. It is exact up to ``EXACT_MAX`` passages, HNSW up to
``HNSW_MAX``, and IVF with 8-bit scalar quantization beyond. HNSW cannot remove
vectors: :func:`carry_over` rebuilds it from the stored vectors when passages go, and
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
    """FAISS under an id map; ``vectors_of(ids)`` reads stored vectors to score a small filter exactly."""

    def __init__(self, index, kind: str, vectors_of: VectorsOf) -> None:
        self.index = index
        self.kind = kind
        self.vectors_of = vectors_of
        _tune(index)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, vectors_of: VectorsOf, kind: str | None = None) -> FaissSearch:
        """A new index of ``vectors`` under ``ids``, sized to their number unless ``kind`` is given."""
        import faiss

        n, dim = vectors.shape
        kind = kind or kind_for(n)
        if kind == "flat-ip":
            inner = faiss.IndexFlatIP(dim)
        elif kind == "hnsw32":
            inner = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = 80
        else:
            inner = faiss.index_factory(dim, kind, faiss.METRIC_INNER_PRODUCT)
            nlist = faiss.extract_index_ivf(inner).nlist
            sample = np.random.default_rng(0).choice(n, size=min(n, 40 * nlist), replace=False)
            inner.train(np.ascontiguousarray(vectors[np.sort(sample)], dtype=np.float32))
        dense = cls(faiss.IndexIDMap2(inner), kind, vectors_of)
        dense.add(ids, vectors)
        return dense

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        for lo in range(0, len(ids), 100_000):
            self.index.add_with_ids(np.ascontiguousarray(vectors[lo:lo + 100_000], dtype=np.float32),
                                    np.ascontiguousarray(ids[lo:lo + 100_000]))

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

            selector = faiss.IDSelectorBatch(np.asarray(doc_filter, dtype=np.int64))
            params = (faiss.SearchParametersHNSW(sel=selector, efSearch=max(HNSW_EF_SEARCH, k))
                      if self.kind.startswith("hnsw")
                      else faiss.SearchParametersIVF(sel=selector, nprobe=64) if self.kind.startswith("IVF")
                      else faiss.SearchParameters(sel=selector))
        scores, ids = self.index.search(query.reshape(1, -1).astype(np.float32), k, params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def save(self, directory: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(directory / FILE))

    @classmethod
    def load(cls, directory: Path, vectors_of: VectorsOf, kind: str = "") -> FaissSearch:
        import faiss

        index = faiss.read_index(str(directory / FILE))
        if not isinstance(index, faiss.IndexIDMap2):
            raise ValueError("not an id-mapped FAISS index")
        return cls(index, kind or _kind_of(index), vectors_of)

    def ids(self) -> np.ndarray:
        """Every passage id held."""
        import faiss

        return faiss.vector_to_array(self.index.id_map).astype(np.int64)


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


def _tune(index) -> None:
    """Search-time accuracy knobs of approximate indexes (not stored by FAISS)."""
    import faiss

    inner = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
    if hasattr(inner, "hnsw"):
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    try:
        faiss.extract_index_ivf(inner).nprobe = IVF_NPROBE
    except RuntimeError:
        pass


def _kind_of(index) -> str:
    import faiss

    inner = faiss.downcast_index(index.index)
    if hasattr(inner, "hnsw"):
        return "hnsw32"
    try:
        return f"IVF{faiss.extract_index_ivf(inner).nlist},SQ8"
    except RuntimeError:
        return "flat-ip"

