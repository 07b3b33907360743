"""SciFact rationale selection, open setting: do an answer's citations hit the gold rationale sentences?

Each dev claim (``claims_dev_evidence.jsonl``) is asked as is over an index of all 5,183
abstracts (the BEIR folder's ``corpus.jsonl``); the gold rationale sentences are located
in the abstracts through ``corpus_sentences.jsonl``, the sentence split the annotations
use. Micro-averaged over all dev claims, as the SciFact paper scores sentence selection:
precision = cited sentences that lie in a gold rationale / all cited sentences (a claim
with no evidence makes every citation wrong, unless the answer abstains), recall = gold
rationale sentences cited / all gold rationale sentences. Simpler than the paper's
"Selection-Only": a cited sentence counts without the rest of its rationale set.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from qa.api import answer, get_engine, index_paths, tqdm_progress
from qa.evaluation.corpora import cache_dir
from qa.evaluation.metrics import locate
from qa.settings import Settings

NAME = "scifact-rationales"
CLAIMS = "claims_dev_evidence.jsonl"
# Published baselines (Wadden et al., EMNLP 2020, "Fact or Fiction: Verifying Scientific Claims"),
# trained on SciFact; quoted for scale in eval/README.md.
PUBLISHED = {
    "VeriSci, open setting, test: sentence selection + label F1": 0.395,
    "VeriSci, open setting, test: abstract label + rationale F1": 0.465,
    "VeriSci rationale selection given the gold abstract, dev F1 (RoBERTa-large, SciFact-trained)": 0.721,
}


def detect(path: Path) -> bool:
    return path.is_file() and path.name == CLAIMS and (path.parent / "corpus_sentences.jsonl").exists()


def gold_spans(claim: dict, sentences: dict[str, list[str]], text_of) -> list[tuple[str, int, int]]:
    """(doc, start, end) of every gold rationale sentence of ``claim`` in the indexed abstracts."""
    spans = []
    for doc, ev in claim.get("evidence", {}).items():
        text = text_of(doc)
        for group in ev["sentence_sets"]:
            for i in group:
                span = locate(text, sentences[doc][i]) if text else None
                if span is not None:
                    spans.append((doc, *span))
    return sorted(set(spans))


def run_rationale_eval(path: Path, settings: Settings, *, limit: int | None = None, progress: bool = True) -> dict:
    """Sentence-level precision, recall and F1 of the answers' citations against gold rationales."""
    folder = path.parent
    claims = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()][:limit]
    needed = {doc for c in claims for doc in c.get("evidence", {})}
    sentences = {}
    with open(folder / "corpus_sentences.jsonl", encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            if str(record["_id"]) in needed:
                sentences[str(record["_id"])] = record["sentences"]
    index_dir = cache_dir(folder, settings)
    index_paths([folder / "corpus.jsonl"], index=index_dir, settings=settings,
                progress=tqdm_progress() if progress else None)
    index = get_engine(index_dir, settings).index

    def text_of(doc: str) -> str:
        return index.store.document(doc).text if index.store.has_document(doc) else ""

    cited = hit = gold_total = gold_hit = abstained = 0
    rows = []
    for n, claim in enumerate(claims, start=1):
        gold = gold_spans(claim, sentences, text_of)
        result = answer(claim["text"], index=index_dir, settings=settings)
        on_gold = [any(c.doc_id == g[0] and c.start < g[2] and g[1] < c.end for g in gold) for c in result.citations]
        covered = [any(c.doc_id == g[0] and c.start < g[2] and g[1] < c.end for c in result.citations) for g in gold]
        cited += len(on_gold)
        hit += sum(on_gold)
        gold_total += len(gold)
        gold_hit += sum(covered)
        abstained += result.abstained
        rows.append({"id": claim["_id"], "claim": claim["text"], "has_evidence": bool(gold), "abstained": result.abstained,
                     "citations": len(on_gold), "on_gold": sum(on_gold), "gold": len(gold), "gold_cited": sum(covered)})
        if progress:
            print(f"\r{n}/{len(claims)} claims", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    precision = hit / cited if cited else 0.0
    recall = gold_hit / gold_total if gold_total else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    with_evidence = [r for r in rows if r["has_evidence"]]
    return {"set": str(path), "claims": len(rows), "with_evidence": len(with_evidence),
            "sentence_precision": round(precision, 4), "sentence_recall": round(recall, 4), "sentence_f1": round(f1, 4),
            "abstained_no_evidence": round(sum(r["abstained"] for r in rows if not r["has_evidence"])
                                           / max(1, len(rows) - len(with_evidence)), 4),
            "abstained_with_evidence": round(sum(r["abstained"] for r in with_evidence) / max(1, len(with_evidence)), 4),
            "published": PUBLISHED, "items": rows}


def run(path: Path, settings: Settings, args) -> tuple[dict, list[dict]]:
    summary = run_rationale_eval(path, settings, limit=args.limit)
    return summary, summary.pop("items")


def headline(summary: dict) -> str:
    lines = [f"sentence-level rationale selection over {summary['claims']} claims ({summary['with_evidence']} with evidence):",
             f"  precision {summary['sentence_precision']:.3f}  recall {summary['sentence_recall']:.3f}  "
             f"F1 {summary['sentence_f1']:.3f}",
             f"  abstained: {summary['abstained_no_evidence']:.3f} of claims without evidence, "
             f"{summary['abstained_with_evidence']:.3f} of claims with evidence",
             "  published, for scale:"]
    lines += [f"    {name}: {value:.3f}" for name, value in summary["published"].items()]
    return "\n".join(lines)
