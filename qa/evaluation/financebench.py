"""FinanceBench filings (PDFs): page-level evidence recall and page-level citation precision."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from qa.api import answer, get_engine, index_paths, tqdm_progress
from qa.evaluation.corpora import cache_dir
from qa.evaluation.metrics import mean
from qa.retrieve import Query
from qa.settings import Settings

NAME = "financebench"


def detect(path: Path) -> bool:
    return path.is_dir() and (path / "pdfs").is_dir() and (path / "questions.jsonl").exists()


def run_financebench_eval(path: Path, settings: Settings, *, limit: int | None = None, progress: bool = True,
                          ks: Sequence[int] = (1, 3, 5, 10), index: str | None = None) -> dict:
    """Filings: page-level evidence recall@k and page-level citation precision.

    Retrieval is measured twice: over all filings (a shared store, as in the paper's
    hardest setting) and restricted to the question's own filing. A retrieved passage
    hits when it lies on a gold page of the gold filing (pages are 1-based here, 0-based
    in the data).
    """
    questions = [json.loads(line) for line in (path / "questions.jsonl").open(encoding="utf-8") if line.strip()]
    questions = questions[:limit]
    index_dir = Path(index) if index else cache_dir(path, settings)
    index_paths([path / "pdfs"], index=index_dir, settings=settings, progress=tqdm_progress() if progress else None)
    engine = get_engine(index_dir, settings)
    known = set(engine.index.doc_ids)
    rows = []
    for n, q in enumerate(questions, start=1):
        doc = f"{q['doc_name']}.pdf"
        gold = {(doc, int(ev["evidence_page_num"]) + 1) for ev in q.get("evidence", [])}
        row = {"id": q["financebench_id"], "question": q["question"], "doc": doc, "in_index": doc in known,
               "gold_pages": sorted(p for _, p in gold)}
        for scope, doc_ids in (("shared", None), ("filing", [doc])):
            hits = engine.retriever.search(Query(q["question"]), max(ks), doc_ids=doc_ids)
            for k in ks:
                row[f"{scope}_recall@{k}"] = float(any((p.doc_id, p.page) in gold for p in hits[:k]))
        result = answer(q["question"], index=str(index_dir), settings=settings, doc_ids=[doc])
        row["answer"] = result.text
        row["abstained"] = result.abstained
        row["cited_pages"] = [c.page for c in result.citations]
        if result.citations:
            row["citation_precision_page"] = sum((c.doc_id, c.page) in gold for c in result.citations) / len(result.citations)
        rows.append(row)
        if progress:
            print(f"\r{n}/{len(questions)} questions", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    out = {"set": str(path), "questions": len(rows), "missing_filings": sorted({r["doc"] for r in rows if not r["in_index"]}),
           "llm": settings.llm,
           "citation_precision_page": mean(r.get("citation_precision_page") for r in rows),
           "abstained": mean(float(r["abstained"]) for r in rows)}
    for scope in ("shared", "filing"):
        out[f"evidence_recall_{scope}@k"] = {str(k): mean(r[f"{scope}_recall@{k}"] for r in rows) for k in ks}
    out["items"] = rows
    return out


def run(path: Path, settings: Settings, args) -> tuple[dict, list[dict]]:
    summary = run_financebench_eval(path, settings, limit=args.limit, index=args.index)
    return summary, summary.pop("items")


def headline(summary: dict) -> str:
    return json.dumps(summary, indent=1)
