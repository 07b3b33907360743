"""RGB ``en_fact``: does an answer state the fake answer without citing what conflicts with it?"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from qa.api import answer, index_paths, tqdm_progress
from qa.evaluation.corpora import cache_dir
from qa.evaluation.metrics import normalize
from qa.settings import Settings

NAME = "rgb"
KEYS = ("fake_unchallenged", "states_fake", "states_true", "states_true_only", "surfaces_conflict", "abstained")


def detect(path: Path) -> bool:
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
    cache = cache_dir(path, settings)
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


def run(path: Path, settings: Settings, args) -> tuple[dict, list[dict]]:
    summary = run_rgb_eval(path, settings, limit=args.limit)
    return summary, summary.pop("items")


def headline(summary: dict) -> str:
    return "\n".join(f"{key:>18}: {summary[key]}" for key in KEYS)
