"""OCR through Tesseract (Debian's tesseract-ocr, called by pytesseract).

Used for PDF pages without a usable text layer and for images of pages. Tesseract's
blocks and paragraphs become paragraphs; its lines are joined as the PDF reader joins them.
"""
from __future__ import annotations

import logging
import shutil
from typing import TYPE_CHECKING

from qa.load.parts import HYPHEN_MARK, LoadError, Part, Progress, fold, join_pages, resolve_hyphens

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger("qa")

OCR_SECONDS = 180
INSTALL_HINT = "apt-get install tesseract-ocr tesseract-ocr-eng"


def ocr_available() -> bool:
    """Whether the tesseract program is on PATH."""
    return shutil.which("tesseract") is not None


def ocr_image(image: "Image", label: str, lang: str = "eng") -> str:
    """The text Tesseract reads in ``image``: paragraphs separated by blank lines."""
    if not ocr_available():
        raise LoadError(f"{label} has no text layer and Tesseract is not installed ({INSTALL_HINT})")
    import pytesseract

    try:
        data = pytesseract.image_to_data(image, lang=lang, output_type=pytesseract.Output.DICT,
                                         timeout=OCR_SECONDS)
    except RuntimeError as exc:  # pytesseract's timeout
        raise LoadError(f"{label}: OCR took over {OCR_SECONDS} s") from exc
    except pytesseract.TesseractError as exc:
        raise LoadError(f"{label}: OCR failed: {exc}") from exc
    paragraphs: dict[tuple[int, int], list[list[str]]] = {}
    lines: dict[tuple[int, int, int], list[str]] = {}
    for i, word in enumerate(data["text"]):
        word = (word or "").strip()
        if not word or float(data["conf"][i]) < 0:
            continue
        key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        if key not in lines:
            lines[key] = []
            paragraphs.setdefault(key[:2], []).append(lines[key])
        lines[key].append(word)
    out = []
    for para in paragraphs.values():
        text = ""
        for words in para:
            line = " ".join(words)
            if text.endswith("-") and len(text) > 1 and text[-2].isalpha() and line[:1].isalpha():
                text = text[:-1] + HYPHEN_MARK + line
            else:
                text = f"{text} {line}" if text else line
        out.append(text)
    return "\n\n".join(out)


def read_image(raw: bytes, name: str, progress: Progress | None = None) -> list[Part]:
    """An image of a page (PNG, JPEG, TIFF; every frame of a multi-page TIFF is a page), read by OCR."""
    import io

    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(raw))
        frames = [frame.convert("L") for frame in ImageSequence.Iterator(image)]
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise LoadError(f"unreadable image: {exc}") from exc
    pages = []
    for number, frame in enumerate(frames, start=1):
        text = ocr_image(frame, f"{name} page {number}")
        if not text.strip():
            log.warning("%s: page %d: OCR found no text", name, number)
        pages.append((number, text))
        if progress:
            progress(number, len(frames))
    texts = resolve_hyphens([fold(t) for _, t in pages])
    text, spans = join_pages(zip([n for n, _ in pages], texts))
    if not text:
        raise LoadError("no text: OCR found nothing in the image")
    return [Part(text, spans)]
