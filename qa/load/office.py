"""Word (.docx), PowerPoint (.pptx), OpenDocument text (.odt) and RTF.

Paragraphs and headings become paragraphs (blank-line separated); a table row becomes one
line with tab-separated cells, so a row is never merged into a prose sentence. A slide's
number is its page; a .docx gets pages only where Word recorded page breaks.
"""
from __future__ import annotations

import io
import zipfile

from qa.load.parts import LoadError, Part, Progress, fold, join_pages

MAX_UNZIPPED = 512 * 1024 * 1024


def _open_zip(raw: bytes, kind: str, member: str) -> zipfile.ZipFile:
    """The file as a zip holding ``member``; anything else is not a ``kind`` file."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        names = set(archive.namelist())
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise LoadError(f"not a {kind} file (not a zip package)") from exc
    if member not in names:
        raise LoadError(f"not a {kind} file (a zip without {member})")
    if sum(info.file_size for info in archive.infolist()) > MAX_UNZIPPED:
        raise LoadError(f"{kind} file unpacks to more than {MAX_UNZIPPED // 2**20} MiB")
    return archive


def read_docx(raw: bytes, name: str, progress: Progress | None = None) -> list[Part]:
    """Headings, paragraphs and tables of a Word file, in document order."""
    _open_zip(raw, "Word .docx", "word/document.xml")
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(raw))
        pages: list[tuple[int, list[str]]] = [(1, [])]
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                rows = []
                for row in item.rows:
                    cells, seen = [], set()
                    for cell in row.cells:
                        if id(cell._tc) in seen:
                            continue  # a merged cell repeats
                        seen.add(id(cell._tc))
                        cells.append(" ".join(cell.text.split()))
                    if any(cells):
                        rows.append("\t".join(cells))
                if rows:
                    pages[-1][1].append("\n".join(rows))
                continue
            breaks = len(item._p.xpath(".//w:lastRenderedPageBreak | .//w:br[@w:type='page']"))
            text = " ".join(item.text.split())
            if breaks and pages[-1][1]:
                pages.append((pages[-1][0] + breaks, []))
            if text:
                pages[-1][1].append(text)
    except LoadError:
        raise
    except Exception as exc:  # python-docx raises KeyError, ValueError, lxml errors on bad packages
        raise LoadError(f"broken Word .docx file: {type(exc).__name__}: {exc}") from exc
    title = (document.core_properties.title or "").strip()
    if len(pages) == 1:
        return [Part(fold("\n\n".join(pages[0][1])), title=title)]
    text, spans = join_pages((n, fold("\n\n".join(blocks))) for n, blocks in pages)
    return [Part(text, spans, title=title)]


def read_pptx(raw: bytes, name: str, progress: Progress | None = None) -> list[Part]:
    """Text of each slide (title first, then shapes top to bottom); the slide number is the page."""
    _open_zip(raw, "PowerPoint .pptx", "ppt/presentation.xml")
    from pptx import Presentation

    try:
        deck = Presentation(io.BytesIO(raw))
        slides = []
        total = len(deck.slides)
        for number, slide in enumerate(deck.slides, start=1):
            blocks: list[str] = []
            title = slide.shapes.title
            title_id = title.shape_id if title is not None else None
            shapes = sorted(_shapes(slide.shapes), key=lambda s: (s.shape_id != title_id, s.top or 0, s.left or 0))
            for shape in shapes:
                if getattr(shape, "has_table", False) and shape.has_table:
                    rows = ["\t".join(" ".join(c.text.split()) for c in row.cells) for row in shape.table.rows]
                    blocks.append("\n".join(r for r in rows if r.strip()))
                elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
                    blocks.extend(" ".join(p.text.split()) for p in shape.text_frame.paragraphs)
            slides.append((number, fold("\n\n".join(b for b in blocks if b.strip()))))
            if progress:
                progress(number, total)
    except Exception as exc:  # python-pptx raises KeyError, ValueError, lxml errors on bad packages
        raise LoadError(f"broken PowerPoint .pptx file: {type(exc).__name__}: {exc}") from exc
    text, spans = join_pages(slides)
    title = (deck.core_properties.title or "").strip()
    return [Part(text, spans, title=title)]


def _shapes(shapes):
    for shape in shapes:
        if shape.shape_type is not None and hasattr(shape, "shapes"):  # a group
            yield from _shapes(shape.shapes)
        else:
            yield shape


_ODF = {"text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
        "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0"}


def read_odt(raw: bytes, name: str, progress: Progress | None = None) -> list[Part]:
    """Headings, paragraphs and table rows of an OpenDocument text file (content.xml, read with lxml)."""
    from lxml import etree

    archive = _open_zip(raw, "OpenDocument .odt", "content.xml")
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
        root = etree.fromstring(archive.read("content.xml"), parser=parser)
    except etree.XMLSyntaxError as exc:
        raise LoadError(f"broken OpenDocument .odt file: {exc}") from exc
    t, tb = "{%s}" % _ODF["text"], "{%s}" % _ODF["table"]
    blocks: list[str] = []
    rows: list[str] = []
    for el in root.iter(t + "p", t + "h", tb + "table-row"):
        if el.tag == tb + "table-row":
            cells = [" ".join(_odf_text(c).split()) for c in el.iter(tb + "table-cell")]
            rows.append("\t".join(cells))
            continue
        if any(a.tag == tb + "table-cell" for a in el.iterancestors()):
            continue  # read with its row
        if rows:
            blocks.append("\n".join(r for r in rows if r.strip()))
            rows = []
        text = " ".join(_odf_text(el).split())
        if text:
            blocks.append(text)
    if rows:
        blocks.append("\n".join(r for r in rows if r.strip()))
    return [Part(fold("\n\n".join(b for b in blocks if b)))]


def _odf_text(el) -> str:
    """Text of an ODF element: spans inlined, space/tab/line-break elements as spaces, notes left out."""
    t = "{%s}" % _ODF["text"]
    out = [el.text or ""]
    for child in el:
        if child.tag in (t + "s", t + "tab", t + "line-break"):
            out.append(" ")
        elif child.tag != t + "note":
            out.append(_odf_text(child))
        out.append(child.tail or "")
    return "".join(out)


def read_rtf(raw: bytes, name: str, progress: Progress | None = None) -> list[Part]:
    """An RTF file's text (striprtf); each RTF paragraph is a paragraph."""
    from striprtf.striprtf import rtf_to_text

    if not raw.lstrip().startswith(b"{\\rtf"):
        raise LoadError("not an RTF file (no {\\rtf header)")
    try:
        text = rtf_to_text(raw.decode("latin-1"), errors="replace")
    except Exception as exc:  # striprtf is a regex walker; bad input raises anything
        raise LoadError(f"broken RTF file: {type(exc).__name__}: {exc}") from exc
    paragraphs = (" ".join(line.split()) for line in text.splitlines())
    return [Part(fold("\n\n".join(p for p in paragraphs if p)))]
