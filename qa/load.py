"""Load reports from disk into :class:`~qa.types.Document` records.

A document keeps the exact text that every later offset points into. One bad file
never stops a run: it is skipped with a warning that names it.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from qa.types import Document, Page

log = logging.getLogger("qa")

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
PDF_SUFFIXES = {".pdf"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | {".jsonl"}
BEIR_CORPUS_NAME = "corpus.jsonl"
_HTML_BLOCKS = ["p", "div", "section", "article", "header", "footer", "main", "aside", "nav", "li", "ul", "ol",
                "table", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "figcaption",
                "dd", "dt", "hr"]
MAX_FILE_BYTES = 512 * 1024 * 1024
LOADER_VERSION = "1"


class LoadError(ValueError):
    """A file that cannot be turned into a document; the message says why."""


@dataclass(frozen=True)
class Skipped:
    """A file left out of the corpus, and why."""

    path: str
    reason: str


def load_corpus(paths: Sequence[str | Path]) -> tuple[list[Document], list[Skipped]]:
    """Load every supported file under ``paths``; ids are paths relative to each root.

    Unsupported, empty, binary, undecodable or broken files are skipped and reported.
    """
    documents: list[Document] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    for root in (Path(p) for p in paths):
        if not root.exists():
            skipped.append(_skip(root, "no such file or directory"))
            continue
        for file, doc_id in _walk(root):
            try:
                loaded = list(load_file(file, doc_id))
            except LoadError as exc:
                skipped.append(_skip(file, str(exc)))
                continue
            for doc in loaded:
                if doc.doc_id in seen:
                    skipped.append(_skip(file, f"duplicate document id {doc.doc_id!r}"))
                    continue
                seen.add(doc.doc_id)
                documents.append(doc)
    return documents, skipped


def load_file(path: Path, doc_id: str | None = None) -> Iterator[Document]:
    """Yield the document(s) in one file; raise :class:`LoadError` if it cannot be read."""
    doc_id = doc_id or path.name
    suffix = path.suffix.lower()
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise LoadError(f"larger than {MAX_FILE_BYTES // 2**20} MiB")
        raw = path.read_bytes()
    except OSError as exc:
        raise LoadError(f"unreadable: {exc.strerror or exc}") from exc
    if not raw.strip():
        raise LoadError("empty file")
    fingerprint = hashlib.sha256(LOADER_VERSION.encode() + raw).hexdigest()
    if suffix in TEXT_SUFFIXES:
        yield _document(doc_id, decode_text(raw, path), fingerprint)
    elif suffix in HTML_SUFFIXES:
        title, text = html_text(decode_text(raw, path))
        yield _document(doc_id, text, fingerprint, title=title)
    elif suffix in PDF_SUFFIXES:
        text, pages = pdf_text(raw)
        yield _document(doc_id, text, fingerprint, pages=pages)
    elif path.name == BEIR_CORPUS_NAME or suffix == ".jsonl":
        yield from beir_documents(raw)
    else:
        raise LoadError(f"unsupported file type {suffix or '(none)'}")


def decode_text(raw: bytes, path: Path | None = None) -> str:
    """UTF-8 (with or without BOM) first, then a detected encoding; binary data is refused."""
    if b"\x00" in raw[:8192]:
        raise LoadError("binary file (NUL bytes)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = from_bytes(raw)
    # Short Western texts fit several code pages; the commonest one for reports wins ties.
    best = next((m for m in matches if m.encoding in ("cp1252", "latin_1", "iso8859_15")), None) or matches.best()
    if best is None:
        raise LoadError("undecodable text (not UTF-8, no other encoding fits)")
    text = str(best)
    log.warning("%s: decoded as %s (not UTF-8)", path or "text", best.encoding)
    if _control_share(text) > 0.05:
        raise LoadError("binary file (control characters)")
    return text


def html_text(markup: str) -> tuple[str, str]:
    """The title and visible text of an HTML page, one block per line."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(["script", "style", "noscript", "template", "head", "svg", "iframe"]):
        tag.decompose()
    for tag in soup.find_all(_HTML_BLOCKS):
        tag.insert_before("\n")
        tag.insert_after("\n")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    lines = (re.sub(r"[ \t\r\f\v\xa0]+", " ", line).strip() for line in soup.get_text().splitlines())
    return title, "\n\n".join(line for line in lines if line)


def pdf_text(raw: bytes) -> tuple[str, tuple[Page, ...]]:
    """Text per page, pages joined by blank lines, 1-based page numbers kept."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            reader.decrypt("")
        parts: list[str] = []
        pages: list[Page] = []
        offset = 0
        for number, page in enumerate(reader.pages, start=1):
            page_text = (page.extract_text() or "").strip()
            if not page_text:
                continue
            if parts:
                parts.append("\n\n")
                offset += 2
            parts.append(page_text)
            pages.append(Page(number, offset, offset + len(page_text)))
            offset += len(page_text)
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
        raise LoadError(f"broken PDF: {exc}") from exc
    except Exception as exc:  # pypdf raises many kinds on malformed files
        raise LoadError(f"broken PDF: {type(exc).__name__}: {exc}") from exc
    return "".join(parts), tuple(pages)


def beir_documents(raw: bytes) -> Iterator[Document]:
    """Documents of a BEIR ``corpus.jsonl``: ``title``, a blank line, then ``text``."""
    text = decode_text(raw)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            doc_id = str(record["_id"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise LoadError(f"line {number} is not a BEIR record with an _id: {exc}") from exc
        title = str(record.get("title") or "").strip()
        body = str(record.get("text") or "").strip()
        full = f"{title}\n\n{body}" if title and body else (title or body)
        if not full:
            continue
        digest = hashlib.sha256((LOADER_VERSION + line).encode()).hexdigest()
        yield Document(doc_id=doc_id, text=full, title=title, fingerprint=digest)


def _document(doc_id: str, text: str, fingerprint: str, *, title: str = "",
              pages: tuple[Page, ...] = ()) -> Document:
    if not text.strip():
        raise LoadError("no text")
    return Document(doc_id=doc_id, text=text, pages=pages, title=title, fingerprint=fingerprint)


def _walk(root: Path) -> Iterable[tuple[Path, str]]:
    if root.is_file():
        yield root, root.name
        return
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root)
        if not file.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        suffix = file.suffix.lower()
        if suffix == ".jsonl" and file.name != BEIR_CORPUS_NAME:
            continue  # queries, qrels and other side files of a BEIR folder
        if suffix not in SUPPORTED_SUFFIXES:
            log.info("ignoring %s (unsupported type)", file)
            continue
        yield file, rel.as_posix()


def _skip(path: Path, reason: str) -> Skipped:
    log.warning("skipped %s: %s", path, reason)
    return Skipped(str(path), reason)


def _control_share(text: str) -> float:
    sample = text[:8192]
    bad = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\n\r\t\f")
    return bad / max(1, len(sample))
