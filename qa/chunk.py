"""Split documents into sentences and passages with exact character offsets.

Sentences come from sentencex (Wikimedia's rule-based, abbreviation-aware segmenter,
in Rust: about 200 times faster than pysbd, which took a sixth of an index build), one
line at a time, corrected by a few rules that matter for reports: a table row is one
sentence, quotes stay with the sentence they open or close, a split before a lower-case
word or inside a word is undone, a list number stays with its item, and an initialism
such as "P.M.F." ends a sentence only when the next word is one that starts sentences
("... disband the P.M.F. Many units ...").
Passages are runs of whole sentences, so a citation never straddles a passage edge.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from qa.types import Document, Sentence

_PARAGRAPH = re.compile(r"\n[ \t\r\f\v\xa0]*\n")
_CLOSERS = "”’\"')]»"
_OPENERS = "“‘\"'(«"
# Words sentencex takes for abbreviations (month "May", Maine "Me.", "No.", "Art.") that end
# sentences as ordinary words; case matters: "No. 5" and "Art. 3" stay whole.
_WORD_STOP = re.compile(r"\b(?:May|me|no|art)\.([ \t]+)(?=[A-Z])")
_ENUMERATOR = re.compile(r"^(?:\(?\d{1,3}|[ivx]{1,4}|[a-z])[.)]$")
_INITIALISM_END = re.compile(r"(?:\b[A-Z]\.){2,}$")
_STARTERS = frozenset(
    """a an the this that these those there then thus many most some several few all
    each every both he she it its we they his her their our i you in on at as after
    before during while when where if although though however but and yet so also
    meanwhile moreover still since for by from with without one two three earlier
    later today yesterday""".split()
)
PROGRESS_EVERY = 256 * 1024  # characters between progress reports inside one document
LEAD_CHARS = 200  # a lead is a headline, not a paragraph
HEADING_CHARS = 120
HEADING_WORDS = 16
HEADING_SEARCH_LINES = 3  # a page's heading is among its first lines (a company name may come first)
_HEADING_ENDS = tuple(".!?,;")
_LIST_ITEM = re.compile(r"^(?:[•◦▪●■\-–—*]|\(?[a-z0-9]{1,3}[.)])\s")


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
    reported = start
    for para_start, para_end in _paragraphs(text, start, end):
        if progress and para_start - reported >= PROGRESS_EVERY:
            progress(para_start)
            reported = para_start
        for s, e in _sentences_of(text[para_start:para_end]):
            while s < e and text[para_start + s].isspace():
                s += 1
            while e > s and text[para_start + e - 1].isspace():
                e -= 1
            if e > s:
                spans.append((para_start + s, para_start + e))
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


def passage_lead(title: str, heading: str = "", limit: int = LEAD_CHARS) -> str:
    """What a passage is searched with: its document's title, then its page's heading.

    A passage from the middle of a news story rarely names the story ("the minister said
    she would step down"): read with the headline, it is found by questions that name it.
    A table row in the middle of a filing's page never says which statement it belongs to:
    read with the page's heading ("Consolidated Balance Sheets") it is found by questions
    that name the statement. A report without a title gets no title line: its first
    sentence before every passage blurred them (seeds answer recall 0.81 -> 0.76-0.78).
    The lead is searched, never cited: citations stay offsets into the document text.
    """
    lines = [" ".join(part.split())[:limit].rstrip() for part in (title, heading)]
    return "\n".join(dict.fromkeys(line for line in lines if line))


def is_heading_line(line: str) -> bool:
    """Whether a line reads as a heading: short, mostly letters, not a sentence, a table row or a list item.

    "Consolidated Balance Sheets" and "CONSOLIDATED STATEMENTS OF CASH FLOWS" are headings;
    "(In millions, except per share data)", "ADOBE INC.", "Net income\t$ 4,756" and a wrapped
    paragraph are not. Cells spaced out by the PDF ("CONSOLIDATED\tBALANCE\tSHEETS") count
    when every cell is a single word.
    """
    cells = line.strip().split("\t")
    if len(cells) > 1 and any(len(c.split()) > 1 for c in cells):
        return False  # a table row
    text = " ".join(line.split())
    if not 3 <= len(text) <= HEADING_CHARS or len(text.split()) > HEADING_WORDS:
        return False
    if not (text[0].isupper() or text[0].isdigit()) or text.endswith(_HEADING_ENDS) or _LIST_ITEM.match(text):
        return False
    letters = sum(ch.isalpha() for ch in text)
    return letters >= 3 and letters >= 0.6 * sum(not ch.isspace() for ch in text)


def page_headings(doc: Document) -> dict[int, str]:
    """Each page's heading: a heading line among the page's first lines, else the last page's.

    What a filing's page is about is said at its top ("Consolidated Statements of Cash
    Flows"), once; a statement continued on the next page carries the heading over.
    Running headers are already gone (the PDF loader drops lines repeating across pages).
    """
    out: dict[int, str] = {}
    carried = ""
    for page in doc.pages:
        lines = [ln for ln in doc.text[page.start:page.end].split("\n") if ln.strip()][:HEADING_SEARCH_LINES]
        found = next((" ".join(ln.split()) for ln in lines if is_heading_line(ln)), "")
        carried = found or carried
        out[page.number] = carried
    return out


# The three financial statements, by the names filings and questions give them.
STATEMENTS: dict[str, str] = {
    "balance": r"balance sheets?|statements? of financial (?:position|condition)",
    "income": r"income statements?|statements? of (?:consolidated )?(?:income|operations|earnings)"
              r"(?: and comprehensive (?:income|loss|earnings)(?:\s*/\s*loss|\s*\(loss\))?)?|"
              r"profit and loss(?: statements?| accounts?)?",
    "cash": r"cash flows? statements?|statements? of (?:consolidated )?cash flows?",
}
STATEMENT_SEARCH_LINES = 6  # a statement's name comes after "Item 8" and the company's name at most
# A company's name: capitalized words (case-sensitive), then a legal form or "and Subsidiaries"; so
# "Reconciliation to the Company balance sheet" is no company name before a statement's.
_NAME_WORDS = r"(?-i:[A-Z0-9][\w.,&'’-]*(?:\s+(?:&|and|of|the|[A-Z0-9][\w.,&'’-]*)){0,6}?)"
_SUBSIDIARIES = r",?\s+and\s+(?:its\s+)?(?:consolidated\s+)?subsidiar(?:y|ies)(?:\s+companies)?"
_COMPANY = (_NAME_WORDS + r"(?:\s+(?:inc\.?|incorporated|corporation|corp\.?|company|co\.|ltd\.?|limited|plc|n\.v\.|"
            r"s\.a\.|llc|group)(?:" + _SUBSIDIARIES + r")?|" + _SUBSIDIARIES + r")[,.]?")
_UNITS = (r"(?:\(.{0,80}?\)|(?:\$|(?:dollars|amounts)\s+in\b|in\s+(?:millions|thousands|billions))[^()]{0,100}|"
          r"-\s*\(?continued\)?|(?:for\s+the\s+)?(?:fiscal\s+)?(?:years?|quarters?|(?:three|six|nine|twelve)\s+months)"
          r"\s+ended\b[^()]{0,60})")
_STATEMENT_HEADING = {kind: re.compile(r"(?:" + _COMPANY + r"\s+)?(?:u\.s\.\s+gaap\s+)?"
                                       r"(?:(?:condensed|consolidated|combined|interim|unaudited)\s+)*"
                                       r"(?:" + pattern + r")(?:\s+" + _COMPANY + r")?(?:\s*" + _UNITS + r"){0,2}",
                                       re.IGNORECASE)
                      for kind, pattern in STATEMENTS.items()}


def statement_of_heading(line: str) -> str:
    """The financial statement a heading line names ("balance", "income", "cash"), else "".

    The whole line must be the statement's name, after the company's name at most and
    before a parenthesis ("(continued)", "(Unaudited)"): "Consolidated Balance Sheets" and
    "NIKE, Inc. Consolidated Statements of Income" are statements; "Supplemental balance
    sheet information related to leases", "Statements of Operations:" in a five-year table
    and "Notes to Consolidated Financial Statements" are not.
    """
    text = " ".join(line.split())
    return next((kind for kind, heading in _STATEMENT_HEADING.items() if heading.fullmatch(text)), "")


def page_statements(doc: Document) -> dict[int, str]:
    """The financial statement each page of ``doc`` presents ("" for none).

    A question that names a statement ("…using the balance sheet") is answered from that
    statement's page, which holds numbers and the statement's name only once: ranked by
    its words it comes after every page of prose that mentions the balance sheet. A page
    that opens with a table row continues the statement before it (a balance sheet's second
    page may hold heading-like rows such as "Commitments and contingencies").
    """
    out: dict[int, str] = {}
    carried = ""
    for page in doc.pages:
        lines = [ln for ln in doc.text[page.start:page.end].split("\n") if ln.strip()][:STATEMENT_SEARCH_LINES]
        named = next((kind for kind in map(statement_of_heading, lines) if kind), "")
        continued = bool(lines) and "\t" in lines[0]
        carried = named or (carried if continued else "")
        out[page.number] = carried
    return out


def passage_leads(doc: Document, pages: Sequence[int | None], rule: int = 6, *, keyword: bool = False) -> list[str]:
    """The lead of each passage of ``doc`` (given by its page): :func:`passage_lead` under lead ``rule``,
    for the dense embedding or, with ``keyword``, for BM25's term counts.

    Rule 4 is the title alone (indexes built before page headings); rule 5 adds the page's heading.
    Rule 6 keeps both for the embedding but counts only the heading in BM25: a title repeated in
    every passage of a long story lends each passage the same term matches, so a question that
    shares words with the headlines of other stories on the same topic fills BM25's top with their
    passages. Measured on RealTimeQA (149 questions with a gold article, 3,771 articles): gold
    article hit@10 0.772 -> 0.792, nDCG@10 0.527 -> 0.554, gold article in the answer's 5 passages
    0.577 -> 0.624; SciFact hybrid nDCG@10 0.7279 -> 0.7250; FinanceBench, seeds unchanged
    (eval/README.md, "Passages read with their title").
    """
    headings = page_headings(doc) if rule >= 5 and doc.pages else {}
    title = "" if keyword and rule >= 6 else doc.title
    return [passage_lead(title, headings.get(page, "") if page is not None else "") for page in pages]


def searched_text(lead: str, passage: str) -> str:
    """The text a passage is embedded and keyword-indexed as: its lead, then itself.

    A line of the lead the passage already opens with (the document's first passage holds
    the title, a page's first passage its heading) is left out.
    """
    head = " ".join(passage[:len(lead) * 2 + 40].split())
    kept = [line for line in lead.split("\n") if line and line not in head]
    return "\n".join([*kept, passage]) if kept else passage


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
    for s, e in _opening_quotes_forward(text, spans):
        # A closing quote or bracket the segmenter put at the head of the next sentence.
        # A straight quote after a space opens the next sentence instead (moved there above).
        gap = text[out[-1][1]:s] if out else ""
        if out and text[s] in _CLOSERS and gap.strip() == "" and (gap == "" or text[s] not in "\"'"):
            k = s
            while k < e and (text[k] in _CLOSERS):
                k += 1
            out[-1] = (out[-1][0], k)
            while k < e and text[k].isspace():
                k += 1
            s = k
            if s >= e:
                continue
        # A cut with no space after it ("AMAZON.COM") is inside a word, not between sentences.
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], e)
            continue
        # A list number ("18.") the segmenter cut off the item it numbers, on the same line.
        if out and _ENUMERATOR.match(text[out[-1][0]:out[-1][1]]) and "\n" not in text[out[-1][1]:s]:
            out[-1] = (out[-1][0], e)
            continue
        # A split before a lower-case word was an abbreviation, not a sentence end.
        if out and text[s].islower() and "\n" not in text[out[-1][1]:s]:
            out[-1] = (out[-1][0], e)
            continue
        out.append((s, e))
    return [piece for s, e in out for part in _split_words_taken_for_abbreviations(text, s, e)
            for piece in _split_initialisms(text, *part)]


def _opening_quotes_forward(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """An opening quote left at the tail of a sentence (`he said. “`) opens the next one."""
    out = list(spans)
    for i in range(len(out) - 1):
        s, e = out[i]
        k = e
        while k > s and text[k - 1] in _OPENERS:
            k -= 1
        if s < k < e and text[k - 1].isspace() and text[e:out[i + 1][0]].strip() == "":
            while k > s and text[k - 1].isspace():
                k -= 1
            out[i] = (s, k)
            out[i + 1] = (e - len(text[k:e].lstrip()), out[i + 1][1])
    return [(s, e) for s, e in out if e > s]


def _split_words_taken_for_abbreviations(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Split after an ordinary word sentencex reads as an abbreviation ("in May. Exports rose.")."""
    pieces = []
    for match in _WORD_STOP.finditer(text, start, end):
        pieces.append((start, match.start(1)))
        start = match.end(1)
    pieces.append((start, end))
    return pieces


def _split_initialisms(text: str, start: int, end: int) -> list[tuple[int, int]]:
    pieces = []
    for match in re.finditer(r"(?:\b[A-Z]\.){2,}(\s+)([A-Za-z]+)", text[start:end]):
        if match.group(2).lower() in _STARTERS and match.group(2)[0].isupper():
            cut = start + match.start(1)
            pieces.append((start, cut))
            start = start + match.end(1)
    pieces.append((start, end))
    return pieces


def _sentences_of(paragraph: str) -> list[tuple[int, int]]:
    """Sentence spans of one paragraph from sentencex (Wikimedia's rule-based segmenter, in Rust).

    Each line is segmented on its own: inside a paragraph a line break is a table row, a list
    item or a heading (the loaders join a PDF's wrapped lines), never the middle of a sentence.
    A table row (cells apart by tabs) is one sentence whatever its cells hold: "Other\t61\t(54)".
    """
    import sentencex

    spans: list[tuple[int, int]] = []
    at = 0
    for line in paragraph.split("\n"):
        if "\t" in line.strip():
            spans.append((at, at + len(line)))
        else:
            spans.extend((at + b["start_index"], at + b["end_index"])
                         for b in sentencex.get_sentence_boundaries("en", line))
        at += len(line) + 1
    return spans
