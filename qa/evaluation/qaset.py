"""Hand-written QA sets (``eval/seeds.jsonl``, ``eval/news.jsonl``): answers, citations, abstention.

One JSON object per line: ``id``, ``question``, ``history`` (follow-ups), ``answers`` (groups of
alternatives), ``evidence`` (``doc`` + verbatim ``quote``), ``kind`` and, optionally, ``split``.
A set whose reports are not the seed corpus names them in a sidecar ``<set>.corpus.json``
(a BEIR ``corpus`` path relative to the repository plus the article ids to take); the runner
builds or reuses an index of exactly those articles under ``indexes/``.
"""
from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from qa.api import answer, get_engine, retrieve
from qa.evaluation.corpora import corpus_index, corpus_spec, set_index
from qa.evaluation.metrics import locate, mean, normalize, percentile
from qa.evaluation.report import KS, format_table
from qa.index import Index
from qa.retrieve import resolve_query
from qa.settings import Settings
from qa.types import Answer

NAME = "qa-set"


def detect(path: Path) -> bool:
    """Any other ``.jsonl`` file is a QA set (this runner is the fallback)."""
    return path.is_file() and path.suffix == ".jsonl"


def load_items(path: Path, split: str | None = None) -> list[dict]:
    """The items of a QA eval set (one JSON object per line), optionally one ``split`` only."""
    items = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
    if split:
        known = {i.get("split") for i in items}
        if split not in known:
            raise ValueError(f"{path} has no split {split!r} (it has: {', '.join(sorted(map(str, known)))})")
        items = [i for i in items if i.get("split") == split]
    return items


def resolve_doc(doc_id: str, index: Index) -> str | None:
    """The indexed document an evidence ``doc`` names: the same id, else the same file stem
    (``report.txt`` evidence scores against ``report.pdf`` when the set is run on a PDF copy)."""
    if index.store.has_document(doc_id):
        return doc_id
    stem = Path(doc_id).stem
    same = [d for d in index.doc_ids if Path(d).stem == stem]
    return same[0] if len(same) == 1 else None


def score_item(item: dict, result: Answer, index: Index, retrieved: Sequence) -> dict:
    """Every per-item metric; ``None`` where a metric does not apply to the item."""
    answerable = item["kind"] != "unanswerable"

    def text_of(doc_id: str) -> str:
        return index.store.document(doc_id).text

    gold = []
    for ev in item.get("evidence", []):
        doc = resolve_doc(ev["doc"], index)
        span = locate(text_of(doc), ev["quote"]) if doc else None
        if span is None:
            raise ValueError(f"{item['id']}: evidence quote not found in {ev['doc']}: {ev['quote'][:60]!r}")
        gold.append((doc, *span))
    exact = [text_of(c.doc_id)[c.start:c.end] == c.quote for c in result.citations]
    overlaps = lambda c, g: c.doc_id == g[0] and c.start < g[2] and g[1] < c.end
    out: dict = {
        "id": item["id"], "kind": item["kind"], "split": item.get("split"), "question": item["question"],
        "answer": result.text, "abstained": result.abstained, "support": result.support, "notice": result.notice,
        "mode": result.mode, "citations": [asdict(c) | {"passage": None} for c in result.citations],
        "quote_exact": (sum(exact) / len(exact)) if exact else None,
        "n_citations": len(result.citations),
    }
    if answerable:
        answer_text = normalize(result.text) if not result.abstained else ""
        groups = item["answers"]
        found = [any(normalize(alt) in answer_text for alt in group) for group in groups]
        out["answer_recall"] = sum(found) / len(groups) if groups else 1.0
        out["missing_answers"] = [g[0] for g, ok in zip(groups, found) if not ok]
        good = [any(overlaps(c, g) for g in gold) for c in result.citations]
        out["citation_precision"] = sum(good) / len(good) if good else None
        covered = [any(overlaps(c, g) for c in result.citations) for g in gold]
        out["citation_recall"] = sum(covered) / len(covered) if covered else None
        for k in KS:
            top = retrieved[:k]
            inside = [any(p.doc_id == g[0] and p.start <= g[1] and g[2] <= p.end for p in top) for g in gold]
            out[f"evidence_recall@{k}"] = sum(inside) / len(inside) if inside else None
    return out


def summarize(rows: list[dict], latencies: list[float]) -> dict:
    """Averages over items (each metric over the items it applies to), overall and by kind."""
    def block(subset: list[dict]) -> dict:
        answerable = [r for r in subset if r["kind"] != "unanswerable"]
        unanswerable = [r for r in subset if r["kind"] == "unanswerable"]
        abstained = [r for r in subset if r["abstained"]]
        return {
            "items": len(subset),
            "answer_recall": mean(r.get("answer_recall") for r in answerable),
            "citation_precision": mean(r.get("citation_precision") for r in answerable),
            "citation_recall": mean(r.get("citation_recall") for r in answerable),
            "quote_exact": mean(r.get("quote_exact") for r in subset),
            "abstention_recall": (sum(r["abstained"] for r in unanswerable) / len(unanswerable)) if unanswerable else None,
            "abstention_precision": (sum(r["kind"] == "unanswerable" for r in abstained) / len(abstained)) if abstained else None,
            "false_abstentions": sum(r["abstained"] for r in answerable),
            "evidence_recall@k": {str(k): mean(r.get(f"evidence_recall@{k}") for r in answerable) for k in KS},
        }

    summary = block(rows)
    summary["answer_modes"] = dict(sorted(Counter(r.get("mode", "extractive") for r in rows).items()))
    summary["latency_p50_ms"] = round(percentile(latencies, 50) * 1000, 2) if latencies else None
    summary["latency_p95_ms"] = round(percentile(latencies, 95) * 1000, 2) if latencies else None
    summary["by_kind"] = {kind: block([r for r in rows if r["kind"] == kind])
                          for kind in sorted({r["kind"] for r in rows})}
    return summary


def run_qa_eval(path: Path, settings: Settings, *, index: str | None = None, limit: int | None = None,
                progress: bool = True, split: str | None = None, corpus: Path | None = None) -> tuple[dict, list[dict]]:
    """Answer every item of the set at ``path`` and score it.

    The index is, in order: ``index`` if given; an index of ``corpus`` (another copy of the
    set's reports); the set's own articles when it has a ``.corpus.json``; else the default.
    """
    items = load_items(path, split)[:limit]
    if index is None and corpus is not None:
        index = str(corpus_index(corpus, settings, progress=progress))
    elif index is None and corpus_spec(path) is not None:
        index = str(set_index(path, settings, progress=progress))
    engine = get_engine(index, settings)
    rows, latencies = [], []
    for n, item in enumerate(items, start=1):
        history = item.get("history")
        started = time.perf_counter()
        result = answer(item["question"], history, index=index, settings=settings)
        latencies.append(time.perf_counter() - started)
        query = resolve_query(item["question"], history)
        retrieved = retrieve(engine, query, max(KS), None, engine.retriever.embed_query(query))
        rows.append(score_item(item, result, engine.index, retrieved))
        if progress:
            print(f"\r{n}/{len(items)} items", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    summary = summarize(rows, latencies)
    summary["set"] = str(path)
    summary["split"] = split
    summary["settings"] = {"top_k": settings.top_k, "abstain_below": settings.abstain_below, "llm": settings.llm,
                           **settings.index_params()}
    return summary, rows


def run(path: Path, settings: Settings, args) -> tuple[dict, list[dict]]:
    """``qa eval SET.jsonl``."""
    return run_qa_eval(path, settings, index=args.index, limit=args.limit, split=args.split,
                       corpus=Path(args.corpus) if args.corpus else None)


def headline(summary: dict) -> str:
    return format_table(summary)
