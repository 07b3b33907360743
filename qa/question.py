"""The question, analysed once into a :class:`QuestionShape` that every answering rule reads.

What is asked for (a person, an organization, a place, a date, a number, a reason, a
list), whether the question has several parts or spans several reports, and which
names it uses: read off the wording by small, named patterns, each tested.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

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
_NUMBER_PART = re.compile(r"(?<=[A-Za-z])\d{2,}|\d{2,}(?=[A-Za-z])")
_PROPER = re.compile(r"(?<![.!?]\s)(?<!^)\b([A-Z][\w’'\-]+(?:\.[A-Z]\.?)*|\d[\d,.]*)")


@dataclass(frozen=True)
class QuestionShape:
    """What a question asks for, read once from its wording."""

    text: str
    wants_number: bool = False
    count_noun: str = ""  # the stem counted by "how many <noun>"
    wants_date: bool = False
    wants_cause: bool = False
    wants_list: bool = False
    wants_entity: bool = False  # a person, organization or place: "who …", "which agency …", "where …"
    multipart: bool = False
    multidoc: bool = False
    names: tuple[str, ...] = ()


def analyse(question: str) -> QuestionShape:
    """The shape of ``question``."""
    how_many = _HOW_MANY.search(question)
    noun = terms(how_many.group(1)) if how_many else []
    return QuestionShape(
        text=question,
        wants_number=bool(how_many or _QUANTITY.search(question)),
        count_noun=noun[-1] if noun else "",
        wants_date=bool(_TIME.search(question)),
        wants_cause=bool(_WHY.search(question)),
        wants_list=bool(_LIST.search(question)),
        wants_entity=bool(_ENTITY.search(question)) and not _QUANTITY.search(question) and not _TIME.search(question),
        multipart=bool(_MULTIPART.search(question)),
        multidoc=bool(_MULTIDOC.search(question)),
        names=question_names(question),
    )


def question_names(question: str) -> tuple[str, ...]:
    """Capitalized words and numbers inside the question (not its first word)."""
    return tuple(m.group(1) for m in _PROPER.finditer(question.strip()))


def name_stems(name: str) -> list[str]:
    """The index terms a name is known by; "FY2019" is known by "2019" too."""
    return terms(name) + terms(" ".join(_NUMBER_PART.findall(name)))
