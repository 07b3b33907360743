"""PDF text as the reader sees it, from PDFium's character boxes (pypdfium2).

PDFium gives each character with its box, fast and in C. From the boxes we rebuild:
lines (characters on one baseline; a wide gap splits table cells), two-column reading
order (a vertical gutter that prose lines on both sides respect), paragraphs (a line
break inside a paragraph becomes a space; a wider gap, an indent, a font change or a short
last line ends it), table rows (one row per line, cells separated by tabs, never merged
into prose), line-end hyphens (decided with the document's own words) and running
headers, footers and page numbers (dropped when they repeat across pages). Pages without
a usable text layer (scans, fonts without a Unicode map) are read by OCR.
"""
from __future__ import annotations

import logging
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field

from qa.load.parts import HYPHEN_MARK, LoadError, Part, Progress, fold, join_pages, resolve_hyphens

log = logging.getLogger("qa")

OCR_DPI = 300
CELL_GAP = 1.5  # a gap wider than this many line heights separates table cells
_PAGE_NUMBER = re.compile(r"^[\s\-–—|]*(?:page\s+)?(?:\d{1,4}|[ivxlcdm]{1,6})(?:\s*(?:of|/)\s*\d{1,4})?[\s\-–—|]*$",
                          re.IGNORECASE)
_CURRENCY = {"$", "€", "£", "¥", "(", "$(", "($"}
_BULLET = re.compile(r"^(?:[•◦▪●■\-–—*]|\(?[a-z0-9]{1,3}[.)])\s")
_SENTENCE_END = tuple('.!?:;"”’)')
PASSWORD_ERROR = 4  # FPDF_ERR_PASSWORD


@dataclass
class _Seg:
    """A run of characters on one line, with no wide gap inside."""

    x0: float
    y0: float
    x1: float
    y1: float
    text: str

    @property
    def h(self) -> float:
        return max(self.y1 - self.y0, 1.0)


@dataclass
class _Row:
    segs: list[_Seg] = field(default_factory=list)

    @property
    def x0(self) -> float:
        return min(s.x0 for s in self.segs)

    @property
    def x1(self) -> float:
        return max(s.x1 for s in self.segs)

    @property
    def y0(self) -> float:
        return min(s.y0 for s in self.segs)

    @property
    def y1(self) -> float:
        return max(s.y1 for s in self.segs)

    @property
    def h(self) -> float:
        return statistics.median(s.h for s in self.segs)

    @property
    def table(self) -> bool:
        return len(self.cells()) > 1

    def cells(self) -> list[str]:
        out: list[str] = []
        for seg in self.segs:
            if out and out[-1] in _CURRENCY:
                out[-1] = f"{out[-1]} {seg.text}"
            else:
                out.append(seg.text)
        return out

    def text(self) -> str:
        return "\t".join(self.cells())


def read_pdf(raw: bytes, name: str, progress: Progress | None = None) -> list[Part]:
    """A PDF's text, page by page (1-based numbers kept), OCR for pages without a text layer."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(raw)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == PASSWORD_ERROR:
            raise LoadError(f"{name} is password-protected: it needs a password to open "
                            "(save an unprotected copy to index it)") from exc
        raise LoadError(f"broken PDF: {exc}") from exc
    pages: list[tuple[int, list[_Seg] | str]] = []
    empty: list[int] = []
    why = ""
    try:
        total = len(pdf)
        for index in range(total):
            number = index + 1
            page = pdf[index]
            try:
                segs, has_text, has_image, width = _page_segments(page)
                if has_text:
                    pages.append((number, _Layout(segs, width)))  # type: ignore[arg-type]
                elif has_image or segs is None:
                    try:
                        text = _ocr_page(page, name, number)
                    except LoadError as exc:  # no Tesseract, or OCR timed out: the other pages still load
                        text, why = "", str(exc)
                        log.warning("%s", exc)
                    else:
                        why = "it has no text layer and OCR found no text"
                        if not text.strip():
                            log.warning("%s: page %d has no text layer and OCR found no text", name, number)
                    if text.strip():
                        pages.append((number, text))
                    else:
                        empty.append(number)
            finally:
                page.close()
            if progress:
                progress(number, total)
    except LoadError:
        raise
    except Exception as exc:  # PDFium reports malformed files in many ways
        raise LoadError(f"broken PDF: {type(exc).__name__}: {exc}") from exc
    finally:
        pdf.close()
    texts = _assemble(pages)
    text, spans = join_pages(zip([n for n, _ in pages], texts))
    if not text.strip() and empty:
        raise LoadError(f"no text: page(s) {_ranges(empty)}: {why}")
    return [Part(text, spans)]


class _Layout:
    """A page's segments before running headers and footers are known."""

    def __init__(self, segs: list[_Seg], width: float) -> None:
        self.segs = segs
        self.width = width
        rows = _rows(segs)
        # Running headers and footers sit above or below the page's other content and are not
        # lines of prose (those run across the text width in one piece).
        edges = rows[:2] + rows[-2:] if len(rows) >= 6 else [rows[0], rows[-1]] if len(rows) >= 3 else []
        self.edges = [r for r in edges if len(r.segs) > 1 or r.x1 - r.x0 < 0.6 * width]


def _page_segments(page) -> tuple[list[_Seg] | None, bool, bool, float]:
    """Segments of a page; ``None`` when its text layer is garbage (no Unicode map)."""
    import pypdfium2.raw as pdfium_c

    width, _ = page.get_size()
    textpage = page.get_textpage()
    try:
        count = textpage.count_chars()
        text = textpage.get_text_range() if count > 0 else ""
        if len(text) != count:  # characters outside the BMP: read them one by one
            text = "".join(chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, i) or 0xFFFD) for i in range(count))
        visible = [ch for ch in text if not ch.isspace()]
        has_image = pdfium_c.FPDFPage_CountObjects(page.raw) > 0  # images, or text drawn as outlines
        if not visible:
            return [], False, has_image, width
        if _garbled(text, visible):
            return None, False, True, width
        segs: list[_Seg] = []
        chars: list[str] = []
        box: list[float] = []
        space = False

        def flush() -> None:
            nonlocal chars, box
            piece = "".join(chars).strip()
            if piece:
                segs.append(_Seg(box[0], box[1], box[2], box[3], piece))
            chars, box = [], []

        for i, ch in enumerate(text):
            if ch in "\r\n":
                flush()
                space = False
                continue
            if ch.isspace():
                space = True
                continue
            left, bottom, right, top = textpage.get_charbox(i, loose=True)
            if right <= left and top <= bottom:  # a generated character without geometry
                if chars:
                    chars.append(ch)
                continue
            if chars:
                h = max(box[3] - box[1], top - bottom, 1.0)
                mid, cur_mid = (top + bottom) / 2, (box[3] + box[1]) / 2
                if abs(mid - cur_mid) > 0.5 * h or left - box[2] > CELL_GAP * h or left < box[2] - 3 * h:
                    flush()
                    space = False
            if chars:
                if space:
                    chars.append(" ")
                box[0], box[1] = min(box[0], left), min(box[1], bottom)
                box[2], box[3] = max(box[2], right), max(box[3], top)
            else:
                box = [left, bottom, right, top]
            chars.append("-" if ch == "\x02" else ch)
            space = False
        flush()
        return segs, bool(segs), has_image, width
    finally:
        textpage.close()


_COMMON = frozenset("the of and to in a is for on that with as by was are be it at from or this an".split())


def _garbled(text: str, visible: list[str]) -> bool:
    """A text layer without a real Unicode map: unmapped codes, or shifted glyph ids.

    A font without a ToUnicode map typically yields control characters or letters of the
    wrong case with no common word ("7KH OHDGHU" for "The leader").
    """
    if sum(1 for ch in visible if _unreadable(ch)) > 0.3 * len(visible):
        return True
    letters = [ch for ch in visible if ch.isalpha()]
    if len(visible) >= 100 and len(letters) + sum(ch.isdigit() for ch in visible) < 0.4 * len(visible):
        return True
    if len(letters) < 50:
        return False
    lower = sum(ch.islower() for ch in letters) / len(letters)
    words = re.findall(r"[^\W\d_]+", text.lower())
    common = sum(w in _COMMON for w in words)
    return lower < 0.3 and common == 0


def _unreadable(ch: str) -> bool:
    code = ord(ch)
    return code < 32 or code == 0xFFFD or 0xE000 <= code <= 0xF8FF or (code >= 0xF0000 and code != 0xFFFE)


def _rows(segs: list[_Seg]) -> list[_Row]:
    """Segments grouped into rows by vertical overlap, top to bottom, left to right."""
    rows: list[_Row] = []
    for seg in sorted(segs, key=lambda s: (-s.y1, s.x0)):
        for row in reversed(rows[-3:]):
            overlap = min(row.y1, seg.y1) - max(row.y0, seg.y0)
            if overlap > 0.5 * min(row.h, seg.h):
                row.segs.append(seg)
                break
        else:
            rows.append(_Row([seg]))
    for row in rows:
        row.segs.sort(key=lambda s: s.x0)
    return rows


def _regions(segs: list[_Seg], width: float) -> list[list[_Seg]]:
    """Segments in reading order: a two-column page's left column before its right one."""
    if len(segs) < 10:
        return [segs]
    best_x, best_cross = 0.0, len(segs) + 1
    x = width * 0.3
    while x <= width * 0.7:
        cross = sum(1 for s in segs if s.x0 < x < s.x1)
        if cross < best_cross:
            best_x, best_cross = x, cross
        x += 2.0
    left = [s for s in segs if s.x1 <= best_x]
    right = [s for s in segs if s.x0 >= best_x]
    span = [s for s in segs if s.x0 < best_x < s.x1]
    if (best_cross > 0.15 * len(segs) or len(left) < 5 or len(right) < 5
            or statistics.median(s.x1 - s.x0 for s in left) < 0.25 * width
            or statistics.median(s.x1 - s.x0 for s in right) < 0.25 * width):
        return [segs]
    top = max(max(s.y1 for s in left), max(s.y1 for s in right))
    above = [s for s in span if s.y0 >= top - 1]
    below = [s for s in span if s.y0 < top - 1]
    return [r for r in (above, left, right, below) if r]


def _page_blocks(rows: list[_Row]) -> list[str]:
    """Paragraphs (wrapped lines joined) and table blocks (one row per line) of one region."""
    pitches = [a.y0 - b.y0 for a, b in zip(rows, rows[1:])
               if not a.table and not b.table and abs(a.h - b.h) < 0.2 * a.h and 0 < a.y0 - b.y0 < 4 * a.h]
    pitch = statistics.median(pitches) if pitches else None
    right = max((r.x1 for r in rows if not r.table), default=0.0)
    left = min((r.x0 for r in rows if not r.table), default=0.0)
    blocks: list[str] = []
    para: list[str] = []
    para_x0 = 0.0
    table: list[str] = []
    prev: _Row | None = None
    for row in rows:
        if row.table:
            if para:
                blocks.append(" ".join(para).replace(HYPHEN_MARK + " ", HYPHEN_MARK))
                para = []
            table.append(row.text())
            prev = row
            continue
        if table:
            blocks.append("\n".join(table))
            table = []
        text = row.text()
        if para and prev is not None and not prev.table and _continues(prev, row, pitch, para_x0, left, right, para[-1], text):
            if para[-1].endswith(("-", "\x02", HYPHEN_MARK)) and len(para[-1]) > 1 and para[-1][-2].isalpha() \
                    and text[:1].isalpha():
                para[-1] = para[-1][:-1] + HYPHEN_MARK
            para.append(text)
            para_x0 = min(para_x0, row.x0)
        else:
            if para:
                blocks.append(" ".join(para).replace(HYPHEN_MARK + " ", HYPHEN_MARK))
            para, para_x0 = [text], row.x0
        prev = row
    if para:
        blocks.append(" ".join(para).replace(HYPHEN_MARK + " ", HYPHEN_MARK))
    if table:
        blocks.append("\n".join(table))
    return blocks


def _continues(prev: _Row, row: _Row, pitch: float | None, para_x0: float, left: float, right: float,
               prev_text: str, text: str) -> bool:
    """Whether ``row`` wraps on from ``prev`` inside one paragraph."""
    h = max(prev.h, row.h)
    if abs(prev.h - row.h) > 0.2 * h:
        return False  # a heading, a footnote or a caption
    gap = prev.y0 - row.y0
    limit = 1.2 * pitch if pitch and pitch < 3 * h else 1.5 * h
    if gap <= 0 or gap > limit:
        return False
    if row.x0 > para_x0 + h:
        return False  # an indented first line
    if _BULLET.match(text):
        return False
    short = prev.x1 < right - 0.2 * (right - left)
    if short and prev_text.rstrip().endswith(_SENTENCE_END):
        return False
    if short and len(prev_text) < 60 and not prev_text.rstrip().endswith((",", "-", HYPHEN_MARK)):
        return False  # a title or label line standing alone
    return True


def _assemble(pages: list[tuple[int, object]]) -> list[str]:
    """Page texts with repeating headers/footers dropped and line-end hyphens decided."""
    layouts = [p for _, p in pages if isinstance(p, _Layout)]
    keys: Counter[str] = Counter()
    for layout in layouts:
        keys.update({_edge_key(r) for r in layout.edges})
    repeat = max(2, (len(layouts) + 1) // 2)
    texts: list[str] = []
    for _, page in pages:
        if isinstance(page, str):
            texts.append(fold(page))
            continue
        drop = {id(s) for r in page.edges
                if keys[_edge_key(r)] >= repeat or _PAGE_NUMBER.match(r.text().replace("\t", " "))
                for s in r.segs}
        segs = [s for s in page.segs if id(s) not in drop]
        blocks = [b for region in _regions(segs, page.width) for b in _page_blocks(_rows(region))]
        texts.append(fold("\n\n".join(blocks)))
    return resolve_hyphens(_carry_sentences(texts))


_SENTENCE_CUT = re.compile(r"[.!?][\"”’)]*(?=\s|$)|\n")


def _carry_sentences(texts: list[str]) -> list[str]:
    """A sentence broken by a page break ends on the page it started on.

    The continuation (up to the sentence's end) moves to the previous page, joined by a space
    (or rejoined at a hyphen), so no sentence is cut in two and its citation names the page
    where it begins.
    """
    out = list(texts)
    for i in range(1, len(out)):
        prev, cur = out[i - 1].rstrip(), out[i].lstrip()
        if not prev or not cur or not cur[0].islower() or prev.endswith(_SENTENCE_END) or "\t" in prev[-200:]:
            continue
        end = _SENTENCE_CUT.search(cur)
        cut = end.end() if end and end.group() != "\n" else end.start() if end else len(cur)
        moved, rest = cur[:cut].rstrip(), cur[cut:].lstrip()
        if re.search(r"[^\W\d_]-$", prev):
            out[i - 1] = prev[:-1] + HYPHEN_MARK + moved
        else:
            out[i - 1] = f"{prev} {moved}"
        out[i] = rest
    return out


def _edge_key(row: _Row) -> str:
    return re.sub(r"\d+", "#", " ".join(row.text().split())).lower()


def _ocr_page(page, name: str, number: int) -> str:
    from qa.load.ocr import ocr_image

    image = page.render(scale=OCR_DPI / 72, grayscale=True).to_pil()
    return ocr_image(image, f"{name} page {number}")


def _ranges(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers[:10]) + (" …" if len(numbers) > 10 else "")
