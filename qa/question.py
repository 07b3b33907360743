"""The question, analysed once into a :class:`QuestionShape` that every answering rule reads.

What is asked for (a person, an organization, a place, a date, a number, a reason, a
list), whether the question has several parts or spans several reports, and which
names it uses: read off the wording by small, named patterns, each tested.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from qa.chunk import STATEMENTS
from qa.index import terms

_QUANTITY = re.compile(r"\b(how (many|much|large|big|long|old|often)|what (number|percentage|share|amount|proportion|size)|"
                       r"what percent|(death|casualty) toll|casualties|turnout|budget)\b", re.IGNORECASE)
_HOW_MANY = re.compile(r"\bhow many ((?:[\w.’'-]+ ){0,2}?[\w’'-]+?s)\b", re.IGNORECASE)
_TIME = re.compile(r"^\W*(when|since when)\b|\b(what|which|on what|in what) (year|date|day|month|time)\b|\bhow long ago\b",
                   re.IGNORECASE)
_LIST = re.compile(r"\b(list|name all|make up|consist|which (groups|countries|people|leaders|units|organizations|militias|two|three)|"
                   r"what (groups|are|were|two|three|things|steps|demands|countries|organizations)|who are|who were|"
                   r"all the|each of|both)\b", re.IGNORECASE)
_MULTIDOC = re.compile(r"\b(both (reports|briefs|documents|articles)|each (report|brief|document)|the (two|other) "
                       r"(reports|briefs)|across (the )?(reports|briefs)|in common|compare|differ|both)\b", re.IGNORECASE)
_MULTIPART = re.compile(r",|;|\b(and|as well as|also|both|or|besides)\b", re.IGNORECASE)
_WHY = re.compile(r"^\W*why\b|\bfor what reason\b", re.IGNORECASE)
_ENTITY_NOUNS = (r"agency|agencies|newspaper|paper|outlet|outlets|media|network|channel|broadcaster|country|countries|"
                 r"nation|nations|state|states|city|cities|town|province|region|capital|group|groups|organi[sz]ation|"
                 r"organi[sz]ations|party|parties|company|companies|firm|bank|team|club|militia|militias|unit|units|"
                 r"faction|bloc|alliance|coalition|court|council|ministry|department|body|leader|leaders|minister|"
                 r"official|officials|member|members|person|people|man|woman|commander|spokesman|spokesperson|"
                 r"cleric|president|prime minister|chief|head|ceo|senator|governor|player|players|athlete|singer|"
                 r"actor|actress|author|brand|school|university|airline|storm|hurricane|ship|candidate|candidates")
_ENTITY = re.compile(r"^\W*(who|whom|whose|where)\b|\b(which|what)\s+(?:[\w’'-]+\s+){0,2}?(" + _ENTITY_NOUNS + r")\b",
                     re.IGNORECASE)
# Line items each financial statement carries (and the other statements do not headline).
_LINE_ITEMS = {
    "income": r"revenues?|net sales|cost of (?:goods sold|sales|revenues?)|cogs|gross (?:profit|margins?)|"
              r"operating (?:income|margins?|expenses?)|net (?:income|earnings)|earnings per share|eps|ebit(?:da)?|"
              r"sg&a|interest expense",
    "balance": r"total assets|inventor(?:y|ies)|accounts (?:payable|receivable)|total liabilities|debt|"
               r"(?:share|stock)holders[’']? equity|working capital|current (?:assets|liabilities)",
    "cash": r"cash flows? from operations|operating cash flows?|free cash ?flows?|capital expenditures?|capex|"
            r"cash (?:provided by|from) operating activities",
}
_NAMED_STATEMENT = {kind: re.compile(r"(?<![\w-])(?:" + pattern + r")\b", re.IGNORECASE)  # not "off-balance sheet"
                    for kind, pattern in STATEMENTS.items()}
_REASON = re.compile(r"\b(?:why|drove|drives?|driven|drivers?|reasons?|caused?|explains?|factors?|due to)\b", re.IGNORECASE)
_IMPLIED_STATEMENT = {kind: re.compile(r"\b(?:" + pattern + r")\b", re.IGNORECASE) for kind, pattern in _LINE_ITEMS.items()}
_NUMBER_PART = re.compile(r"(?<=[A-Za-z])\d{2,}|\d{2,}(?=[A-Za-z])")
_PROPER = re.compile(r"(?<![.!?]\s)(?<!^)\b([A-Z][\w’'\-]+(?:\.[A-Z]\.?)*|\d[\d,.]*)")


@dataclass(frozen=True)
class QuestionShape:
    """What a question asks for, read once from its wording."""

    text: str
    wants_number: bool = False
    count_noun: str = ""  # the stem counted by "how many <noun>"
    count_words: frozenset[str] = frozenset()  # count_noun and the phrase's other common nouns (counted_words)
    wants_date: bool = False
    wants_cause: bool = False
    wants_list: bool = False
    wants_entity: bool = False  # a person, organization or place: "who …", "which agency …", "where …"
    multipart: bool = False
    multidoc: bool = False
    names: tuple[str, ...] = ()
    statement: str = ""  # the financial statement it names or implies: "balance", "income", "cash"
    items: frozenset[str] = frozenset()  # its terms less the statement names it uses (item_terms)
    asks_reason: bool = False  # why something moved ("What drove …"): answered in prose


def analyse(question: str) -> QuestionShape:
    """The shape of ``question``."""
    how_many = _HOW_MANY.search(question)
    noun = terms(how_many.group(1)) if how_many else []
    return QuestionShape(
        text=question,
        wants_number=bool(how_many or _QUANTITY.search(question)),
        count_noun=noun[-1] if noun else "",
        count_words=frozenset(counted_words(how_many.group(1)) + noun[-1:]) if how_many else frozenset(),
        wants_date=bool(_TIME.search(question)),
        wants_cause=bool(_WHY.search(question)),
        wants_list=bool(_LIST.search(question)),
        wants_entity=bool(_ENTITY.search(without_line_items(question))) and not _QUANTITY.search(question)
        and not _TIME.search(question),
        multipart=bool(_MULTIPART.search(question)),
        multidoc=bool(_MULTIDOC.search(question)),
        names=question_names(question),
        statement=named_statement(question),
        items=frozenset(item_terms(question)),
        asks_reason=asks_reason(question),
    )


def counted_words(phrase: str) -> list[str]:
    """Stems of the lower-case words of a "how many <phrase>" question: what a number may count.

    Reports count the same thing by another head noun: "How many hospital admissions …?" is
    answered by "137,000 more hospitalizations", which shares "hospital" and not "admissions".
    Capitalized words ("How many US troops …") are names, not what is counted.
    """
    return [stem for word in phrase.split() if word[:1].islower() for stem in terms(word)]


def asks_reason(question: str) -> bool:
    """Whether the question asks why something moved ("What drove the decrease in cost of sales?"):
    answered in prose, not by a statement's numbers."""
    return bool(_WHY.search(question) or _REASON.search(question))


def without_line_items(question: str) -> str:
    """The question less the financial line items it names: "What was Nike's capital expenditure?"
    asks for a number, not for a capital city."""
    for pattern in _IMPLIED_STATEMENT.values():
        question = pattern.sub(" ", question)
    return question


def item_terms(question: str) -> set[str]:
    """The question's index terms less the statement names it uses: what it asks for from the
    statement ("total current liabilities"), not which statement ("balance sheet")."""
    for pattern in _NAMED_STATEMENT.values():
        question = pattern.sub(" ", question)
    return set(terms(question))


def named_statement(question: str) -> str:
    """The financial statement a question is about: the one it names ("…using the balance
    sheet"), else the one whose line item it asks for ("What is the FY2016 COGS…" → "income"),
    else "". Only filings have statement pages, so elsewhere this changes nothing."""
    for table in (_NAMED_STATEMENT, _IMPLIED_STATEMENT):
        kind = next((kind for kind, pattern in table.items() if pattern.search(question)), "")
        if kind:
            return kind
    return ""


def question_names(question: str) -> tuple[str, ...]:
    """Capitalized words and numbers inside the question (not its first word)."""
    return tuple(m.group(1) for m in _PROPER.finditer(question.strip()))


_NAME_SPAN = re.compile(r"\b[A-Z][\w’'.-]*(?:\s+(?:(?:al|bin|ibn|de|del|da|von|van|of|the|and|for)[-\s]+)*[A-Z][\w’'.-]*)*")


def name_spans(text: str) -> list[tuple[int, str]]:
    """Runs of capitalized words ("Qais al-Khazali", "Bank of England") with where each starts."""
    return [(m.start(), m.group(0)) for m in _NAME_SPAN.finditer(text)]


def name_stems(name: str) -> list[str]:
    """The index terms a name is known by; "FY2019" is known by "2019" too."""
    return terms(name) + terms(" ".join(_NUMBER_PART.findall(name)))
