"""What a format reader returns, before it becomes a :class:`~qa.types.Document`.

Readers work on bytes (so an e-mail's attachments load like files) and return parts; the
package turns each part into a document whose offsets point into exactly ``part.text``.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

from qa.types import Page

# A line-end hyphen whose fate (compound word or hyphenated word) the whole document decides.
HYPHEN_MARK = "\ufffe"
_MARKED = re.compile(r"(\w+)" + HYPHEN_MARK + r"(\w+)")
_WORD = re.compile(r"\w+(?:-\w+)*")
Progress = Callable[[int, int], None]


class LoadError(ValueError):
    """A file that cannot be turned into a document; the message says why."""


@dataclass(frozen=True)
class Part:
    """One document's text; ``pages`` index into ``text``; ``name`` is set for a sub-document."""

    text: str
    pages: tuple[Page, ...] = ()
    title: str = ""
    name: str = ""


@dataclass(frozen=True)
class Attachment:
    """A file inside a file (an e-mail attachment), loaded by its own suffix as its own document."""

    name: str
    raw: bytes = field(repr=False)


def fold(text: str) -> str:
    """NFKC (ligatures, full-width and other compatibility characters) and plain spaces."""
    text = unicodedata.normalize("NFKC", text)
    return re.sub(r"[ \u00a0\u2000-\u200a\u202f\u205f\u3000]+", " ", text.replace("\u00ad", ""))


def join_pages(pages: Iterable[tuple[int, str]]) -> tuple[str, tuple[Page, ...]]:
    """Page texts joined by blank lines; each non-empty page keeps its 1-based number and span."""
    parts: list[str] = []
    spans: list[Page] = []
    offset = 0
    for number, page_text in pages:
        page_text = page_text.strip()
        if not page_text:
            continue
        if parts:
            parts.append("\n\n")
            offset += 2
        parts.append(page_text)
        spans.append(Page(number, offset, offset + len(page_text)))
        offset += len(page_text)
    return "".join(parts), tuple(spans)


def resolve_hyphens(texts: list[str]) -> list[str]:
    """Decide each marked line-end hyphen with the document's own words.

    "govern-/ment" is rejoined as "government" when the document uses that word elsewhere;
    otherwise the hyphen stays ("wholly-/owned", "Iranian-/backed"): reports printed from Word
    or a browser are not hyphenated by the typesetter, so a line-end hyphen is usually the
    writer's own.
    """
    if not any(HYPHEN_MARK in t for t in texts):
        return texts
    words: Counter[str] = Counter()
    for t in texts:
        for token in _WORD.findall(t.replace(HYPHEN_MARK, " ").lower()):
            words[token] += 1
            pieces = token.split("-")
            words.update(f"{a}-{b}" for a, b in zip(pieces, pieces[1:]) if len(pieces) > 2)

    def decide(match: re.Match) -> str:
        head, tail = match.group(1), match.group(2)
        joined, hyphened = (head + tail).lower(), f"{head}-{tail}".lower()
        if words[hyphened] > words[joined]:
            return f"{head}-{tail}"
        if words[joined]:
            return head + tail
        return f"{head}-{tail}"

    return [_MARKED.sub(decide, t).replace(HYPHEN_MARK, "-") for t in texts]
