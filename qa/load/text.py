"""Plain text, Markdown, HTML and BEIR ``corpus.jsonl``.

Text is decoded by its BOM (UTF-8/16/32), else as UTF-8; a file that is mostly UTF-8 with a
few bad bytes keeps its UTF-8 and gets U+FFFD for the bad bytes (a legacy code page would
garble every quote mark), with a warning. HTML goes through libxml2 (lxml), which is
iterative, and is refused past a nesting depth no real page reaches.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Iterator

from qa.load.parts import LoadError, Part, Progress
from qa.types import Document

log = logging.getLogger("qa")

MAX_HTML_DEPTH = 1000
HTML_SECONDS = 30.0
_BOMS = [(codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]
_HTML_BLOCKS = frozenset(
    "p div section article header footer main aside nav li ul ol table tr td th h1 h2 h3 h4 h5 h6 "
    "blockquote pre figcaption dd dt hr br title caption form fieldset details summary address".split())
_HTML_HIDDEN = frozenset("script style noscript template head svg iframe object embed".split())


def decode_text(raw: bytes, path: Path | str | None = None) -> str:
    """Decode by BOM, else UTF-8 (with replacement if mostly UTF-8), else a detected code page."""
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise LoadError(f"broken {encoding.upper()} text: {exc.reason}") from exc
    if b"\x00" in raw[:8192]:
        raise LoadError("binary file (NUL bytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    loose = raw.decode("utf-8", errors="replace")
    bad = loose.count("\ufffd")
    good = sum(1 for ch in loose if ord(ch) > 127 and ch != "\ufffd")
    if good >= bad:  # valid multi-byte sequences outnumber the bad bytes: UTF-8 with a few errors
        log.warning("%s: not valid UTF-8; %d bad byte(s) replaced with U+FFFD", path or "text", bad)
        return loose
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


def read_text(raw: bytes, name: str, progress: Progress | None = None) -> list[Part]:
    """A .txt or .md file, as it is."""
    return [Part(decode_text(raw, name))]


def read_html(raw: bytes, name: str, progress: Progress | None = None) -> list[Part]:
    """An HTML page: its title and visible text."""
    title, text = html_text(decode_text(raw, name))
    return [Part(text, title=title)]


def html_text(markup: str, *, max_depth: int = MAX_HTML_DEPTH, seconds: float = HTML_SECONDS) -> tuple[str, str]:
    """The title and visible text of an HTML page, one block per paragraph.

    Raises :class:`LoadError` past ``max_depth`` nested elements or ``seconds`` of work.
    """
    import lxml.html
    from lxml import etree

    started = time.monotonic()
    if not markup.strip():
        return "", ""
    # libxml2 silently truncates past 256 levels (2,048 with huge_tree); count the open tags
    # first so a pathological file is refused by name instead of read as a truncated tree.
    depth = _tag_depth(markup)
    if depth > max_depth:
        raise LoadError(f"HTML nested {depth} levels deep (limit {max_depth})")
    try:
        parser = lxml.html.HTMLParser(remove_comments=True, remove_pis=True, huge_tree=True, encoding="utf-8")
        root = lxml.html.document_fromstring(markup.encode("utf-8"), parser=parser)
    except (etree.ParserError, ValueError) as exc:
        raise LoadError(f"unreadable HTML: {exc}") from exc
    title_el = root.find(".//title")
    title = " ".join((title_el.text_content() if title_el is not None else "").split())
    pieces: list[str] = []
    hidden = 0
    for n, (event, el) in enumerate(etree.iterwalk(root, events=("start", "end"))):
        if n % 4096 == 0 and time.monotonic() - started > seconds:
            raise LoadError(f"HTML took over {seconds:.0f} s to read")
        tag = el.tag if isinstance(el.tag, str) else ""
        tag = tag.lower()
        if event == "start":
            if tag in _HTML_HIDDEN:
                hidden += 1
            elif not hidden:
                if tag in _HTML_BLOCKS:
                    pieces.append("\n")
                if el.text and isinstance(el.tag, str):
                    pieces.append(el.text)
        else:
            if tag in _HTML_HIDDEN:
                hidden -= 1
            elif not hidden and tag in _HTML_BLOCKS:
                pieces.append("\n")
            if not hidden and el.tail:
                pieces.append(el.tail)
    lines = (re.sub(r"[ \t\r\f\v\xa0]+", " ", line).strip() for line in "".join(pieces).splitlines())
    return title, "\n\n".join(line for line in lines if line)


def beir_documents(raw: bytes, version: str) -> Iterator[Document]:
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
        digest = hashlib.sha256((version + line).encode()).hexdigest()
        yield Document(doc_id=doc_id, text=full, title=title, fingerprint=digest)


_OPEN_TAG = re.compile(r"<\s*([a-zA-Z][\w:-]*)[^>]*?(/?)>|<\s*/\s*([a-zA-Z][\w:-]*)\s*>")
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr p li td th tr dt dd option".split())


def _tag_depth(markup: str) -> int:
    """The deepest nesting of non-void elements, counted in one linear pass over the tags."""
    depth = deepest = 0
    for match in _OPEN_TAG.finditer(markup):
        if match.group(3):
            depth = max(0, depth - 1)
        elif not match.group(2) and match.group(1).lower() not in _VOID:
            depth += 1
            deepest = max(deepest, depth)
    return deepest


def _control_share(text: str) -> float:
    sample = text[:8192]
    bad = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\n\r\t\f")
    return bad / max(1, len(sample))
