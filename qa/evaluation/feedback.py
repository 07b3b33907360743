"""The chat's feedback file (``<index>/feedback.jsonl``): verdict counts, and citations gone stale.

A citation is stale when its quote is no longer ``document.text[start:end]`` in the index as it is
now (the report changed and was re-indexed), and gone when its report is no longer indexed. The
index read is the one the file sits in, or ``--index``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from qa.feedback import FEEDBACK_FILE, Feedback, FeedbackCitation, read_feedback
from qa.settings import Settings

NAME = "feedback"
KEYS = ("records", "answers", "up", "down", "flagged", "flagged_share", "citations", "stale", "gone", "bad_lines")


@dataclass(frozen=True)
class CitationCheck:
    """One stored citation against the current index: "ok", "stale" or "gone"."""

    doc_id: str
    start: int
    end: int
    status: str


def detect(path: Path) -> bool:
    """A feedback file: named feedback.jsonl, or a .jsonl whose first line has a verdict and citations."""
    if not path.is_file() or path.suffix != ".jsonl":
        return False
    if path.name == FEEDBACK_FILE:
        return True
    with path.open(encoding="utf-8", errors="replace") as fh:
        first = fh.readline()
    return '"verdict"' in first and '"citations"' in first


def check_citation(citation: FeedbackCitation, store) -> CitationCheck:
    """Whether a stored citation still quotes its document exactly (``store``: the index's passage store)."""
    if not store.has_document(citation.doc_id):
        return CitationCheck(citation.doc_id, citation.start, citation.end, "gone")
    text = store.document(citation.doc_id).text
    ok = 0 <= citation.start <= citation.end <= len(text) and text[citation.start:citation.end] == citation.quote
    return CitationCheck(citation.doc_id, citation.start, citation.end, "ok" if ok else "stale")


def answer_key(record: Feedback) -> tuple[str, str, str]:
    """What one answer is: several verdicts on it count it once."""
    return record.conversation, record.question, record.answer


def summarize(records: list[Feedback], checks: list[list[CitationCheck]], bad_lines: int = 0) -> dict:
    """Verdict counts, the share of answers flagged for a wrong citation, and stale citations."""
    verdicts = Counter(r.verdict for r in records)
    answers = {answer_key(r) for r in records}
    flagged = {answer_key(r) for r in records if r.verdict == "flagged"}
    statuses = Counter(c.status for cs in checks for c in cs)
    return {"records": len(records), "answers": len(answers), "up": verdicts["up"], "down": verdicts["down"],
            "flagged": verdicts["flagged"], "flagged_share": round(len(flagged) / len(answers), 4) if answers else None,
            "citations": sum(statuses.values()), "stale": statuses["stale"], "gone": statuses["gone"],
            "bad_lines": bad_lines}


def run(path: Path, settings: Settings, args) -> tuple[dict, list[dict]]:
    """Read the file, check every stored citation against the index, and summarize."""
    from qa.api import open_index

    index = Path(args.index) if getattr(args, "index", None) else path.parent
    records, bad = read_feedback(path)
    store = open_index(index, settings).store
    checks = [[check_citation(c, store) for c in r.citations] for r in records]
    rows = [{"time": r.time, "verdict": r.verdict, "conversation": r.conversation, "question": r.question,
             "answer": r.answer, "citations": [{"doc_id": c.doc_id, "start": c.start, "end": c.end, "status": c.status}
                                               for c in cs]} for r, cs in zip(records, checks)]
    summary = {"set": str(path), "index": str(index), **summarize(records, checks, bad)}
    return summary, rows


def headline(summary: dict) -> str:
    """The summary as the terminal shows it."""
    return "\n".join(f"{key:>14}: {summary[key]}" for key in KEYS)
