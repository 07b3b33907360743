"""Claims built from gold evidence sentences: true restatements and claims made wrong one way at a time.

Deterministic (no randomness: every choice is the first candidate in text order, or
picked by a stable hash of the sentence), so a run can be repeated and diffed. Each
family is one named function taking the gold sentence (and what else it needs) and
returning the claim, or None where the family does not apply to that sentence.

True families: ``gold`` (the sentence itself), ``shortened`` (an apposition, relative
clause, parenthesis or attribution cut), ``reordered`` (a phrase moved: the reported
clause first, or a time/place phrase moved to the other end).
Wrong families: ``name_swap``, ``number_change``, ``negation``, ``role_swap``,
``quantifier``, ``other_report``.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Sequence

from qa.parse import parse

TRUE_FAMILIES = ("gold", "shortened", "reordered")
WRONG_FAMILIES = ("name_swap", "number_change", "negation", "role_swap", "quantifier", "other_report")

_NAME = re.compile(r"\b[A-Z][\w’'.-]*(?:\s+(?:al-|bin\s|of\s|the\s)?[A-Z][\w’'.-]*)*")
_NUMBER = re.compile(r"\b\d+(?:[.,]\d+)*\b")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_NUMBER_WORDS = {"two": "three", "three": "four", "four": "five", "five": "six", "six": "seven", "seven": "eight",
                 "eight": "nine", "nine": "ten", "ten": "eleven", "dozens": "hundreds", "hundreds": "thousands",
                 "thousands": "millions", "twice": "three times"}
_QUANTIFIERS = {"all": "no", "every": "no", "some": "all", "several": "all", "many": "few", "few": "many",
                "most": "few", "more than": "fewer than", "fewer than": "more than", "less than": "more than",
                "at least": "at most", "always": "rarely", "only": "also", "both": "neither"}
_ROLE_PREPS = frozenset({"on", "of", "against", "with", "to", "over", "by"})
_REPORTING = frozenset("say tell report announce state add claim note write confirm argue warn explain stress insist "
                        "emphasize allege".split())
_OBJECT_CASE = {"he": "him", "she": "her", "they": "them", "i": "me", "we": "us", "him": "he", "her": "she",
                "them": "they", "me": "I", "us": "we"}
_NOT_NAMES = frozenset("The A An In On At As But And Or If When While After Before This That These Those It He She "
                       "They We I His Her Their Its According However Meanwhile Also".split()) | set(_MONTHS)


@dataclass(frozen=True)
class Claim:
    """One claim to check against one document; ``gold`` is the sentence it rests on (true claims)."""

    family: str
    text: str
    doc_id: str
    gold: str
    true: bool
    source_doc: str = ""


def stable_pick(items: Sequence[str], key: str) -> str:
    """The item chosen by a hash of ``key``: deterministic across runs and machines."""
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    return items[h % len(items)]


def names_in(text: str) -> list[str]:
    """Proper names of ``text``: runs of proper nouns in the parse ("Hadi al-Amiri", "Badr Organization")."""
    out: list[str] = []
    for doc in parse([text[i:i + 5000] for i in range(0, len(text), 5000)]):
        run: list = []
        for t in [*doc, None]:
            if t is not None and (t.pos_ == "PROPN" or (run and t.text in {"-", "al", "of"} and t.i + 1 < len(doc)
                                                        and doc[t.i + 1].pos_ == "PROPN")):
                run.append(t)
                continue
            if run:
                name = doc[run[0].i: run[-1].i + 1].text.strip(" .,’'")
                if len(name) > 2 and name not in out and name not in _MONTHS and not name.isdigit() \
                        and name[:1].isupper():
                    out.append(name)
            run = []
    return out


def name_swap(sentence: str, doc_names: Sequence[str]) -> str | None:
    """The first name of the sentence replaced by another name of the same document."""
    mine = names_in(sentence)
    if not mine:
        return None
    target = mine[0]
    others = sorted(n for n in doc_names if n not in sentence and target not in n and n not in target
                    and len(n.split()) >= len(target.split()) - 1)
    if not others:
        return None
    return sentence.replace(target, stable_pick(others, sentence), 1)


def number_change(sentence: str) -> str | None:
    """A number, date or count changed: a year moves by one, another number's first digit changes,
    else a number word or a month becomes the next one."""
    m = _NUMBER.search(sentence)
    if m:
        raw = m.group(0)
        digits = raw.replace(",", "")
        if re.fullmatch(r"(19|20)\d\d", digits):
            new = str(int(digits) + 1)
        else:
            first = int(raw[0])
            new = str((first + 1) % 10 or 2) + raw[1:] if not (first == 9 and len(digits) == 1) else "11"
        return sentence[: m.start()] + new + sentence[m.end():]
    for word, other in _NUMBER_WORDS.items():
        w = re.search(rf"\b{word}\b", sentence, re.IGNORECASE)
        if w:
            return sentence[: w.start()] + _same_case(w.group(0), other) + sentence[w.end():]
    for i, month in enumerate(_MONTHS):
        w = re.search(rf"\b{month}\b", sentence)
        if w and i != 4 or (w and re.search(r"May \d", sentence)):
            return sentence[: w.start()] + _MONTHS[(i + 1) % 12] + sentence[w.end():]
    return None


def negation(sentence: str) -> str | None:
    """The main predicate negated, or its negation removed."""
    doc = parse([sentence])[0]
    for t in doc:
        if t.dep_ == "neg" and t.head.dep_ == "ROOT":
            if t.lower_ == "n't":
                return _respace(doc, {t.i: ""}, sentence)
            return _respace(doc, {t.i: ""}, sentence)
    root = next((t for t in doc if t.dep_ == "ROOT"), None)
    if root is None:
        return None
    aux = [c for c in root.children if c.dep_ in {"aux", "auxpass"} and c.i < root.i]
    if aux:
        return _respace(doc, {aux[0].i: aux[0].text + " not"}, sentence)
    if root.lemma_ == "be":
        return _respace(doc, {root.i: root.text + " not"}, sentence)
    if root.tag_ in {"VBD", "VBZ", "VBP"} and root.pos_ == "VERB":
        do = {"VBD": "did", "VBZ": "does", "VBP": "do"}[root.tag_]
        return _respace(doc, {root.i: f"{do} not {root.lemma_}"}, sentence)
    return None


def role_swap(sentence: str) -> str | None:
    """Subject and object of the main predicate exchanged ("A leads B" → "B leads A")."""
    doc = parse([sentence])[0]
    root = next((t for t in doc if t.dep_ == "ROOT"), None)
    if root is None or root.pos_ not in {"VERB", "AUX"}:
        return None
    subj = next((c for c in root.children if c.dep_ in {"nsubj", "nsubjpass"}), None)
    obj = next((c for c in root.children if c.dep_ == "dobj"), None)
    if obj is None:
        agent = next((c for c in root.children if c.dep_ == "agent"), None)
        prep = agent or next((c for c in root.children if c.dep_ == "prep" and c.i > root.i
                              and c.lower_ in _ROLE_PREPS), None)
        obj = next((g for g in prep.children if g.dep_ == "pobj"), None) if prep is not None else None
    if subj is None or obj is None:
        return None
    a, b = _head_span(subj), _head_span(obj)
    if a[1] > b[0] or any(doc[i].pos_ == "NUM" for i in range(*a)) or any(doc[i].pos_ == "NUM" for i in range(*b)):
        return None
    sa, sb = doc[a[0]:a[1]].text, doc[b[0]:b[1]].text
    if sa.lower() == sb.lower():
        return None
    new_subject = _case(sb, subject=True)
    new_object = _case(sa, subject=False)
    if doc[a[0]].pos_ not in {"PROPN", "PRON"} and not sa[:2].isupper():
        new_object = new_object[:1].lower() + new_object[1:]
    text = (sentence[: doc[a[0]].idx] + new_subject + sentence[doc[a[1] - 1].idx + len(doc[a[1] - 1].text): doc[b[0]].idx]
            + new_object + sentence[doc[b[1] - 1].idx + len(doc[b[1] - 1].text):])
    return _capitalize(text)


def quantifier(sentence: str) -> str | None:
    """A quantifier turned into one that changes the claim ("all" → "no", "some" → "all", "many" → "few")."""
    for word, other in _QUANTIFIERS.items():
        m = re.search(rf"\b{word}\b(?!\s+\w+ly\b)", sentence, re.IGNORECASE)
        if m:
            return sentence[: m.start()] + _same_case(m.group(0), other) + sentence[m.end():]
    return None


def shortened(sentence: str) -> str | None:
    """The sentence with an apposition, a non-restrictive relative clause, a parenthesis or its attribution cut."""
    paren = re.sub(r"\s*\([^)]{1,80}\)", "", sentence)
    if paren != sentence:
        return paren
    doc = parse([sentence])[0]
    for t in doc:
        if t.dep_ in {"appos", "relcl"} and t.i > 0:
            span = _span(t)
            start, end = span
            if start > 0 and doc[start - 1].text == "," and end < len(doc) and doc[end].text == ",":
                cut = sentence[: doc[start - 1].idx] + sentence[doc[end].idx + 1:]
                return " ".join(cut.split())
    m = re.match(r"^(.{25,}?),\s+(?:[\w’'.-]+\s){1,6}(?:said|reported|says|reports|added|noted)\.?$", sentence)
    if m:
        return m.group(1) + "."
    m = re.match(r"^According to [^,]{3,80},\s+(.+)$", sentence)
    if m:
        return _capitalize(m.group(1))
    m = re.match(r"^(.{30,}?),\s+(?:saying|adding|which|as|while|after)\b.+$", sentence)
    if m:
        return m.group(1) + "."
    return None


def reordered(sentence: str) -> str | None:
    """The same fact with its words reordered: "A said B." → "B, A said.", or a trailing time or place
    phrase moved to the front ("X did Y on Monday." → "On Monday, X did Y.") and back."""
    doc = parse([sentence])[0]
    root = next((t for t in doc if t.dep_ == "ROOT"), None)
    if root is None:
        return None
    body = sentence.rstrip().rstrip(".")
    comp = next((c for c in root.children if c.dep_ == "ccomp" and c.i > root.i), None)
    if root.lemma_ in _REPORTING and comp is not None:
        start, end = _span(comp)
        if doc[start].lower_ == "that":
            start += 1
        head = sentence[: doc[root.i].idx + len(root.text)].strip()
        first = doc[root.i + 1] if root.i + 1 < len(doc) else None
        if first is not None and (first.i == start or first.lower_ == "that") and end >= len(doc) - 1:
            reported = body[doc[start].idx:].strip()
            return _capitalize(reported) + ", " + _lower_first(head, doc) + "."
    preps = [c for c in root.children if c.dep_ in {"prep", "npadvmod"} and c.i > root.i]
    if preps:
        last = preps[-1]
        start, end = _span(last)
        if end >= len(doc) - 1 and doc[start].lower_ in {"in", "on", "at", "during", "after", "before", "since",
                                                         "today", "yesterday", "last", "next", "this"}:
            phrase = body[doc[start].idx:].strip()
            rest = body[: doc[start].idx].rstrip(" ,")
            return _capitalize(phrase) + ", " + _lower_first(rest, doc) + "."
    m = re.match(r"^((?:In|On|At|During|After|Before|Since|Today|Last|Earlier)\b[^,]{2,40}),\s+(.+?)\.?$", sentence)
    if m:
        return _capitalize(m.group(2)) + " " + m.group(1)[0].lower() + m.group(1)[1:] + "."
    return None


def build_claims(evidence: Sequence[tuple[str, str]], doc_text: dict[str, str]) -> list[Claim]:
    """All families for each gold ``(doc_id, sentence)``; ``doc_text`` gives each document's text
    (for names to swap in) and the other documents (for ``other_report``)."""
    out: list[Claim] = []
    names = {doc: names_in(text) for doc, text in doc_text.items()}
    seen = set()
    for doc_id, sentence in evidence:
        if (doc_id, sentence) in seen:
            continue
        seen.add((doc_id, sentence))
        made = {
            "gold": sentence,
            "shortened": shortened(sentence),
            "reordered": reordered(sentence),
            "name_swap": name_swap(sentence, names.get(doc_id, [])),
            "number_change": number_change(sentence),
            "negation": negation(sentence),
            "role_swap": role_swap(sentence),
            "quantifier": quantifier(sentence),
        }
        for family, text in made.items():
            if text and (family == "gold" or text != sentence):
                out.append(Claim(family, " ".join(text.split()), doc_id, sentence, family in TRUE_FAMILIES))
    docs = sorted(doc_text)
    for doc_id, sentence in sorted(seen):
        others = [d for d in docs if d != doc_id and sentence not in doc_text[d]]
        if others:
            out.append(Claim("other_report", sentence, stable_pick(others, sentence), "", False, doc_id))
    return out


def _head_span(token) -> tuple[int, int]:
    """The noun phrase up to its head: "Qais al-Khazali" of "Qais al-Khazali, the head of ..."."""
    return next(iter(token.subtree)).i, token.i + 1


def _span(token) -> tuple[int, int]:
    sub = [t for t in token.subtree]
    while len(sub) > 1 and sub[-1].is_punct:
        sub.pop()
    return sub[0].i, sub[-1].i + 1


def _respace(doc, replace: dict[int, str], sentence: str) -> str:
    parts = []
    for t in doc:
        word = replace.get(t.i, t.text)
        if t.i in replace and word == "" and t.text == "n't":
            parts.append("")
            continue
        parts.append(word + t.whitespace_ if word else "")
    text = "".join(parts)
    text = re.sub(r"\b(ca|wo)\s*(?=\s|$)", lambda m: {"ca": "can", "wo": "will"}[m.group(1)], text)
    return " ".join(text.split()).replace(" ,", ",").replace(" .", ".")


def _case(text: str, *, subject: bool) -> str:
    low = text.lower()
    if low in _OBJECT_CASE and (subject == (low in {"him", "her", "them", "me", "us"})):
        return _OBJECT_CASE[low]
    return text


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lower_first(text: str, doc) -> str:
    first = doc[0]
    if first.pos_ == "PROPN" or first.text == "I" or first.text.isupper():
        return text
    return text[:1].lower() + text[1:]


def _same_case(original: str, word: str) -> str:
    return word[:1].upper() + word[1:] if original[:1].isupper() else word
