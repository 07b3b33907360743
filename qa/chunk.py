"""Split documents into sentences and passages with exact character offsets.

Sentences come from pysbd (rule-based, abbreviation-aware), corrected by a few rules
that matter for reports: closing quotes stay with their sentence, a split before a
lower-case word is undone, and an initialism such as "P.M.F." ends a sentence only when
the next word is one that starts sentences ("... disband the P.M.F. Many units ...").
Passages are runs of whole sentences, so a citation never straddles a passage edge.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Callable

from qa.types import Document, Sentence

_PARAGRAPH = re.compile(r"\n[ \t\r\f\v\xa0]*\n")
_CLOSERS = "”’\"')]»"
_INITIALISM_END = re.compile(r"(?:\b[A-Z]\.){2,}$")
_STARTERS = frozenset(
    """a an the this that these those there then thus many most some several few all
    each every both he she it its we they his her their our i you in on at as after
    before during while when where if although though however but and yet so also
    meanwhile moreover still since for by from with without one two three earlier
    later today yesterday""".split()
)
_segmenter_local = threading.local()
PROGRESS_EVERY = 256 * 1024  # characters between progress reports inside one document
LEAD_CHARS = 200  # a lead is a headline, not a paragraph


@dataclass(frozen=True)
class PassageSpan:
    """A passage before it is stored: sentences ``[first, last)`` of its document."""

    doc_id: str
    start: int
    end: int
    page: int | None
    first: int
    last: int


def split_sentences(text: str, start: int = 0, end: int | None = None,
                    progress: Callable[[int], None] | None = None) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` in ``text[start:end]``, whitespace trimmed.

    ``progress`` is called with the offset reached, now and then: a long report takes minutes.
    """
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    cursor = start
    reported = start
    for para_start, para_end in _paragraphs(text, start, end):
        if progress and para_start - reported >= PROGRESS_EVERY:
            progress(para_start)
            reported = para_start
        for seg in _segmenter().segment(text[para_start:para_end]):
            piece = seg.strip()
            if not piece:
                continue
            found = text.find(piece, max(cursor, para_start), para_end)
            if found < 0:  # pysbd altered the text; fall back to the whole paragraph rest
                found = max(cursor, para_start)
                piece = text[found:para_end].strip()
                if not piece:
                    continue
                found = text.find(piece, found, para_end)
            spans.append((found, found + len(piece)))
            cursor = found + len(piece)
    return _repair(text, spans)


def chunk_document(doc: Document, chunk_chars: int, overlap: int,
                   progress: Callable[[int, int], None] | None = None) -> tuple[list[Sentence], list[PassageSpan]]:
    """Sentences of ``doc`` and passages packing them up to ``chunk_chars`` characters.

    Passages never cross a page of a paginated document; consecutive passages share
    ``overlap`` sentences. ``progress(characters done, total)`` follows a long document.
    """
    report = (lambda at: progress(at, len(doc.text))) if progress else None
    regions = [(p.start, p.end, p.number) for p in doc.pages] or [(0, len(doc.text), None)]
    sentences: list[Sentence] = []
    passages: list[PassageSpan] = []
    for region_start, region_end, page in regions:
        first = len(sentences)
        for s, e in split_sentences(doc.text, region_start, region_end, report):
            for ps, pe in _cap_length(doc.text, s, e, max(chunk_chars, 200)):
                sentences.append(Sentence(doc.doc_id, ps, pe, page))
        passages.extend(_pack(doc.doc_id, sentences, first, len(sentences), page, chunk_chars, overlap))
    if progress:
        progress(len(doc.text), len(doc.text))
    return sentences, passages


def passage_lead(title: str, limit: int = LEAD_CHARS) -> str:
    """What each passage of a document is searched with: its title, whitespace folded.

    A passage from the middle of a news story rarely names the story ("the minister said
    she would step down"): read with the headline, it is found by questions that name it.
    A report without a title gets no lead: its first sentence before every passage blurred
    them (seeds answer recall 0.81 -> 0.76-0.78). The lead is searched, never cited:
    citations stay offsets into the document text.
    """
    return " ".join(title.split())[:limit].rstrip()


def searched_text(lead: str, passage: str) -> str:
    """The text a passage is embedded and keyword-indexed as: its lead, then itself.

    A passage that already holds its lead (the document's first) is searched as it is.
    """
    if not lead or lead in " ".join(passage[:len(lead) * 2 + 40].split()):
        return passage
    return f"{lead}\n{passage}"


def _pack(doc_id: str, sentences: list[Sentence], lo: int, hi: int, page: int | None,
          chunk_chars: int, overlap: int) -> list[PassageSpan]:
    out: list[PassageSpan] = []
    i = lo
    while i < hi:
        j = i + 1
        while j < hi and sentences[j].end - sentences[i].start <= chunk_chars:
            j += 1
        out.append(PassageSpan(doc_id, sentences[i].start, sentences[j - 1].end, page, i, j))
        if j >= hi:
            break
        i = max(i + 1, j - overlap)
    return out


def _cap_length(text: str, start: int, end: int, limit: int) -> list[tuple[int, int]]:
    """Cut an over-long "sentence" (tables, lists without stops) at whitespace."""
    if end - start <= limit * 2:
        return [(start, end)]
    pieces: list[tuple[int, int]] = []
    while end - start > limit:
        cut = text.rfind(" ", start + limit // 2, start + limit)
        cut = cut if cut > start else start + limit
        pieces.append((start, cut))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if start < end:
        pieces.append((start, end))
    return pieces


def _paragraphs(text: str, start: int, end: int) -> list[tuple[int, int]]:
    out = []
    pos = start
    for match in _PARAGRAPH.finditer(text, start, end):
        if match.start() > pos:
            out.append((pos, match.start()))
        pos = match.end()
    if pos < end:
        out.append((pos, end))
    return out


def _repair(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in spans:
        # A closing quote or bracket pysbd put at the head of the next sentence.
        if out and text[s] in _CLOSERS and text[out[-1][1]:s].strip() == "":
            k = s
            while k < e and (text[k] in _CLOSERS):
                k += 1
            out[-1] = (out[-1][0], k)
            while k < e and text[k].isspace():
                k += 1
            s = k
            if s >= e:
                continue
        # A split before a lower-case word was an abbreviation, not a sentence end.
        if out and text[s].islower() and "\n" not in text[out[-1][1]:s]:
            out[-1] = (out[-1][0], e)
            continue
        out.append((s, e))
    return [piece for s, e in out for piece in _split_initialisms(text, s, e)]


def _split_initialisms(text: str, start: int, end: int) -> list[tuple[int, int]]:
    pieces = []
    for match in re.finditer(r"(?:\b[A-Z]\.){2,}(\s+)([A-Za-z]+)", text[start:end]):
        if match.group(2).lower() in _STARTERS and match.group(2)[0].isupper():
            cut = start + match.start(1)
            pieces.append((start, cut))
            start = start + match.end(1)
    pieces.append((start, end))
    return pieces


def _segmenter():
    seg = getattr(_segmenter_local, "seg", None)
    if seg is None:
        import pysbd

        seg = _segmenter_local.seg = pysbd.Segmenter(language="en", clean=False)
    return seg
