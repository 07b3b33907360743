"""Hybrid retrieval: FAISS dense search and BM25 fused by reciprocal rank.

Also turns a follow-up question plus chat history into a retrieval query, and exposes
the index as a llama-index retriever.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from qa.embed import Embedder, QueryEncoder
from qa.index import Index, IndexCorrupt, MilvusSearch, terms
from qa.question import name_spans, named_statement
from qa.settings import Settings
from qa.types import Passage

_MARKER = re.compile(r"\s*\[\d+\]")
_ANAPHORA = re.compile(
    r"\b(he|him|his|she|her|hers|they|them|their|theirs|it|its|this|that|these|those|there|"
    r"former|latter|same|such|other|else|also|then)\b",
    re.IGNORECASE,
)
_CONTINUATION = re.compile(r"^\s*(and|but|or|so|what about|how about|why|what else)\b", re.IGNORECASE)
MODES = ("hybrid", "dense", "bm25")
CONTEXT_WEIGHT = 0.3


@dataclass(frozen=True)
class Query:
    """A question ready for retrieval: its own text plus what the history adds."""

    question: str
    context: str = ""
    # Who or what a pronoun in the follow-up most likely means: index terms of the names
    # the last question used and of the first new name the last answer gave.
    referents: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return f"{self.question} ({self.context})" if self.context else self.question


def resolve_query(question: str, history: Sequence[dict] | None) -> Query:
    """Attach the last exchange to a follow-up that leans on it ("What did he ask…?").

    A question that names no one it refers back to is left alone, so a topic switch
    mid-conversation is not dragged back to the previous topic.
    """
    if not history or not _is_follow_up(question):
        return Query(question)
    last_user = next((m for m in reversed(history) if m.get("role") == "user"), None)
    last_bot = next((m for m in reversed(history) if m.get("role") == "assistant"), None)
    parts = []
    asked = _content_text(last_user.get("content")) if last_user else ""
    said = ""
    if asked:
        parts.append(asked)
    if last_bot:
        answer = _content_text(last_bot.get("content"))
        answer = answer.split("\n\nSources", 1)[0]
        if not answer.startswith(NOT_FOUND_PREFIX):
            said = _MARKER.sub("", answer)
            parts.append(said)
    context = " ".join(p.strip() for p in parts if p and p.strip())
    return Query(question, context[:2000], referents(asked, said))


def referents(asked: str, said: str) -> tuple[str, ...]:
    """The names a pronoun in a follow-up most likely points back to.

    Those of the last question ("Who is Ali Shamkhani?" → "Whom did he meet?") and the
    first name the last answer adds to it ("Who heads Asa'ib Ahl al-Haq?" → "Qais
    al-Khazali, …" → "What did he ask …?"), as the index terms of each name's last word.
    """
    asked = asked.strip()
    asked_names = [name for at, name in name_spans(asked) if at > 0]  # not the question word
    asked_terms = set(terms(" ".join(asked_names)))
    out = [t for name in asked_names for t in terms(name)[-1:]]
    for _, name in name_spans(said):
        name_terms = terms(name)
        if name_terms and not set(name_terms) & asked_terms:
            out.append(name_terms[-1])
            break
    return tuple(dict.fromkeys(out))


NOT_FOUND_PREFIX = "The reports do not say"


def _is_follow_up(question: str) -> bool:
    return bool(_ANAPHORA.search(question) or _CONTINUATION.search(question) or len(terms(question)) <= 1)


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # Gradio/OpenAI multi-part content
        return " ".join(_content_text(c.get("text", "") if isinstance(c, dict) else c) for c in content)
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return "" if content is None else str(content)


class Retriever:
    """Dense, keyword and fused search over one loaded :class:`Index`."""

    def __init__(self, index: Index, embedder: Embedder | QueryEncoder, settings: Settings) -> None:
        self.index = index
        self.embedder = embedder
        self.settings = settings

    def embed_query(self, query: Query) -> np.ndarray:
        """The query vector; history context pulls it part of the way."""
        return self.embed_parts(query)[0]

    def embed_parts(self, query: Query) -> tuple[np.ndarray, np.ndarray]:
        """The query vector and the bare question's vector (the same when there is no history)."""
        if not query.context:
            q = self.embedder.encode([query.question])[0]
            return q, q
        q, c = self.embedder.encode([query.question, query.context])
        v = q + CONTEXT_WEIGHT * c
        return (v / max(float(np.linalg.norm(v)), 1e-9)).astype(np.float32), q

    def query_terms(self, query: Query) -> list[str]:
        """BM25 query terms: the question's, then the history's."""
        seen = terms(query.question)
        return seen + [t for t in dict.fromkeys(terms(query.context)) if t not in seen]

    def search(
        self,
        query: Query,
        k: int | None = None,
        *,
        doc_ids: Sequence[str] | None = None,
        mode: str = "hybrid",
        vector: np.ndarray | None = None,
    ) -> list[Passage]:
        """Top-``k`` passages; ``doc_ids`` restricts the search to those documents."""
        k = k or self.settings.top_k
        if self.index.problem:
            raise IndexCorrupt(self.index.problem)
        if mode not in MODES:
            raise ValueError(f"unknown retrieval mode {mode!r}; use one of {', '.join(MODES)}")
        allowed = None if doc_ids is None else self.index.store.ids_of_documents(doc_ids)
        if allowed is not None and len(allowed) == 0:
            return []
        n = max(self.settings.candidates, k)
        engine = self.index.dense if isinstance(self.index.dense, MilvusSearch) else None
        if engine is not None:
            return self._search_engine(engine, query, k, n, mode, vector, allowed, doc_ids)
        ranked: list[list[tuple[int, float]]] = []
        if mode in ("hybrid", "dense"):
            vec = self.embed_query(query) if vector is None else vector
            ranked.append(self.dense(vec, n, allowed))
        if mode in ("hybrid", "bm25"):
            ranked.append(self.keyword(self.query_terms(query), n, allowed))
        weights = [1.0] * len(ranked)
        if mode == "hybrid" and self.settings.sentence_weight > 0:
            ranked.append(self.by_sentence(vec, n, allowed))
            weights.append(self.settings.sentence_weight)
        fused = ranked[0] if len(ranked) == 1 else reciprocal_rank_fusion(ranked, self.settings.rrf_k, weights)
        if mode == "hybrid":  # within the passages an answer reads, even when more are asked for
            fused = keep_best(fused, ranked[:2], min(k, self.settings.top_k), self.settings.keep_best)
            fused = self.with_statement(query, fused, k, vec, lambda ids: self.dense(vec, self.settings.statement_pages, ids))
        return [self.index.store.passage(pid, score) for pid, score in fused[:k]]

    def with_statement(self, query: Query, found: Sequence[tuple[int, float]], k: int, vector: np.ndarray,
                       rank: Callable[[np.ndarray], list[tuple[int, float]]]) -> list[tuple[int, float]]:
        """``found`` with the best passages of the financial statement the question is about
        among the first ``top_k``: the statement's pages of the reports found (a filing's balance
        sheet is numbers under one heading, out-ranked by every page of prose that mentions it).

        ``rank(ids)`` orders candidate ids by dense score. The first passage found always stays;
        an added one takes the fused score of the slot it fills (not its dense score, which is on
        another scale). Off when ``statement_pages`` is 0. A question asking why a line item moved
        still reads the statement: an earnings release explains under its "Balance Sheet" heading
        (skipping them lost 3 FinanceBench questions, held-out prose questions unchanged).
        """
        kind = named_statement(query.question) if self.settings.statement_pages > 0 else ""
        head = min(k, self.settings.top_k)
        if not kind or len(found) < 2 or head < 2:
            return list(found)
        store = self.index.store
        docs = list(dict.fromkeys(store.passage(pid).doc_id for pid, _ in found[:k]))
        candidates = store.statement_passages(docs, kind)
        if not len(candidates):
            return list(found)
        shown = {pid for pid, _ in found[:head]}
        extra = [pid for pid, _ in rank(candidates) if pid not in shown][:head - 1]
        if not extra:
            return list(found)
        kept = list(found[:head - len(extra)])
        slots = [score for _, score in found[len(kept):len(kept) + len(extra)]]
        added = [(pid, slots[i] if i < len(slots) else kept[-1][1]) for i, pid in enumerate(extra)]
        chosen = {pid for pid, _ in kept} | set(extra)
        return kept + added + [item for item in found if item[0] not in chosen]

    def _search_engine(self, engine: MilvusSearch, query: Query, k: int, n: int, mode: str,
                       vector: np.ndarray | None, allowed: np.ndarray | None,
                       doc_ids: Sequence[str] | None) -> list[Passage]:
        """The same searches done by the engine: fusion included, the filter as its expression."""
        store = self.index.store
        names = None if doc_ids is None else [d for d in doc_ids if store.has_document(d)]
        if mode == "bm25":
            hits = engine.keyword_search(self.query_terms(query), k, allowed, names)
        else:
            vec = self.embed_query(query) if vector is None else vector
            if mode == "dense":
                hits = engine.dense_search(vec, k, allowed, names)
            else:
                words = self.query_terms(query)
                m = self.settings.keep_best
                hits = engine.hybrid(vec, words, n if m > 0 else k, n, self.settings.rrf_k, allowed, names)
                if m > 0:
                    best = [engine.dense_search(vec, m, allowed, names), engine.keyword_search(words, m, allowed, names)]
                    hits = keep_best(hits, best, min(k, self.settings.top_k), m)
                # a row the store does not hold (an update under way elsewhere) is never shown
                hits = [(pid, score) for pid, score in hits if store.holds(pid)]
                hits = self.with_statement(query, hits, k, vec, lambda ids: [
                    hit for hit in engine.dense_search(vec, self.settings.statement_pages, ids, None)
                    if store.holds(hit[0])])[:k]
        return [store.passage(pid, score) for pid, score in hits if store.holds(pid)]

    def by_sentence(self, vector: np.ndarray, n: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Passage ids ranked by their best sentence's similarity to ``vector``.

        A passage is an average of several sentences; a paraphrased question often matches
        one sentence better than any passage (the answer sentence drowned by its neighbours).
        Needs every sentence's vector: only for an index that stores them (QA_SENTENCE_VECTORS).
        """
        store = self.index.store
        if store.sentence_count == 0 or not store.stores_sentence_vectors:
            return []
        owner = store.sentence_owners()
        scores = store.sentence_vectors(slice(None)) @ vector
        if allowed is not None:
            scores = np.where(np.isin(owner, allowed), scores, -np.inf)
        top = np.argpartition(-scores, min(len(scores) - 1, 4 * n))[: 4 * n]
        top = top[np.argsort(-scores[top], kind="stable")]
        out: dict[int, float] = {}
        for s in top.tolist():
            if not np.isfinite(scores[s]):
                break
            out.setdefault(int(owner[s]), float(scores[s]))
            if len(out) >= n:
                break
        return list(out.items())

    def dense(self, vector: np.ndarray, n: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Passage ids by inner product with ``vector``, best first; ``allowed`` restricts the ids."""
        return self.index.dense.search(vector, n, allowed)

    def keyword(self, query_terms: list[str], n: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Passage ids by BM25 score, best first; passages sharing no term are left out."""
        return self.index.keyword.search(query_terms, n, allowed)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[tuple[int, float]]], k: int = 60,
                           weights: Sequence[float] | None = None) -> list[tuple[int, float]]:
    """Cormack et al.'s RRF: sum of ``w / (k + rank)`` over the rankings, best first."""
    weights = weights or [1.0] * len(rankings)
    fused: dict[int, float] = {}
    for ranking, w in zip(rankings, weights):
        for rank, (pid, _) in enumerate(ranking, start=1):
            fused[pid] = fused.get(pid, 0.0) + w / (k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def keep_best(fused: Sequence[tuple[int, float]], rankings: Sequence[Sequence[tuple[int, float]]], k: int,
              m: int) -> list[tuple[int, float]]:
    """``fused`` with each ranking's ``m`` best always among its first ``k``, in fused order.

    Rank fusion rewards agreement: a passage dense search ranks first but BM25 ranks 25th
    (a paraphrase: the right sentence in other words) loses to passages both rank third,
    and so does BM25's first hit on a name the embedding blurs. On the news dev split, 20
    of 80 evidence sentences were first or second in one list yet out of the fused top 5.
    """
    if m <= 0 or k <= 0:
        return list(fused)
    score = dict(fused)
    must = sorted(dict.fromkeys(pid for ranking in rankings for pid, _ in ranking[:m] if pid in score),
                  key=lambda pid: (-score[pid], pid))[:k]
    chosen = set(must)
    for pid, _ in fused:
        if len(chosen) >= k:
            break
        chosen.add(pid)
    head = sorted(chosen, key=lambda pid: (-score[pid], pid))
    return [(pid, score[pid]) for pid in head] + [item for item in fused if item[0] not in chosen]


def as_llama_retriever(retriever: Retriever, k: int | None = None):
    """A llama-index ``BaseRetriever`` over this index; offsets travel in node metadata."""
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    class QARetriever(BaseRetriever):
        """Hybrid FAISS + BM25 retrieval from a ``qa`` index."""

        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            hits = retriever.search(Query(query_bundle.query_str), k)
            return [
                NodeWithScore(
                    node=TextNode(
                        id_=f"{p.doc_id}:{p.start}-{p.end}",
                        text=p.text,
                        metadata={"doc_id": p.doc_id, "start": p.start, "end": p.end, "page": p.page},
                    ),
                    score=p.score,
                )
                for p in hits
            ]

    return QARetriever()

