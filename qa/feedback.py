"""Analysts' verdicts on answers, kept beside the index as JSON lines (``<index>/feedback.jsonl``).

One line per verdict: when, the question, the answer text (with its ``[n]`` markers), each citation
(doc_id, quote, start, end, page), the verdict ("up", "down" or "flagged": a wrong citation) and the
conversation id. A line is written in one call, flushed and fsynced, under a lock, so concurrent
verdicts never interleave and a crash loses at most the line being written. ``qa eval`` reads the
file back (:mod:`qa.evaluation.feedback`).
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

FEEDBACK_FILE = "feedback.jsonl"
VERDICTS = ("up", "down", "flagged")
WRONG_CITATION = "Wrong citation"  # the chat's flag option
_write_lock = threading.Lock()


@dataclass(frozen=True)
class FeedbackCitation:
    """A cited sentence as the answer had it: ``quote == document.text[start:end]`` when given."""

    doc_id: str
    quote: str
    start: int
    end: int
    page: int | None = None


@dataclass(frozen=True)
class Feedback:
    """One verdict on one answer."""

    time: str
    question: str
    answer: str
    citations: tuple[FeedbackCitation, ...]
    verdict: str
    conversation: str


class RepeatFilter:
    """Drops a verdict that repeats the one just given on the same answer within ``window`` seconds (the
    chat's flag menu sends its option twice for one click; a double click is one verdict too)."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self._last: dict[str, tuple[object, float]] = {}
        self._lock = threading.Lock()

    def fresh(self, session: str, key: object, now: float | None = None) -> bool:
        """Whether ``key`` (answer and verdict) is new for ``session``; remembers it either way."""
        now = time.monotonic() if now is None else now
        with self._lock:
            last = self._last.get(session)
            self._last[session] = (key, now)
            return last is None or last[0] != key or now - last[1] > self.window


def verdict_of(liked: object) -> str | None:
    """The verdict a chat feedback event means (Gradio gives True, False or the option's name); None: none."""
    if liked is True or liked == "Like":
        return "up"
    if liked is False or liked == "Dislike":
        return "down"
    if isinstance(liked, str) and liked.strip().lower() == WRONG_CITATION.lower():
        return "flagged"
    return None


def feedback_path(index: Path) -> Path:
    """Where an index's feedback is kept."""
    return Path(index) / FEEDBACK_FILE


def citations_from(raw: object) -> tuple[FeedbackCitation, ...]:
    """Citations as stored with an answer (dicts), the malformed ones left out."""
    out = []
    for c in raw if isinstance(raw, (list, tuple)) else []:
        try:
            page = c.get("page")
            out.append(FeedbackCitation(str(c["doc_id"]), str(c.get("quote") or ""), int(c["start"]), int(c["end"]),
                                        int(page) if page is not None else None))
        except (AttributeError, KeyError, TypeError, ValueError):
            continue
    return tuple(out)


def make_feedback(question: str, answer: str, citations: object, verdict: str, conversation: str,
                  when: float | None = None) -> Feedback:
    """A verdict record, timed now (UTC) unless ``when`` is given."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    return Feedback(stamp, question, answer, citations_from(citations), verdict, conversation)


def feedback_line(record: Feedback) -> str:
    """A record as one JSON line (newline included)."""
    return json.dumps(asdict(record), ensure_ascii=False) + "\n"


def append_feedback(path: Path, record: Feedback) -> None:
    """Append one record: a single write of the whole line, flushed and fsynced (OSError when it fails)."""
    line = feedback_line(record).encode("utf-8")
    with _write_lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            with os.fdopen(fd, "ab", closefd=False) as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            os.close(fd)


def parse_feedback(line: str) -> Feedback | None:
    """One line of the file as a record, or None when it is not one (a torn or hand-edited line)."""
    try:
        data = json.loads(line)
        verdict = data["verdict"]
        if verdict not in VERDICTS:
            return None
        return Feedback(str(data.get("time") or ""), str(data.get("question") or ""), str(data.get("answer") or ""),
                        citations_from(data.get("citations")), verdict, str(data.get("conversation") or ""))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def read_feedback(path: Path) -> tuple[list[Feedback], int]:
    """Every record of a feedback file, and how many lines were not records."""
    records, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            record = parse_feedback(line)
            if record is None:
                bad += 1
            else:
                records.append(record)
    return records, bad
