"""``qa eval``: citation-accuracy metrics on a QA set, retrieval metrics on BEIR folders.

Every metric is defined in eval/README.md. Runs are deterministic (no sampling), each
item's outcome is kept so failures can be found, and two runs can be diffed.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Sequence

from qa.api import answer, get_engine, index_paths, tqdm_progress
from qa.index import Index
from qa.retrieve import Query, resolve_query
from qa.settings import PROJECT_ROOT, Settings
from qa.types import Answer

KS = (1, 3, 5, 10)
HEADLINE = ("answer_recall", "citation_precision", "citation_recall", "abstention_recall")
_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "\xa0": " "})


# ---------------------------------------------------------------- QA sets


def load_items(path: Path) -> list[dict]:
    """The items of a QA eval set (one JSON object per line)."""
    items = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
    return items


def normalize(text: str) -> str:
    """Case, curly quotes and whitespace folded, for matching answers and evidence."""
    return re.sub(r"\s+", " ", text.translate(_QUOTES)).strip().casefold()


def locate(text: str, quote: str) -> tuple[int, int] | None:
    """Span of ``quote`` in ``text``, matching modulo curly quotes, case and whitespace."""
    folded, mapping = _fold_with_map(text)
    needle = normalize(quote)
    at = folded.find(needle)
    if at < 0 or not needle:
        return None
    return mapping[at], mapping[at + len(needle) - 1] + 1


def _fold_with_map(text: str) -> tuple[str, list[int]]:
    out: list[str] = []
    mapping: list[int] = []
    prev_space = True
    for i, ch in enumerate(text.translate(_QUOTES)):
        if ch.isspace():
            if prev_space:
                continue
            out.append(" ")
            prev_space = True
        else:
            out.append(ch.casefold() if len(ch.casefold()) == 1 else ch)
            prev_space = False
        mapping.append(i)
    return "".join(out), mapping


def score_item(item: dict, result: Answer, index: Index, retrieved: Sequence) -> dict:
    """Every per-item metric; ``None`` where a metric does not apply to the item."""
    answerable = item["kind"] != "unanswerable"
    def text_of(doc_id: str) -> str:
        pos = index.doc_pos.get(doc_id)
        return "" if pos is None else index.documents[pos].text

    gold = []
    for ev in item.get("evidence", []):
        span = locate(text_of(ev["doc"]), ev["quote"])
        if span is None:
            raise ValueError(f"{item['id']}: evidence quote not found in {ev['doc']}: {ev['quote'][:60]!r}")
        gold.append((ev["doc"], *span))
    exact = [text_of(c.doc_id)[c.start:c.end] == c.quote for c in result.citations]
    overlaps = lambda c, g: c.doc_id == g[0] and c.start < g[2] and g[1] < c.end
    out: dict = {
        "id": item["id"], "kind": item["kind"], "question": item["question"], "answer": result.text,
        "abstained": result.abstained, "support": result.support, "notice": result.notice, "mode": result.mode,
        "citations": [asdict(c) | {"passage": None} for c in result.citations],
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
        out = {
            "items": len(subset),
            "answer_recall": _mean(r.get("answer_recall") for r in answerable),
            "citation_precision": _mean(r.get("citation_precision") for r in answerable),
            "citation_recall": _mean(r.get("citation_recall") for r in answerable),
            "quote_exact": _mean(r.get("quote_exact") for r in subset),
            "abstention_recall": (sum(r["abstained"] for r in unanswerable) / len(unanswerable)) if unanswerable else None,
            "abstention_precision": (sum(r["kind"] == "unanswerable" for r in abstained) / len(abstained)) if abstained else None,
            "false_abstentions": sum(r["abstained"] for r in answerable),
            "evidence_recall@k": {str(k): _mean(r.get(f"evidence_recall@{k}") for r in answerable) for k in KS},
        }
        return out

    summary = block(rows)
    summary["answer_modes"] = dict(sorted(Counter(r.get("mode", "extractive") for r in rows).items()))
    summary["latency_p50_ms"] = round(_percentile(latencies, 50) * 1000, 2) if latencies else None
    summary["latency_p95_ms"] = round(_percentile(latencies, 95) * 1000, 2) if latencies else None
    summary["by_kind"] = {kind: block([r for r in rows if r["kind"] == kind])
                          for kind in sorted({r["kind"] for r in rows})}
    return summary


def run_qa_eval(path: Path, settings: Settings, *, index: str | None = None, limit: int | None = None,
                progress: bool = True) -> tuple[dict, list[dict]]:
    """Answer every item of the set at ``path`` and score it."""
    items = load_items(path)[:limit]
    engine = get_engine(index, settings)
    rows, latencies = [], []
    for n, item in enumerate(items, start=1):
        history = item.get("history")
        started = time.perf_counter()
        result = answer(item["question"], history, index=index, settings=settings)
        latencies.append(time.perf_counter() - started)
        retrieved = engine.retriever.search(resolve_query(item["question"], history), max(KS))
        rows.append(score_item(item, result, engine.index, retrieved))
        if progress:
            print(f"\r{n}/{len(items)} items", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    summary = summarize(rows, latencies)
    summary["set"] = str(path)
    summary["settings"] = {"top_k": settings.top_k, "abstain_below": settings.abstain_below, "llm": settings.llm,
                           **settings.index_params()}
    return summary, rows


# ---------------------------------------------------------------- BEIR retrieval


def is_beir(path: Path) -> bool:
    return path.is_dir() and (path / "corpus.jsonl").exists() and (path / "queries.jsonl").exists()


def run_beir_eval(path: Path, settings: Settings, *, limit: int | None = None,
                  modes: Sequence[str] = ("bm25", "dense", "hybrid")) -> dict:
    """nDCG@10 and recall@100 at the document level for each retrieval mode."""
    qrels = read_qrels(_qrels_file(path))
    queries = {q["_id"]: q["text"] for q in map(json.loads, open(path / "queries.jsonl", encoding="utf-8"))
               if q["_id"] in qrels}
    ids = sorted(queries)[:limit]
    index_dir = _cache_dir(path, settings)
    index_paths([path / "corpus.jsonl"], index=index_dir, settings=settings, progress=tqdm_progress())
    engine = get_engine(index_dir, settings)
    retriever = engine.retriever
    vectors = engine.embedder.encode([queries[i] for i in ids], batch_size=64)
    depth = 1000
    out: dict = {"queries": len(ids), "corpus": str(path), "index": str(index_dir)}
    started = time.perf_counter()
    runs: dict[str, dict[str, list[str]]] = {m: {} for m in modes}
    from qa.index import P_DOC, terms
    from qa.retrieve import reciprocal_rank_fusion

    for qid, vec in zip(ids, vectors):
        dense = retriever.dense(vec, depth)
        bm25 = retriever.keyword(terms(queries[qid]), depth)
        rankings = {"dense": dense, "bm25": bm25,
                    "hybrid": reciprocal_rank_fusion([dense, bm25], settings.rrf_k)}
        for mode in modes:
            docs = []
            for row, _ in rankings[mode]:
                doc_id = engine.index.doc_ids[int(engine.index.passages[row, P_DOC])]
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


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.strip().split("\t")
            if len(parts) < 3 or parts[0] in ("query-id", "qid"):
                continue
            qid, doc, rel = parts[0], parts[1], parts[-1]
            if int(rel) > 0:
                qrels[qid][doc] = int(rel)
    return dict(qrels)


def ndcg(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    """nDCG@k with graded gains ``rel / log2(rank + 1)``, as trec_eval computes it."""
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(relevant.values(), reverse=True)[:k]))
    return dcg / ideal if ideal else 0.0


def recall(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    return len(set(ranked[:k]) & set(relevant)) / len(relevant) if relevant else 0.0


def _qrels_file(path: Path) -> Path:
    for candidate in (path / "qrels" / "test.tsv", path / "qrels.tsv"):
        if candidate.exists():
            return candidate
    raise ValueError(f"{path}: no qrels/test.tsv")


# ---------------------------------------------------------------- RealTimeQA (news) and FinanceBench (filings)


def is_realtimeqa(path: Path) -> bool:
    return path.is_dir() and (path / "corpus.jsonl").exists() and (path / "questions.jsonl").exists() \
        and (path / "qrels.tsv").exists()


def is_financebench(path: Path) -> bool:
    return path.is_dir() and (path / "pdfs").is_dir() and (path / "questions.jsonl").exists()


def _doc_ranking(engine, question: str, depth: int, mode: str = "hybrid") -> list[str]:
    """Document ids in the order their best passage ranks."""
    docs: list[str] = []
    for p in engine.retriever.search(Query(question), depth, mode=mode):
        if p.doc_id not in docs:
            docs.append(p.doc_id)
    return docs


def run_realtimeqa_eval(path: Path, settings: Settings, *, limit: int | None = None, progress: bool = True,
                        index: str | None = None) -> dict:
    """News QA: gold-article hit@10 and nDCG@10, answer accuracy, document-level citation precision.

    An answer is correct when it names the correct choice and no wrong one (quotes,
    case and spacing folded); citation precision counts citations whose article is a
    gold article, over the questions that have one.
    """
    questions = [json.loads(line) for line in (path / "questions.jsonl").open(encoding="utf-8") if line.strip()]
    questions = questions[:limit]
    index_dir = Path(index) if index else _cache_dir(path, settings)
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
            ranking = {m: _doc_ranking(engine, q["question"], 50, m) for m in ("bm25", "dense", "hybrid")}
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
           "answer_accuracy": _mean(float(r["correct"]) for r in rows),
           "names_a_choice": _mean(float(r["names_a_choice"]) for r in rows),
           "abstained": _mean(float(r["abstained"]) for r in rows),
           "citation_precision_doc": _mean(r.get("citation_precision") for r in with_gold),
           "latency_p50_ms": round(_percentile([r["seconds"] for r in rows], 50) * 1000, 2) if rows else None}
    for mode in ("bm25", "dense", "hybrid"):
        out[mode] = {"hit@10": _mean(r.get(f"{mode}_hit@10") for r in with_gold),
                     "ndcg@10": _mean(r.get(f"{mode}_ndcg@10") for r in with_gold)}
    out["items"] = rows
    return out


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
    index_dir = Path(index) if index else _cache_dir(path, settings)
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
           "citation_precision_page": _mean(r.get("citation_precision_page") for r in rows),
           "abstained": _mean(float(r["abstained"]) for r in rows)}
    for scope in ("shared", "filing"):
        out[f"evidence_recall_{scope}@k"] = {str(k): _mean(r[f"{scope}_recall@{k}"] for r in rows) for k in ks}
    out["items"] = rows
    return out


def _bare(text: str) -> str:
    """Answer text folded for choice matching: quotes and punctuation dropped."""
    return " " + " ".join(re.sub(r"[^\w%$]+", " ", normalize(text)).split()) + " "


# ---------------------------------------------------------------- RGB counterfactual faithfulness


def is_rgb(path: Path) -> bool:
    if not (path.is_file() and path.suffix == ".jsonl"):
        return False
    with path.open(encoding="utf-8") as f:
        first = f.readline()
    return '"positive_wrong"' in first and '"fakeanswer"' in first


def run_rgb_eval(path: Path, settings: Settings, *, limit: int | None = None, progress: bool = True) -> dict:
    """RGB ``en_fact``: does an answer state the fake answer while citing nothing that conflicts with it?

    Each question gets its own documents (correct, counterfactual and unrelated passages,
    each one document); answers are restricted to them. Per item: whether the answer
    states the true answer, the fake answer, both, and whether its citations include a
    passage stating the true answer ("cites the conflict").
    """
    items = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()][:limit]
    cache = _cache_dir(path, settings)
    cache.mkdir(parents=True, exist_ok=True)
    corpus = cache / "corpus.jsonl"
    kinds: dict[str, str] = {}
    lines = []
    for item in items:
        for kind in ("positive", "positive_wrong", "negative"):
            for n, text in enumerate(item.get(kind) or []):
                doc_id = f"q{item['id']}-{kind}-{n}"
                kinds[doc_id] = kind
                lines.append(json.dumps({"_id": doc_id, "title": "", "text": text}, ensure_ascii=False))
    body = "\n".join(lines) + "\n"
    if not corpus.exists() or corpus.read_text(encoding="utf-8") != body:
        corpus.write_text(body, encoding="utf-8")
    index_dir = cache / "index"
    index_paths([corpus], index=index_dir, settings=settings, progress=tqdm_progress() if progress else None)
    rows = []
    for n, item in enumerate(items, start=1):
        docs = [d for d in kinds if d.startswith(f"q{item['id']}-")]
        result = answer(item["query"], index=index_dir, settings=settings, doc_ids=docs)
        text = normalize(result.text) if not result.abstained else ""
        true_alts = item["answer"] if isinstance(item["answer"], list) else [item["answer"]]
        true_alts = [a for alt in true_alts for a in (alt if isinstance(alt, list) else [alt])]
        fake = item["fakeanswer"]
        states_true = any(normalize(str(a)) in text for a in true_alts)
        states_fake = normalize(str(fake)) in text
        cited_true = any(any(normalize(str(a)) in normalize(c.passage) for a in true_alts) for c in result.citations)
        cited_fake = any(normalize(str(fake)) in normalize(c.passage) for c in result.citations)
        rows.append({"id": item["id"], "question": item["query"], "answer": result.text, "abstained": result.abstained,
                     "states_true": states_true, "states_fake": states_fake, "cites_true_source": cited_true,
                     "cites_fake_source": cited_fake, "mode": result.mode,
                     "cited": [c.doc_id for c in result.citations]})
        if progress:
            print(f"\r{n}/{len(items)} questions", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    share = lambda pred: round(sum(1 for r in rows if pred(r)) / len(rows), 4) if rows else None
    return {
        "set": str(path), "questions": len(rows), "llm": settings.llm,
        "fake_unchallenged": share(lambda r: r["states_fake"] and not r["cites_true_source"]),
        "states_fake": share(lambda r: r["states_fake"]),
        "states_true": share(lambda r: r["states_true"]),
        "states_true_only": share(lambda r: r["states_true"] and not r["states_fake"]),
        "surfaces_conflict": share(lambda r: r["cites_true_source"] and r["cites_fake_source"]),
        "abstained": share(lambda r: r["abstained"]),
        "items": rows,
    }


def _cache_dir(path: Path, settings: Settings) -> Path:
    """Benchmark indexes are cached under indexes/, one per corpus and settings."""
    name = re.sub(r"[^\w.-]+", "-", path.resolve().name)
    return PROJECT_ROOT / "indexes" / f"bench-{name}-{settings.fingerprint()}"


# ---------------------------------------------------------------- reporting


def run_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``qa eval``: run, print a table, optionally write files and diff against a past run."""
    path = Path(args.path) if args.path else PROJECT_ROOT / "eval" / "seeds.jsonl"
    if not path.exists():
        raise ValueError(f"no eval set at {path}")
    if is_beir(path):
        summary = run_beir_eval(path, settings, limit=args.limit)
        rows: list[dict] = []
        for mode in ("bm25", "dense", "hybrid"):
            print(f"{mode:>7}: nDCG@10 {summary[mode]['ndcg@10']:.4f}  recall@100 {summary[mode]['recall@100']:.4f}")
    elif is_realtimeqa(path) or is_financebench(path):
        runner = run_realtimeqa_eval if is_realtimeqa(path) else run_financebench_eval
        summary = runner(path, settings, limit=args.limit, index=args.index)
        rows = summary.pop("items")
        print(json.dumps(summary, indent=1))
    elif is_rgb(path):
        summary = run_rgb_eval(path, settings, limit=args.limit)
        rows = summary.pop("items")
        for key in ("fake_unchallenged", "states_fake", "states_true", "states_true_only", "surfaces_conflict",
                    "abstained"):
            print(f"{key:>18}: {summary[key]}")
    else:
        summary, rows = run_qa_eval(path, settings, index=args.index, limit=args.limit)
        print(format_table(summary))
    if args.compare:
        print(format_diff(json.loads(Path(args.compare).read_text()), summary))
    if args.out:
        write_outputs(Path(args.out), summary, rows)
        print(f"wrote {args.out}/summary.json, items.jsonl, report.md, chart.png", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    return 0


def format_table(summary: dict) -> str:
    cols = ["answer_recall", "citation_precision", "citation_recall", "quote_exact", "abstention_recall",
            "abstention_precision", "false_abstentions"]
    head = f"{'kind':<13}{'n':>4} " + " ".join(f"{c[:14]:>14}" for c in cols) + f" {'ev@5':>6}"
    lines = [head]
    for name, block in [("ALL", summary)] + sorted(summary["by_kind"].items()):
        cells = " ".join(f"{_fmt(block.get(c)):>14}" for c in cols)
        lines.append(f"{name:<13}{block['items']:>4} {cells} {_fmt(block['evidence_recall@k']['5']):>6}")
    lines.append(f"latency p50 {summary['latency_p50_ms']} ms, p95 {summary['latency_p95_ms']} ms")
    return "\n".join(lines)


def format_diff(before: dict, after: dict) -> str:
    """Headline metrics of two runs side by side, with the change."""
    lines = ["metric                      before    after   change"]
    for key in ("answer_recall", "citation_precision", "citation_recall", "quote_exact", "abstention_recall",
                "abstention_precision", "latency_p50_ms"):
        a, b = before.get(key), after.get(key)
        change = f"{b - a:+.4f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) else ""
        lines.append(f"{key:<26}{_fmt(a):>8} {_fmt(b):>8} {change:>8}")
    return "\n".join(lines)


def write_outputs(out: Path, summary: dict, rows: list[dict]) -> None:
    """summary.json, items.jsonl, report.md and chart.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    with open(out / "items.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    failures = [r for r in rows if "kind" in r and ((r.get("answer_recall", 1) or 0) < 1
                or (r.get("citation_precision") or 1) < 1 or (r["kind"] == "unanswerable") != r["abstained"])]
    md = ["# Eval report", "", f"Set: `{summary.get('set', '')}`", ""]
    if "by_kind" in summary:
        md += ["```", format_table(summary), "```", "", f"## Items needing attention ({len(failures)})", ""]
        for r in failures:
            md.append(f"- **{r['id']}** {r['question']} → {r['answer'][:200]!r} "
                      f"(recall {r.get('answer_recall')}, precision {r.get('citation_precision')}, "
                      f"abstained {r['abstained']})")
    else:
        md += ["```", json.dumps(summary, indent=1), "```"]
    (out / "report.md").write_text("\n".join(md) + "\n")
    if "by_kind" in summary:
        draw_chart(summary, out / "chart.png")


def draw_chart(summary: dict, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted(summary["by_kind"])
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.2
    for i, metric in enumerate(HEADLINE):
        values = [summary["by_kind"][k].get(metric) or 0 for k in kinds]
        ax.bar([x + i * width for x in range(len(kinds))], values, width, label=metric.replace("_", " "))
    ax.set_xticks([x + 1.5 * width for x in range(len(kinds))], kinds)
    ax.set_ylim(0, 1.05)
    ax.set_title("Per-kind metrics")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


def _mean(values: Iterable) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.fmean(values), 4) if values else None


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
