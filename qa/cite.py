"""Verify an LLM draft sentence by sentence and turn it into verbatim citations.

A draft sentence survives only if one sentence of a passage it cites (or, when its
markers are missing or point nowhere, of any retrieved passage) says the same thing:
cosine similarity with the bundled embedder of at least ``settings.support_min``,
and every number, date and proper name of the draft sentence present in the quoted
source text. Each kept sentence is re-cited with that source sentence's exact
offsets; markers pointing at no passage are dropped; unsupported sentences are
removed and listed in the answer's notice.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from qa.chunk import split_sentences
from qa.embed import Embedder, QueryEncoder
from qa.generate import NO_ANSWER
from qa.index import STOPWORDS, Index
from qa.settings import Settings
from qa.text import is_instruction
from qa.types import Answer, Citation, Passage

_MARKERS = re.compile(r"\s*\[\s*(\d+(?:\s*[,;]\s*\d+)*)\s*\]")
_ANY_BRACKET = re.compile(r"\s*\[[^\]]{0,40}\]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NUMBER_WORD = re.compile(r"\b(two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|"
                          r"fifty|sixty|seventy|eighty|ninety|hundred|hundreds|thousand|thousands|million|"
                          r"millions|billion|billions|dozen|dozens)\b", re.IGNORECASE)
_NAME = re.compile(r"\b[A-Z][\w’'-]*\b")
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Check:
    """One draft sentence and what the verifier found for it."""

    text: str
    markers: tuple[int, ...]
    supported: bool
    similarity: float
    missing: tuple[str, ...]
    row: int | None


def is_no_answer(draft: str) -> bool:
    """Whether the draft is the fixed "the reports do not say" reply (or close to it)."""
    folded = " ".join(_MARKERS.sub("", draft).lower().split())
    return folded.startswith(NO_ANSWER.lower().rstrip(".")) or folded.startswith("the passages do not")


def facts(sentence: str) -> list[str]:
    """Numbers, number words and capitalized names: what a supporting quote must contain."""
    out = [m.group(0).replace(",", "") for m in _NUMBER.finditer(sentence)]
    out += [m.group(0).lower() for m in _NUMBER_WORD.finditer(sentence)]
    for m in _NAME.finditer(sentence):
        word = m.group(0)
        if word.lower() in STOPWORDS or (m.start() == 0 and word.lower() in _OPENERS):
            continue
        out.append(word.lower())
    return out


def missing_facts(sentence: str, source: str) -> list[str]:
    """Facts of ``sentence`` that ``source`` does not contain."""
    plain = source.replace(",", "").lower().replace("’", "'")
    words = set(_WORD.findall(plain))
    missing = []
    for fact in facts(sentence.replace("’", "'")):
        needle = fact.lower()
        if needle[0].isdigit():
            if not re.search(r"(?<![\d.])" + re.escape(needle) + r"(?![\d])", plain):
                missing.append(fact)
        elif not all(w in words or _stem_in(w, words) for w in _WORD.findall(needle)):
            missing.append(fact)
    return missing


def verify(question: str, draft: str, passages: Sequence[Passage], index: Index,
           embedder: Embedder | QueryEncoder, settings: Settings, *, query: str = "",
           mode: str = "llm") -> tuple[Answer | None, list[Check]]:
    """The verified answer built from ``draft``, or None when no sentence of it is supported.

    An explicit "the reports do not say" draft becomes an abstention.
    """
    if is_no_answer(draft):
        text = f"{NO_ANSWER[:-1]}: no passage in the indexed reports answers this question."
        return Answer(text=text, citations=[], abstained=True, question=question, query=query,
                      passages=list(passages), support=0.0, mode=mode, notice="the model found no answer"), []
    claims = _claims(draft)
    if not claims or not passages:
        return None, []
    rows_by_passage = [[r for r in index.sentence_rows(p.passage_id) if not _is_instruction_row(index, r)]
                       for p in passages]
    vectors = embedder.encode([text for text, _ in claims])
    checks: list[Check] = []
    for (text, markers), vector in zip(claims, vectors):
        valid = tuple(m for m in markers if 1 <= m <= len(passages))
        pool = [r for m in valid for r in rows_by_passage[m - 1]] or [r for rows in rows_by_passage for r in rows]
        checks.append(_check(text, valid, pool, vector, index, settings))
    kept = [c for c in checks if c.supported]
    if not kept:
        return None, checks
    citations: list[Citation] = []
    seen: dict[int, int] = {}
    parts = []
    owner = {r: p for p, rows in zip(passages, rows_by_passage) for r in rows}
    for c in kept:
        assert c.row is not None
        if c.row not in seen:
            doc_i, start, end, page = (int(x) for x in index.sentences[c.row, :4])
            doc = index.documents[doc_i]
            citations.append(Citation(doc.doc_id, doc.text[start:end], start, end, None if page < 0 else page,
                                      owner[c.row].text, round(c.similarity, 4)))
            seen[c.row] = len(citations)
        body, stop = (c.text[:-1], c.text[-1]) if c.text[-1] in ".!?" else (c.text, ".")
        parts.append(f"{body} [{seen[c.row]}]{stop}")
    dropped = [c.text for c in checks if not c.supported]
    notice = ""
    if dropped:
        notice = "removed as unsupported by the cited reports: " + " | ".join(f"“{t}”" for t in dropped)
    support = sum(c.similarity for c in kept) / len(checks)
    return Answer(text=" ".join(parts), citations=citations, abstained=False, question=question, query=query,
                  passages=list(passages), support=round(support, 4), mode=mode, notice=notice), checks


def _claims(draft: str) -> list[tuple[str, tuple[int, ...]]]:
    """Draft sentences with their markers; a sentence holding only markers lends them to the one before."""
    draft = draft.strip()
    out: list[tuple[str, tuple[int, ...]]] = []
    for a, b in split_sentences(draft):
        raw = draft[a:b]
        markers = tuple(int(n) for m in _MARKERS.finditer(raw) for n in re.split(r"[,;]", m.group(1)))
        text = " ".join(_ANY_BRACKET.sub("", raw).split()).strip()
        text = re.sub(r"\s+([.,;:!?])", r"\1", text)
        if len(_WORD.findall(text)) < 3:
            if out and markers:
                out[-1] = (out[-1][0], out[-1][1] + markers)
            continue
        out.append((text, markers))
    return out


def _check(text: str, markers: tuple[int, ...], pool: list[int], vector: np.ndarray, index: Index,
           settings: Settings) -> Check:
    if not pool:
        return Check(text, markers, False, 0.0, (), None)
    rows = np.asarray(sorted(set(pool)), dtype=np.int64)
    sims = np.asarray(index.sentence_vectors[rows]) @ vector
    best_row, best_sim, best_missing = None, 0.0, ()
    for i in np.argsort(-sims)[:5].tolist():
        row = int(rows[i])
        missing = tuple(missing_facts(text, _sentence(index, row)))
        if not missing:
            return Check(text, markers, float(sims[i]) >= settings.support_min, float(sims[i]), (), row)
        if best_row is None:
            best_row, best_sim, best_missing = row, float(sims[i]), missing
    return Check(text, markers, False, best_sim, best_missing, best_row)


def _sentence(index: Index, row: int) -> str:
    doc_i, start, end = (int(x) for x in index.sentences[row, :3])
    return index.documents[doc_i].text[start:end]


def _is_instruction_row(index: Index, row: int) -> bool:
    return is_instruction(_sentence(index, row))


def _stem_in(word: str, words: set[str]) -> bool:
    """Plural and possessive tolerance for names: "Iraqis" or "Iraq's" against "Iraqi" or "Iraq"."""
    for cut in ("'s", "s", "es"):
        if word.endswith(cut) and word[: -len(cut)] in words:
            return True
    return any(w.endswith("s") and w[:-1] == word for w in words if w.startswith(word[:3]))


_OPENERS = frozenset(
    "according however meanwhile also additionally furthermore moreover yes no overall in on at as "
    "this that these those there it its he she they his her their we our one some many several".split()
)
