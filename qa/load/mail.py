"""E-mail (.eml): headers and body as one document, each attachment as its own document."""
from __future__ import annotations

import re
from email import policy
from email.parser import BytesParser

from qa.load.parts import Attachment, LoadError, Part, Progress, fold
from qa.load.text import html_text

HEADERS = ("Subject", "From", "To", "Cc", "Date")


def read_eml(raw: bytes, name: str, progress: Progress | None = None) -> list[Part | Attachment]:
    """The message (headers, then the plain or HTML body) and its attachments."""
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
    except Exception as exc:  # the parser is lenient; this is a last resort
        raise LoadError(f"broken e-mail: {type(exc).__name__}: {exc}") from exc
    if not any(message[h] for h in HEADERS) and not message.get_content_type().startswith("multipart"):
        raise LoadError("not an e-mail (no From, To, Subject or Date header)")
    blocks = [f"{h}: {' '.join(str(message[h]).split())}" for h in HEADERS if message[h]]
    body = message.get_body(preferencelist=("plain", "html"))
    if body is not None:
        try:
            content = body.get_content()
        except (LookupError, ValueError) as exc:
            content = body.get_payload(decode=True).decode("utf-8", errors="replace")
        if body.get_content_type() == "text/html":
            blocks.append(html_text(content)[1])
        else:
            blocks.extend(_unwrap(content))
    out: list[Part | Attachment] = [Part(fold("\n\n".join(b for b in blocks if b.strip())),
                                         title=" ".join(str(message["Subject"] or "").split()))]
    used: set[str] = set()
    for number, part in enumerate(message.iter_attachments(), start=1):
        filename = (part.get_filename() or f"attachment-{number}").replace("/", "_").replace("\\", "_")
        while filename in used:
            filename = "_" + filename
        used.add(filename)
        payload = part.get_payload(decode=True)
        if payload:
            out.append(Attachment(filename, payload))
    return out


def _unwrap(text: str) -> list[str]:
    """Plain-text paragraphs with their hard line wraps (72 columns, format=flowed) joined."""
    paragraphs = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n"))
    return [" ".join(p.split()) for p in paragraphs if p.strip()]
