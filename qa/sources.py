"""The chat's source panel: a cited sentence shown in its whole document, and for a PDF its page.

A citation marker sends what its answer stored (document id, ``start``/``end`` offsets and the quote
as shown); the panel reads the document from the index store, never a path from the browser. The quote
is ``document.text[start:end]``; when the report was re-indexed since the answer and the offsets moved,
the quote is looked for again (:func:`locate_quote`) and the panel says so.

For a PDF the cited page is rendered with PDFium (pypdfium2) and the sentence's area marked from the
page's character boxes (:func:`match_span` finds the quote in the page's own text, ignoring spacing,
line-end hyphens and punctuation, which the stored text has rebuilt).
"""
from __future__ import annotations

import base64
import html
import io
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from qa.types import Document

WHOLE_DOCUMENT = 200_000  # characters shown in full; a longer report shows this much around the quote
PAGE_SCALE = 1.4  # rendering scale of a PDF page (72 dpi * 1.4: about 860 px for A4 / Letter width)


@dataclass(frozen=True)
class SourceRequest:
    """What a citation marker asks the panel for (values as the browser sent them, checked)."""

    doc_id: str
    start: int
    end: int
    quote: str = ""
    page: int | None = None


@dataclass(frozen=True)
class SourceView:
    """A cited sentence in its document: ``text[start:end]`` of the document as indexed now.

    ``status`` is "exact" (the offsets still give the quote), "moved" (the report changed and the quote
    was found elsewhere) or "changed" (the quote is no longer in the report; the offsets' text is shown).
    """

    doc_id: str
    title: str
    start: int
    end: int
    before: str
    quote: str
    after: str
    offset: int  # where ``before`` starts in the document text (0: the whole document is shown)
    cut_after: bool
    page: int | None
    pages: tuple[tuple[int, int], ...]  # (page number, start offset) of each page
    status: str


@dataclass(frozen=True)
class Box:
    """A marked area on a rendered page, as fractions of the page's width and height (top-left origin)."""

    left: float
    top: float
    width: float
    height: float


@dataclass(frozen=True)
class PageImage:
    """One rendered PDF page (PNG) with the cited sentence's boxes when it is on this page."""

    number: int
    count: int
    png: bytes
    boxes: tuple[Box, ...]


def parse_source_request(raw: object) -> SourceRequest | None:
    """A marker's request from the browser, or None when it is not one (bad JSON, missing or wrong values)."""
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(data, dict):
            return None
        doc_id, start, end = data.get("doc"), int(data.get("start")), int(data.get("end"))
        page = data.get("page")
        page = int(page) if page not in (None, "", "None") else None
    except (TypeError, ValueError):
        return None
    if not isinstance(doc_id, str) or not doc_id or not 0 <= start <= end:
        return None
    return SourceRequest(doc_id, start, end, str(data.get("quote") or ""), page)


def _flat(text: str) -> str:
    return " ".join(text.split())


def locate_quote(text: str, start: int, end: int, quote: str) -> tuple[int, int, str]:
    """Where a citation's quote is in ``text`` now: (start, end, status), status as in :class:`SourceView`.

    ``quote`` is compared with spacing folded (the chat shows a quote's line breaks as spaces); an
    empty ``quote`` trusts the offsets.
    """
    end = min(end, len(text))
    start = min(start, end)
    if not quote or _flat(text[start:end]) == _flat(quote):
        return start, end, "exact"
    words = quote.split()
    if words:
        pattern = r"\s+".join(re.escape(w) for w in words)
        found = [m for m in re.finditer(pattern, text)]
        if found:
            best = min(found, key=lambda m: abs(m.start() - start))  # the occurrence nearest the old place
            return best.start(), best.end(), "moved"
    return start, end, "changed"


def page_of(document: Document, offset: int) -> int | None:
    """The page number holding ``offset`` (None for a document without pages)."""
    for page in document.pages:
        if page.start <= offset < page.end:
            return page.number
    return document.pages[-1].number if document.pages and offset >= document.pages[-1].start else None


def source_view(document: Document, request: SourceRequest, window: int = WHOLE_DOCUMENT) -> SourceView:
    """The cited sentence with the text around it: the whole document, or ``window`` characters around it."""
    text = document.text
    start, end, status = locate_quote(text, request.start, request.end, request.quote)
    lo, hi = 0, len(text)
    if len(text) > window:
        lo = max(0, start - window // 2)
        hi = min(len(text), max(end, lo + window))
    return SourceView(document.doc_id, document.title, start, end, text[lo:start], text[start:end], text[end:hi],
                      lo, hi < len(text), page_of(document, start),
                      tuple((p.number, p.start) for p in document.pages), status)


def _escaped(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


def _with_page_marks(text: str, offset: int, pages: tuple[tuple[int, int], ...]) -> str:
    """Escaped text with a small "page N" mark where each page starts."""
    cuts = [(start - offset, number) for number, start in pages if offset < start < offset + len(text)]
    out, at = [], 0
    for cut, number in cuts:
        out.append(_escaped(text[at:cut]))
        out.append(f'<span class="qa-page-mark" aria-hidden="true">page {number}</span>')
        at = cut
    out.append(_escaped(text[at:]))
    return "".join(out)


STATUS_NOTES = {
    "moved": "The report changed since this answer: its quote is shown where it is now.",
    "changed": "The report changed since this answer and the quote is no longer in it: "
               "the text now at the cited place is shown.",
}


def render_source(view: SourceView) -> str:
    """The panel's text: the document (inert) scrolled by the page to the highlighted quote."""
    where = view.doc_id + (f", page {view.page}" if view.page is not None else "")
    title = " ".join(view.title.split())
    head = (f'<h3 class="qa-panel-title" id="source-title" tabindex="-1">{html.escape(title or view.doc_id)}</h3>'
            f'<p class="qa-panel-where">{html.escape(where)}, chars {view.start}–{view.end}</p>')
    note = f'<p class="qa-notice">⚠️ {STATUS_NOTES[view.status]}</p>' if view.status in STATUS_NOTES else ""
    before = ("… " if view.offset else "") + _with_page_marks(view.before, view.offset, view.pages)
    quote = _with_page_marks(view.quote, view.start, view.pages)
    after = _with_page_marks(view.after, view.end, view.pages) + (" …" if view.cut_after else "")
    body = (f'<div class="qa-doc" tabindex="0" role="region" aria-label="Text of {html.escape(view.doc_id)}">'
            f'{before}<mark class="qa-panel-hit" id="qa-panel-hit" data-start="{view.start}" data-end="{view.end}">'
            f'{quote}</mark>{after}</div>')
    return head + note + body


def render_panel_message(message: str) -> str:
    """The panel when there is nothing to show but a message (a report gone, a bad request)."""
    return f'<p class="qa-notice" id="source-message">⚠️ {html.escape(message)}</p>'


# ---------------------------------------------------------------- PDF pages

def _folded(text: str) -> tuple[str, list[int]]:
    """Lower-cased letters and digits of ``text`` (NFKC: ligatures unfolded) and where each came from."""
    chars, where = [], []
    for i, ch in enumerate(text):
        for c in unicodedata.normalize("NFKC", ch).lower():
            if c.isalnum():
                chars.append(c)
                where.append(i)
    return "".join(chars), where


def match_span(page_text: str, quote: str) -> tuple[int, int] | None:
    """Where ``quote`` is in a page's own text, as (first char, last char + 1) indices into ``page_text``.

    Only letters and digits are compared, so the page's line breaks, line-end hyphens, spacing and
    punctuation need not match the stored text. None when the quote is not on the page.
    """
    hay, where = _folded(page_text)
    needle, _ = _folded(quote)
    if not needle:
        return None
    at = hay.find(needle)
    if at < 0:
        return None
    return where[at], where[at + len(needle) - 1] + 1


def page_chars(textpage) -> str:
    """A PDFium text page's characters, one per character index (so indices are PDFium's own)."""
    import pypdfium2.raw as pdfium_c

    out = []
    for i in range(textpage.count_chars()):
        code = pdfium_c.FPDFText_GetUnicode(textpage, i)
        out.append(chr(code) if 0 < code < 0x110000 and not 0xD800 <= code < 0xE000 else " ")
    return "".join(out)


def quote_boxes(textpage, width: float, height: float, quote: str) -> tuple[Box, ...]:
    """The areas of ``quote`` on a page, as fractions of the page (empty when it is not found there)."""
    span = match_span(page_chars(textpage), quote)
    if span is None:
        return ()
    first, stop = span
    rects = [textpage.get_rect(i) for i in range(textpage.count_rects(first, stop - first))]
    return tuple(Box(round(left / width, 4), round((height - top) / height, 4), round((right - left) / width, 4),
                     round((top - bottom) / height, 4)) for left, bottom, right, top in line_boxes(rects))


def line_boxes(rects: list[tuple[float, float, float, float]]) -> list[tuple[float, float, float, float]]:
    """PDFium's rectangles (left, bottom, right, top; often one per character) joined into one per line
    run: a rectangle joins the previous one when their heights overlap by half and it starts near it."""
    lines: list[list[float]] = []
    for left, bottom, right, top in rects:
        last = lines[-1] if lines else None
        if last is not None:
            overlap = min(top, last[3]) - max(bottom, last[1])
            near = -2 * (top - bottom) <= left - last[2] <= 3 * (top - bottom)
            if overlap >= 0.5 * min(top - bottom, last[3] - last[1]) and near:
                last[:] = [min(left, last[0]), min(bottom, last[1]), max(right, last[2]), max(top, last[3])]
                continue
        lines.append([left, bottom, right, top])
    return [(a, b, c, d) for a, b, c, d in lines]


def render_page(path: Path, number: int, quote: str = "", scale: float = PAGE_SCALE) -> PageImage:
    """Page ``number`` (1-based, clamped to the document) of a PDF as PNG, with ``quote`` marked if on it."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        count = len(pdf)
        number = min(max(number, 1), count)
        page = pdf[number - 1]
        try:
            width, height = page.get_size()
            image = page.render(scale=scale).to_pil()
            boxes: tuple[Box, ...] = ()
            if quote:
                textpage = page.get_textpage()
                try:
                    boxes = quote_boxes(textpage, width, height, quote)
                finally:
                    textpage.close()
        finally:
            page.close()
    finally:
        pdf.close()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return PageImage(number, count, buffer.getvalue(), boxes)


def render_page_html(image: PageImage, doc_id: str) -> str:
    """A rendered page as an <img> with the cited sentence's boxes drawn over it."""
    data = base64.b64encode(image.png).decode("ascii")
    marks = "".join(f'<span class="qa-box" style="left:{b.left * 100:.2f}%;top:{b.top * 100:.2f}%;'
                    f'width:{b.width * 100:.2f}%;height:{b.height * 100:.2f}%"></span>' for b in image.boxes)
    said = " (the cited sentence is marked)" if image.boxes else ""
    return (f'<div class="qa-page" data-page="{image.number}" data-pages="{image.count}" '
            f'data-boxes="{len(image.boxes)}"><p class="qa-page-label" id="page-label">Page {image.number} of '
            f'{image.count}{said}</p><div class="qa-page-frame"><img alt="Page {image.number} of '
            f'{html.escape(doc_id)}" src="data:image/png;base64,{data}">{marks}</div></div>')
