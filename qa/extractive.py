"""Extractive answers: pick the sentences that answer the question and cite each one.

No language model: the answer is made of source sentences, so every quote is verbatim
by construction. Each candidate sentence of the retrieved passages (questions in the
reports excepted) is scored by its embedding similarity to the question plus the
IDF-weighted share of the question's terms it contains. The answer abstains when the
best score is under one calibrated threshold, when the question asks for a number or
a date that no chosen sentence holds, or when it names something the reports never
mention.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from qa.index import Index, terms
from qa.retrieve import NOT_FOUND_PREFIX, Query
from qa.settings import Settings
from qa.text import is_instruction
from qa.types import Answer, Citation, Passage

LEXICAL_WEIGHT = 0.8
CONTEXT_TERM_WEIGHT = 0.2
KEEP_RATIO = 0.95
LIST_KEEP_RATIO = 0.85
REPEAT_FACTOR = 0.5
LIST_SHAPE_BONUS = 0.15
COVER_RATIO = 0.6
COVER_GAIN = 0.25
UNKNOWN_NAME_PENALTY = 0.25
MULTIDOC_KEEP_RATIO = 0.75

_QUANTITY = re.compile(r"\b(how (many|much|large|big|long|old|often)|what (number|percentage|share|amount|proportion|size)|"
                       r"what percent|(death|casualty) toll|casualties|turnout|budget)\b",
                       re.IGNORECASE)
_HOW_MANY = re.compile(r"\bhow many ((?:[\w.’'-]+ ){0,2}?[\w’'-]+?s)\b", re.IGNORECASE)
_TIME = re.compile(r"^\W*(when|since when)\b|\b(what|which|on what|in what) (year|date|day|month|time)\b|\bhow long ago\b",
                   re.IGNORECASE)
_NUMBER = re.compile(r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|"
                     r"fifty|hundred|thousand|million|billion|dozen|several|half|single|both|first|second|third)\b",
                     re.IGNORECASE)
_TEMPORAL = re.compile(r"\d|\b(january|february|march|april|may|june|july|august|september|october|november|"
                       r"december|monday|tuesday|wednesday|thursday|friday|saturday|sunday|today|yesterday|"
                       r"tomorrow|tonight|ago|(last|next|this) (week|month|year))\b", re.IGNORECASE)
_LIST = re.compile(r"\b(list|name all|make up|consist|which (groups|countries|people|leaders|units|organizations|militias|two|three)|"
                   r"what (groups|are|were|two|three|things|steps|demands|countries|organizations)|who are|who were|"
                   r"all the|each of|both)\b", re.IGNORECASE)
_MULTIDOC = re.compile(r"\b(both (reports|briefs|documents|articles)|each (report|brief|document)|the (two|other) "
                       r"(reports|briefs)|across (the )?(reports|briefs)|in common|compare|differ|both)\b", re.IGNORECASE)
_MULTIPART = re.compile(r",|;|\b(and|as well as|also|both|or|besides)\b", re.IGNORECASE)
_WHY = re.compile(r"^\W*why\b|\bfor what reason\b", re.IGNORECASE)
_CAUSE = re.compile(r"\b(because|due to|since|as a result|in order to|so that|owing to|amid|after|over|reason|"
                    r"aim|aims|goal|to (avoid|protect|keep|prevent|preserve|fight|run|pursue|join))\b", re.IGNORECASE)
_ENUMERATION = re.compile(r"[A-Z][\w’'-]*(?: [\w’'-]+){0,3}, (?:and )?[A-Z]")
_WORDS = re.compile(r"[\w’'.-]+")
_INTERROGATIVE = re.compile(r"\?[\"'”’)\]]*$")
_NUMBER_PART = re.compile(r"(?<=[A-Za-z])\d{2,}|\d{2,}(?=[A-Za-z])")
_LABEL = re.compile(r"^(Comment|Note|Update|Analysis|Editor's note)\s*:\s*", re.IGNORECASE)
_PROPER = re.compile(r"(?<![.!?]\s)(?<!^)\b([A-Z][\w’'\-]+(?:\.[A-Z]\.?)*|\d[\d,.]*)")


@dataclass(frozen=True)
class Candidate:
    """A sentence of a retrieved passage and how well it answers."""

    row: int
    doc_id: str
    start: int
    end: int
    page: int | None
    passage: Passage
    score: float


def not_found(question: str, passages: Sequence[Passage] = (), query: str = "", support: float = 0.0,
              why: str = "") -> Answer:
    """The fixed abstention answer."""
    text = f"{NOT_FOUND_PREFIX}: no passage in the indexed reports answers this question."
    return Answer(text=text, citations=[], abstained=True, question=question, query=query,
                  passages=list(passages), support=support, notice=why)


def answer_extractive(question: str, query: Query, vector: np.ndarray, passages: Sequence[Passage],
                      index: Index, settings: Settings, said: str = "") -> Answer:
    """Compose a cited answer from the best sentences of ``passages``, or abstain.

    ``said`` is the previous assistant message: a follow-up asks for something new, so
    sentences already quoted there count for less.
    """
    candidates = score_sentences(query, vector, passages, index, said)
    if not candidates:
        return not_found(question, passages, query.text, why="nothing retrieved")
    missing = unknown_names(question, index)
    support = candidates[0].score - UNKNOWN_NAME_PENALTY * len(missing)
    if support < settings.abstain_below:
        why = f"the reports never mention {', '.join(missing)}" if missing else "weak evidence"
        return not_found(question, passages, query.text, support, why=why)
    chosen = choose(question, candidates, index, query, settings)
    typed = [c for c in chosen if answers_type(question, _text(index, c))]
    if not typed:
        return not_found(question, passages, query.text, support,
                         why="no passage gives the number or date asked for")
    return compose(question, query, typed, passages, index, support)


def answers_type(question: str, sentence: str) -> bool:
    """Whether ``sentence`` can answer a how-many / when question at all."""
    how_many = _HOW_MANY.search(question)
    if how_many:
        noun = terms(how_many.group(1))
        words = _WORDS.findall(sentence)
        stems = [terms(w)[:1] or [""] for w in words]
        for i, stem in enumerate(stems):
            if noun and stem[0] == noun[-1]:
                if any(_NUMBER.fullmatch(w) or w[0].isdigit() for w in words[max(0, i - 4):i]):
                    return True
        return False
    if _QUANTITY.search(question):
        return bool(re.search(r"\d", sentence))
    if _TIME.search(question):
        return bool(_TEMPORAL.search(sentence))
    if _WHY.search(question):
        return bool(_CAUSE.search(sentence))
    return True


def score_sentences(query: Query, vector: np.ndarray, passages: Sequence[Passage], index: Index,
                    said: str = "") -> list[Candidate]:
    """Every sentence of ``passages`` once (with its best-ranked passage), best first.

    A question term found only in the sentence before counts half: report sentences
    lean on their predecessor ("The alliance consists of …").
    """
    weights = _term_weights(query, index)
    total = sum(weights.values()) or 1.0
    rows: dict[int, Passage] = {}
    for p in passages:
        for row in index.sentence_rows(p.passage_id):
            rows.setdefault(row, p)
    if not rows:
        return []
    order = np.fromiter(rows, dtype=np.int64)
    dense = np.asarray(index.sentence_vectors[order]) @ vector
    said_folded = " ".join(said.split())
    wants_list = bool(_LIST.search(query.question))
    out = []
    seen_terms: dict[int, set[str]] = {}  # a sentence is often also the one before another

    def sentence_terms(r: int, text: str) -> set[str]:
        if r not in seen_terms:
            seen_terms[r] = set(terms(text[int(index.sentences[r, 1]):int(index.sentences[r, 2])]))
        return seen_terms[r]

    for row, sim in zip(order.tolist(), dense.tolist()):
        start, end = _trim_label(index, row)
        doc_i = int(index.sentences[row, 0])
        text = index.documents[doc_i].text
        if _INTERROGATIVE.search(text[start:end]):
            continue  # a question in a report (a quiz, a rhetorical one) answers nothing
        if is_instruction(text[start:end]):
            continue  # text that tries to steer a model is never quoted
        own = set(terms(text[start:end])) if start != int(index.sentences[row, 1]) else sentence_terms(row, text)
        before: set[str] = set()
        if row > 0 and int(index.sentences[row - 1, 0]) == doc_i:
            before = sentence_terms(row - 1, text)
        lexical = sum(w if t in own else 0.5 * w if t in before else 0.0 for t, w in weights.items()) / total
        score = sim + LEXICAL_WEIGHT * lexical
        if wants_list and len(_ENUMERATION.findall(text[start:end])) >= 2:
            score += LIST_SHAPE_BONUS
        if said_folded and " ".join(text[start:end].split()) in said_folded:
            score *= REPEAT_FACTOR
        page = int(index.sentences[row, 3])
        out.append(Candidate(row, rows[row].doc_id, start, end, None if page < 0 else page, rows[row], score))
    out.sort(key=lambda c: (-c.score, c.row))
    return out


def choose(question: str, candidates: list[Candidate], index: Index, query: Query,
           settings: Settings) -> list[Candidate]:
    """The best sentence, near ties, and sentences that cover what the best one leaves out.

    A question with several parts ("What did Sistani ask …, and what did Khamenei ask …?")
    is answered part by part: a further sentence is added when it covers question
    terms not yet covered, so single-fact questions keep a single citation.
    """
    best = candidates[0].score
    ratio = LIST_KEEP_RATIO if _LIST.search(question) else KEEP_RATIO
    floor = max(settings.abstain_below, best * ratio)
    chosen = [c for c in candidates if c.score >= floor][: settings.max_sentences]
    weights = {t: w for t, w in _term_weights(Query(query.question), index).items() if t in index.vocab}
    total = sum(weights.values())
    if total and _MULTIPART.search(question):
        covered = set().union(*(set(terms(_text(index, c))) for c in chosen))
        for c in candidates:
            if len(chosen) >= settings.max_sentences or c.score < max(settings.abstain_below, best * COVER_RATIO):
                break
            if c in chosen:
                continue
            new_terms = set(terms(_text(index, c))) - covered
            if sum(weights.get(t, 0.0) for t in new_terms) >= COVER_GAIN * total:
                chosen.append(c)
                covered |= new_terms
    if _MULTIDOC.search(question):
        have = {c.doc_id for c in chosen}
        for c in candidates:
            if c.doc_id not in have and c.score >= max(settings.abstain_below, best * MULTIDOC_KEEP_RATIO):
                chosen.append(c)
                have.add(c.doc_id)
    return chosen


def compose(question: str, query: Query, chosen: list[Candidate], passages: Sequence[Passage], index: Index,
            support: float) -> Answer:
    """Sentences in reading order (by report, then position), each followed by its marker."""
    first_seen: dict[str, int] = {}
    for c in chosen:
        first_seen.setdefault(c.doc_id, len(first_seen))
    ordered = sorted(chosen, key=lambda c: (first_seen[c.doc_id], c.start))
    citations: list[Citation] = []
    parts: list[str] = []
    for n, c in enumerate(ordered, start=1):
        quote = _text(index, c)
        citations.append(Citation(c.doc_id, quote, c.start, c.end, c.page, c.passage.text, round(c.score, 4)))
        parts.append(f"{quote} [{n}]")
    return Answer(text=" ".join(parts), citations=citations, abstained=False, question=question,
                  query=query.text, passages=list(passages), support=round(support, 4))


def unknown_names(question: str, index: Index) -> list[str]:
    """Names and numbers in the question that occur nowhere in the indexed reports."""
    missing: list[str] = []
    seen: set[str] = set()
    for match in _PROPER.finditer(question.strip()):
        word = match.group(1)
        stems = terms(word) + terms(" ".join(_NUMBER_PART.findall(word)))  # "FY2019" is known by "2019"
        if stems and all(s not in index.vocab for s in stems) and stems[0] not in seen:
            missing.append(word)
            seen.add(stems[0])
    return missing


def _term_weights(query: Query, index: Index) -> dict[str, float]:
    n = max(1, len(index.passages))
    weights: dict[str, float] = {}
    for weight, source in ((1.0, query.question), (CONTEXT_TERM_WEIGHT, query.context)):
        for t in terms(source):
            pos = index.vocab.get(t)
            df = 0 if pos is None else int(index.doc_freq[pos])
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            weights[t] = max(weights.get(t, 0.0), weight * idf)
    return weights


def _trim_label(index: Index, row: int) -> tuple[int, int]:
    doc_i, start, end = (int(x) for x in index.sentences[row, :3])
    match = _LABEL.match(index.documents[doc_i].text[start:end])
    return (start + match.end(), end) if match and start + match.end() < end else (start, end)


def _text(index: Index, c: Candidate) -> str:
    return index.documents[index.doc_pos[c.doc_id]].text[c.start:c.end]
