"""BEIR folders (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``): document-level retrieval.

nDCG@10 and recall@100 for BM25, dense and hybrid side by side; an abstract ranks by its best passage.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Sequence

from qa.api import get_engine, index_paths, tqdm_progress
from qa.evaluation.corpora import cache_dir
from qa.evaluation.metrics import ndcg, read_qrels, recall
from qa.index import terms
from qa.retrieve import keep_best, reciprocal_rank_fusion
from qa.settings import Settings

NAME = "beir"
MODES = ("bm25", "dense", "hybrid")


def detect(path: Path) -> bool:
    return path.is_dir() and (path / "corpus.jsonl").exists() and (path / "queries.jsonl").exists()


def run_beir_eval(path: Path, settings: Settings, *, limit: int | None = None,
                  modes: Sequence[str] = MODES) -> dict:
    """nDCG@10 and recall@100 at the document level for each retrieval mode."""
    qrels = read_qrels(qrels_file(path))
    queries = {q["_id"]: q["text"] for q in map(json.loads, open(path / "queries.jsonl", encoding="utf-8"))
               if q["_id"] in qrels}
    ids = sorted(queries)[:limit]
    index_dir = cache_dir(path, settings)
    index_paths([path / "corpus.jsonl"], index=index_dir, settings=settings, progress=tqdm_progress())
    engine = get_engine(index_dir, settings)
    retriever = engine.retriever
    vectors = engine.embedder.encode([queries[i] for i in ids], batch_size=64)
    depth = 1000
    out: dict = {"queries": len(ids), "corpus": str(path), "index": str(index_dir)}
    started = time.perf_counter()
    runs: dict[str, dict[str, list[str]]] = {m: {} for m in modes}
    for qid, vec in zip(ids, vectors):
        dense = retriever.dense(vec, depth)
        bm25 = retriever.keyword(terms(queries[qid]), depth)
        rankings = {"dense": dense, "bm25": bm25,
                    "hybrid": keep_best(reciprocal_rank_fusion([dense, bm25], settings.rrf_k), [dense, bm25],
                                        settings.top_k, settings.keep_best)}
        for mode in modes:
            docs: list[str] = []
            for pid, _ in rankings[mode]:
                doc_id = engine.index.store.passage(pid).doc_id
                if doc_id not in docs:
                    docs.append(doc_id)
            runs[mode][qid] = docs
    for mode in modes:
        out[mode] = {
            "ndcg@10": round(statistics.fmean(ndcg(runs[mode][q], qrels[q], 10) for q in ids), 4),
            "recall@100": round(statistics.fmean(recall(runs[mode][q], qrels[q], 100) for q in ids), 4),
        }
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def qrels_file(path: Path) -> Path:
    """The test qrels of a BEIR folder."""
    for candidate in (path / "qrels" / "test.tsv", path / "qrels.tsv"):
        if candidate.exists():
            return candidate
    raise ValueError(f"{path}: no qrels/test.tsv")


def run(path: Path, settings: Settings, args) -> tuple[dict, list[dict]]:
    return run_beir_eval(path, settings, limit=args.limit), []


def headline(summary: dict) -> str:
    return "\n".join(f"{mode:>7}: nDCG@10 {summary[mode]['ndcg@10']:.4f}  recall@100 {summary[mode]['recall@100']:.4f}"
                     for mode in MODES if mode in summary)
