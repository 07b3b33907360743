"""Load reports from disk into :class:`~qa.types.Document` records.

A document keeps the exact text that every later offset points into. One bad file never
stops a run: it is skipped with a warning that names it. ``LOADERS`` is the one table of
formats by file suffix; the corpus walk, the CLI, the chat's upload and the README all read
it, so a new format is one entry there and one reader module.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from qa.load.mail import read_eml
from qa.load.ocr import read_image
from qa.load.office import read_docx, read_odt, read_pptx, read_rtf
from qa.load.parts import Attachment, LoadError, Part, Progress
from qa.load.pdf import read_pdf
from qa.load.text import beir_documents, decode_text, html_text, read_html, read_text
from qa.types import Document

__all__ = ["LOADERS", "LOADER_VERSION", "SUPPORTED_SUFFIXES", "Format", "LoadError", "Skipped", "decode_text",
           "corpus_files", "describe_formats", "file_fingerprint", "html_text", "load_bytes", "load_corpus",
           "load_file", "load_path"]

log = logging.getLogger("qa")

BEIR_CORPUS_NAME = "corpus.jsonl"
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_NESTING = 3  # attachments of attachments of attachments
LOADER_VERSION = "3"
# BEIR records are read as before: their fingerprints keep version 1, so indexes of them stay valid.
BEIR_VERSION = "1"
Reader = Callable[[bytes, str, "Progress | None"], "list[Part | Attachment]"]


@dataclass(frozen=True)
class Format:
    """One row of the loader table: a reader for some suffixes, and what a person calls it."""

    label: str
    suffixes: tuple[str, ...]
    read: Reader
    paginated: bool = False


FORMATS: tuple[Format, ...] = (
    Format("text", (".txt",), read_text),
    Format("Markdown", (".md", ".markdown"), read_text),
    Format("HTML", (".html", ".htm"), read_html),
    Format("PDF (scans by OCR)", (".pdf",), read_pdf, paginated=True),
    Format("Word", (".docx",), read_docx),
    Format("PowerPoint", (".pptx",), read_pptx, paginated=True),
    Format("OpenDocument text", (".odt",), read_odt),
    Format("RTF", (".rtf",), read_rtf),
    Format("e-mail with attachments", (".eml",), read_eml),
    Format("page images by OCR", (".png", ".jpg", ".jpeg", ".tif", ".tiff"), read_image, paginated=True),
)
LOADERS: dict[str, Format] = {suffix: fmt for fmt in FORMATS for suffix in fmt.suffixes}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(LOADERS)


@dataclass(frozen=True)
class Skipped:
    """A file left out of the corpus, and why."""

    path: str
    reason: str


def describe_formats() -> str:
    """The supported formats for people (upload labels, help texts)."""
    return "; ".join(f"{fmt.label} ({' '.join(fmt.suffixes)})" for fmt in FORMATS) + "; BEIR corpus.jsonl"


def load_corpus(paths: Sequence[str | Path], *, follow_symlinks: bool = False,
                progress: Callable[[str, int, int], None] | None = None) -> tuple[list[Document], list[Skipped]]:
    """Load every supported file under ``paths``; ids are paths relative to each root.

    Unsupported, empty, binary, undecodable or broken files are skipped and reported, and so
    are symlinks leading out of their root unless ``follow_symlinks`` (a corpus folder must not
    make /etc/passwd answerable). ``progress(path, page, pages)`` is called per page of long files.
    """
    documents: list[Document] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    for root in (Path(p) for p in paths):
        if not root.exists():
            skipped.append(_skip(root, "no such file or directory"))
            continue
        for file, doc_id, refusal in _walk(root, follow_symlinks):
            if refusal:
                skipped.append(_skip(file, refusal))
                continue
            pager = (lambda page, total, _f=str(file): progress(_f, page, total)) if progress else _page_log(file)
            try:
                loaded = list(_load_path(file, doc_id, pager))
            except LoadError as exc:
                skipped.append(_skip(file, str(exc)))
                continue
            for item in loaded:
                if isinstance(item, Skipped):
                    skipped.append(item)
                elif item.doc_id in seen:
                    skipped.append(_skip(file, f"duplicate document id {item.doc_id!r}"))
                else:
                    seen.add(item.doc_id)
                    documents.append(item)
    return documents, skipped


def corpus_files(paths: Sequence[str | Path], *, follow_symlinks: bool = False) -> Iterator[tuple[Path, str, str]]:
    """(file, document id, refusal) for every candidate file under ``paths``, as :func:`load_corpus` walks them.

    For a caller that loads files elsewhere (parallel indexing) and must agree on the ids.
    """
    for root in (Path(p) for p in paths):
        if not root.exists():
            yield root, root.name, "no such file or directory"
            continue
        yield from _walk(root, follow_symlinks)


def file_fingerprint(path: Path) -> str:
    """The fingerprint every document read from ``path`` gets (unchanged bytes: unchanged documents)."""
    return hashlib.sha256(LOADER_VERSION.encode() + Path(path).read_bytes()).hexdigest()


def load_path(path: Path, doc_id: str) -> list[Document | Skipped]:
    """The documents in one file, and its attachments it had to skip; :class:`LoadError` if unreadable."""
    return list(_load_path(Path(path), doc_id, None))


def load_file(path: Path, doc_id: str | None = None, progress: Progress | None = None) -> Iterator[Document]:
    """Yield the document(s) in one file; raise :class:`LoadError` if it cannot be read.

    Attachments that cannot be read are logged and left out; the file itself still loads.
    """
    for item in _load_path(Path(path), doc_id or Path(path).name, progress):
        if isinstance(item, Document):
            yield item


def load_bytes(raw: bytes, doc_id: str, name: str, progress: Progress | None = None,
               _depth: int = 0) -> Iterator[Document | Skipped]:
    """The document(s) in ``raw``, read by the suffix of ``name``; attachments become documents too."""
    suffix = Path(name).suffix.lower()
    if not raw.strip():
        raise LoadError("empty file")
    if Path(name).name == BEIR_CORPUS_NAME or suffix == ".jsonl":
        yield from beir_documents(raw, BEIR_VERSION)
        return
    fmt = LOADERS.get(suffix)
    if fmt is None:
        raise LoadError(f"unsupported file type {suffix or '(none)'}")
    fingerprint = hashlib.sha256(LOADER_VERSION.encode() + raw).hexdigest()
    for item in fmt.read(raw, name, progress):
        if isinstance(item, Attachment):
            child = f"{doc_id}/{item.name}"
            if _depth >= MAX_NESTING:
                yield _skip(Path(child), f"attachment nested more than {MAX_NESTING} levels deep")
                continue
            try:
                yield from load_bytes(item.raw, child, item.name, None, _depth + 1)
            except LoadError as exc:
                yield _skip(Path(child), str(exc))
            continue
        sub_id = f"{doc_id}/{item.name}" if item.name else doc_id
        if not item.text.strip():
            raise LoadError("no text")
        yield Document(doc_id=sub_id, text=item.text, pages=item.pages, title=item.title, fingerprint=fingerprint)


def _load_path(path: Path, doc_id: str, progress: Progress | None) -> Iterator[Document | Skipped]:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise LoadError(f"larger than {MAX_FILE_BYTES // 2**20} MiB")
        raw = path.read_bytes()
    except OSError as exc:
        raise LoadError(f"unreadable: {exc.strerror or exc}") from exc
    yield from load_bytes(raw, doc_id, path.name, progress)


def _walk(root: Path, follow_symlinks: bool) -> Iterable[tuple[Path, str, str]]:
    """(file, document id, refusal) for each candidate file under ``root``."""
    if root.is_file():
        yield root, root.name, ""
        return
    real_root = root.resolve()
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not file.is_file():
            continue
        suffix = file.suffix.lower()
        if suffix == ".jsonl" and file.name != BEIR_CORPUS_NAME:
            continue  # queries, qrels and other side files of a BEIR folder
        if suffix not in LOADERS and file.name != BEIR_CORPUS_NAME:
            log.info("ignoring %s (unsupported type)", file)
            continue
        if not follow_symlinks and not file.resolve().is_relative_to(real_root):
            yield file, rel.as_posix(), (f"symlink to {file.resolve()}, outside the corpus folder "
                                         "(QA_FOLLOW_SYMLINKS=1 allows it)")
            continue
        yield file, rel.as_posix(), ""


def _page_log(file: Path) -> Progress:
    """Without a progress callback, a long file still says how far it got (every 50 pages)."""
    def report(page: int, total: int) -> None:
        if total >= 100 and (page % 50 == 0 or page == total):
            log.info("%s: page %d of %d", file, page, total)

    return report


def _skip(path: Path, reason: str) -> Skipped:
    log.warning("skipped %s: %s", path, reason)
    return Skipped(str(path), reason)
