"""Typed, frozen records passed between stages. No logic lives here."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Page:
    """A page of a paginated document: ``text[start:end]`` is page ``number``."""

    number: int
    start: int
    end: int


@dataclass(frozen=True)
class Document:
    """A loaded report. Every offset elsewhere points into ``text``."""

    doc_id: str
    text: str
    pages: tuple[Page, ...] = ()
    title: str = ""
    fingerprint: str = ""


@dataclass(frozen=True)
class Sentence:
    """A sentence of a document: ``document.text[start:end]``."""

    doc_id: str
    start: int
    end: int
    page: int | None = None


@dataclass(frozen=True)
class Passage:
    """A retrievable chunk of whole sentences; ``text == document.text[start:end]``.

    ``passage_id`` is its stable id in the index: kept across updates while its document is unchanged.
    """

    passage_id: int
    doc_id: str
    start: int
    end: int
    text: str
    page: int | None = None
    score: float = 0.0


@dataclass(frozen=True)
class Citation:
    """One ``[n]`` marker's source: ``quote == document_text[start:end]``."""

    doc_id: str
    quote: str
    start: int
    end: int
    page: int | None
    passage: str
    score: float


@dataclass(frozen=True)
class Answer:
    """An answer whose ``[n]`` markers index ``citations`` (marker ``[n]`` is ``citations[n-1]``)."""

    text: str
    citations: list[Citation] = field(default_factory=list)
    abstained: bool = False
    question: str = ""
    query: str = ""
    passages: list[Passage] = field(default_factory=list)
    support: float = 0.0
    mode: str = "extractive"
    notice: str = ""
