"""RealTimeQA news: gold-article retrieval, answer accuracy and document-level citation precision."""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from qa.api import answer, get_engine, index_paths, tqdm_progress
from qa.evaluation.corpora import cache_dir
from qa.evaluation.metrics import doc_ranking, mean, ndcg, normalize, percentile
from qa.retrieve import Query
from qa.settings import Settings

NAME = "realtimeqa"


def detect(path: Path) -> bool:
    return path.is_dir() and (path / "corpus.jsonl").exists() and (path / "questions.jsonl").exists() \
        and (path / "qrels.tsv").exists()


def run_realtimeqa_eval(path: Path, settings: Settings, *, limit: int | None = None, progress: bool = True,
                        index: str | None = None) -> dict:
    """News QA: gold-article hit@10 and nDCG@10, answer accuracy, document-level citation precision.

    An answer is correct when it names the correct choice and no wrong one (quotes,
    case and spacing folded); citation precision counts citations whose article is a
    gold article, over the questions that have one.
    """
    questions = [json.loads(line) for line in (path / "questions.jsonl").open(encoding="utf-8") if line.strip()]
    questions = questions[:limit]
    index_dir = Path(index) if index else cache_dir(path, settings)
    index_paths([path / "corpus.jsonl"], index=index_dir, settings=settings,
                progress=tqdm_progress() if progress else None)
    engine = get_engine(index_dir, settings)
    rows = []
    for n, q in enumerate(questions, start=1):
        gold = set(q.get("gold_doc_ids") or [])
        started = time.perf_counter()
        result = answer(q["question"], index=str(index_dir), settings=settings)
        seconds = time.perf_counter() - started
        text = _bare(result.text) if not result.abstained else ""
        right = [_bare(a) for a in q["answer"] if _bare(a).strip()]
        wrong = [_bare(c) for c in q["choices"] if _bare(c).strip() and _bare(c) not in right]
        row = {"id": q["_id"], "question": q["question"], "answer": result.text, "abstained": result.abstained,
               "correct": any(a in text for a in right) and not any(w in text for w in wrong),
               "names_a_choice": any(c in text for c in right + wrong), "gold": sorted(gold),
               "cited": [c.doc_id for c in result.citations], "seconds": seconds}
        if gold:
            ranking = {m: doc_ranking(engine.retriever.search(Query(q["question"]), 50, mode=m)) for m in ("bm25", "dense", "hybrid")}
            for mode, docs in ranking.items():
                row[f"{mode}_hit@10"] = float(bool(gold & set(docs[:10])))
                row[f"{mode}_ndcg@10"] = ndcg(docs, {d: 1 for d in gold}, 10)
            if result.citations:
                row["citation_precision"] = sum(c.doc_id in gold for c in result.citations) / len(result.citations)
        rows.append(row)
        if progress:
            print(f"\r{n}/{len(questions)} questions", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    with_gold = [r for r in rows if r["gold"]]
    out = {"set": str(path), "questions": len(rows), "with_gold_article": len(with_gold), "llm": settings.llm,
           "answer_accuracy": mean(float(r["correct"]) for r in rows),
           "names_a_choice": mean(float(r["names_a_choice"]) for r in rows),
           "abstained": mean(float(r["abstained"]) for r in rows),
           "citation_precision_doc": mean(r.get("citation_precision") for r in with_gold),
           "latency_p50_ms": round(percentile([r["seconds"] for r in rows], 50) * 1000, 2) if rows else None}
    for mode in ("bm25", "dense", "hybrid"):
        out[mode] = {"hit@10": mean(r.get(f"{mode}_hit@10") for r in with_gold),
                     "ndcg@10": mean(r.get(f"{mode}_ndcg@10") for r in with_gold)}
    out["items"] = rows
    return out


def _bare(text: str) -> str:
    """Answer text folded for choice matching: quotes and punctuation dropped."""
    return " " + " ".join(re.sub(r"[^\w%$]+", " ", normalize(text)).split()) + " "


def run(path: Path, settings: Settings, args) -> tuple[dict, list[dict]]:
    summary = run_realtimeqa_eval(path, settings, limit=args.limit, index=args.index)
    return summary, summary.pop("items")


def headline(summary: dict) -> str:
    return json.dumps(summary, indent=1)
