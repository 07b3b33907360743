"""Every format loads as a person reads it, with offsets and pages later stages can trust.

Fixtures are made here from text: PDFs printed by Chromium, Word files by python-docx,
slides by python-pptx, scans rendered by PDFium and saved by Pillow, read back by Tesseract.
"""
from __future__ import annotations

import email.message
import io
import json
import logging
import re
import zipfile
from pathlib import Path

import pytest

import qa
from qa.load import LOADERS, SUPPORTED_SUFFIXES, LoadError, load_corpus, load_file
from qa.load.parts import HYPHEN_MARK, resolve_hyphens
from tests.pdfs import CHROMIUM, TESSERACT, print_to_pdf, report_html, scan_pdf, write_docx

ROOT = Path(__file__).resolve().parent.parent
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
needs_tesseract = pytest.mark.skipif(TESSERACT is None, reason="tesseract-ocr not installed (.ci/run installs it)")

PARAS = [
    "The ministry said the three desalination plants would cost 40 million dollars and open on 12 September. "
    "Officials added that the contract was signed after a long tender in which five companies took part, "
    "and that the first plant would serve the northern districts before the summer.",
    "Critics in parliament questioned the price. They noted that a similar plant in the south cost far less, "
    "asked why the tender had been kept secret for months, and demanded that the auditor publish the full "
    "file before any money is paid to the winning consortium.",
    "The spokesman of the new political alliance, Ahmed al-Asadi, rejected the criticism. He said the plants "
    "were urgently needed, that the price included ten years of maintenance, and that the ministry would "
    "publish the documents once the courts had ruled on a pending complaint.",
]


def _one(path: Path):
    docs = list(load_file(path))
    assert len(docs) == 1
    return docs[0]


def _page_of(doc, needle: str) -> int:
    at = doc.text.index(needle)
    return next(p.number for p in doc.pages if p.start <= at < p.end)


# ---------------------------------------------------------------- PDF


@needs_chromium
def test_a_statements_rows_are_found_by_the_statements_name(tmp_path):
    """A filing's table rows never say which statement they belong to: each passage of a PDF page is
    searched with the page's heading, so "balance sheets" finds the
    inventories row; quotes stay the page's own text. Without leads the row is not found."""
    from qa.index import load_index, terms
    from qa.settings import Settings

    rows = "".join(f"<tr><td>{name} {i}</td><td>{100 + i:,}</td><td>{90 + i:,}</td></tr>"
                   for i, name in enumerate(["Trade receivables", "Prepaid expenses", "Deferred taxes",
                                             "Other current assets", "Goodwill"] * 8))
    rows += "<tr><td>Merchandise inventories</td><td>5,409</td><td>5,209</td></tr>"
    markup = ("<!doctype html><html><head><meta charset='utf-8'><title>Acme annual report 2023</title></head><body>"
              "<h1>Consolidated Balance Sheets</h1><table>" + rows + "</table></body></html>")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    print_to_pdf(markup, corpus / "acme.pdf")
    found = {}
    for lead in ("title", "none"):
        s = Settings.from_env(passage_lead=lead)
        qa.index_paths([corpus], index=tmp_path / lead, settings=s)
        store = load_index(tmp_path / lead, s).store
        ids = [int(i) for i in store.ids_of_documents(["acme.pdf"])]
        row = next(i for i in ids if "Merchandise inventories" in store.passage(i).text)
        assert "Balance" not in store.passage(row).text, "the test needs a passage below the heading"
        searched = next(store.keyword_texts([row]))
        if lead == "title":
            assert searched.startswith("Consolidated Balance Sheets\n")  # (the loader reads no PDF title)
        index = load_index(tmp_path / lead, s)
        found[lead] = row in {pid for pid, _ in index.keyword.search(terms("balance sheets"), 10)}
        result = qa.answer("What were merchandise inventories on the balance sheet?", index=tmp_path / lead, settings=s)
        document = index.store.document("acme.pdf")
        assert all(document.text[c.start:c.end] == c.quote and c.page == 1 for c in result.citations)
    assert found == {"title": True, "none": False}


@needs_chromium
def test_printed_pdf_reads_as_paragraphs(tmp_path):
    # A ligature character (U+FB00) in the page, Chromium's running header (date, title) and
    # footer (address, "1/3") on every page, a table.
    paras = [f"Section {i}. " + p.replace("official", "oﬀicial").replace("Officials", "Oﬀicials")
             for i in range(10) for p in PARAS]
    table = [["Item", "2022", "2021"], ["Total revenue", "17,606", "15,785"], ["Net income", "4,756", "4,822"]]
    markup = report_html("Quarterly water brief", paras, table=table, heading=False)
    doc = _one(print_to_pdf(markup, tmp_path / "water.pdf", header_footer=True))
    for para in paras:
        assert para.replace("ﬀ", "ff") in doc.text  # a line break inside a paragraph is a space
    assert "ﬀ" not in doc.text and "Officials added" in doc.text
    assert "Quarterly water brief" not in doc.text and "file:" not in doc.text  # header, footer left out
    assert not re.search(r"\b\d/\d\b", doc.text)  # nor Chromium's page numbers
    assert "Total revenue\t17,606\t15,785" in doc.text.splitlines()  # a table row stays one line
    assert "Net income\t4,756\t4,822" in doc.text.splitlines()
    assert [p.number for p in doc.pages] == list(range(1, len(doc.pages) + 1)) and len(doc.pages) >= 2
    for page in doc.pages:
        assert doc.text[page.start:page.end].strip() == doc.text[page.start:page.end]


@needs_chromium
def test_two_column_pages_keep_reading_order(tmp_path):
    paras = [f"Paragraph number {i} begins here. " + PARAS[i % 3] for i in range(8)]
    doc = _one(print_to_pdf(report_html("Columns", paras, columns=2, heading=False), tmp_path / "cols.pdf"))
    positions = [doc.text.find(f"Paragraph number {i} begins here.") for i in range(8)]
    assert all(p >= 0 for p in positions) and positions == sorted(positions)
    for para in paras:
        assert para in doc.text


def test_page_numbers_and_repeated_footers_are_left_out(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(tmp_path / "numbered.pdf") as pdf:
        for n in range(1, 5):
            fig = plt.figure()
            fig.text(0.1, 0.95, "ACME Corp | Annual Report 2022")
            fig.text(0.1, 0.5, f"Body sentence number {n} of the report.")
            fig.text(0.5, 0.03, str(n))
            pdf.savefig(fig)
            plt.close(fig)
    doc = _one(tmp_path / "numbered.pdf")
    assert "ACME" not in doc.text
    assert doc.text.split("\n\n") == [f"Body sentence number {n} of the report." for n in range(1, 5)]
    assert [p.number for p in doc.pages] == [1, 2, 3, 4]
    assert _page_of(doc, "number 3") == 3


def test_line_end_hyphens_are_decided_by_the_document():
    texts = [f"The govern{HYPHEN_MARK}ment said so. The government agreed.",
             f"Iranian{HYPHEN_MARK}backed units and other Iranian-backed groups.",
             f"A self{HYPHEN_MARK}funded plan; the state-{HYPHEN_MARK}owned firm."]
    out = resolve_hyphens(texts)
    assert out[0].startswith("The government said")
    assert out[1].startswith("Iranian-backed units")
    assert "self-funded" in out[2] and HYPHEN_MARK not in "".join(out)


def test_password_protected_pdf_names_the_file(tmp_path):
    from pypdf import PdfReader, PdfWriter

    from tests.pdfs import write_pdf

    plain = write_pdf(tmp_path / "plain.pdf", ["Secret figures."])
    writer = PdfWriter()
    writer.add_page(PdfReader(plain).pages[0])
    writer.encrypt(user_password="hunter2", owner_password="owner", algorithm="AES-128")
    with open(tmp_path / "locked.pdf", "wb") as fh:
        writer.write(fh)
    with pytest.raises(LoadError, match=r"locked\.pdf.*password"):
        list(load_file(tmp_path / "locked.pdf"))
    _, skipped = load_corpus([tmp_path / "locked.pdf"])
    assert "password" in skipped[0].reason and "decrypted" not in skipped[0].reason


@needs_chromium
@needs_tesseract
def test_garbage_text_layer_is_read_by_ocr(tmp_path):
    # Without its ToUnicode map, Chromium's font gives glyph ids ("7KH OHDGHU" for "The leader").
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import NameObject

    source = print_to_pdf(report_html("x", PARAS[:1], heading=False), tmp_path / "ok.pdf")
    writer = PdfWriter()
    for page in PdfReader(source).pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            if "/ToUnicode" in font:
                del font[NameObject("/ToUnicode")]
        writer.add_page(page)
    with open(tmp_path / "garbled.pdf", "wb") as fh:
        writer.write(fh)
    doc = _one(tmp_path / "garbled.pdf")
    assert "desalination plants" in doc.text and "40 million dollars" in doc.text
    assert [p.number for p in doc.pages] == [1]


@needs_chromium
@needs_tesseract
def test_scanned_pdf_is_read_by_ocr_with_page_numbers(tmp_path, caplog):
    from PIL import Image

    printed = print_to_pdf(report_html("Scan", PARAS * 3, heading=False), tmp_path / "printed.pdf")
    scan = scan_pdf(printed, tmp_path / "scan.pdf", dpi=150)
    # A blank page (an empty image) is reported, not silently empty.
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(scan))
    pages = [pdf[i].render(scale=150 / 72).to_pil().convert("L") for i in range(len(pdf))]
    pdf.close()
    blank = Image.new("L", pages[0].size, 255)
    pages[0].save(tmp_path / "scan2.pdf", "PDF", resolution=150, save_all=True, append_images=pages[1:] + [blank])
    with caplog.at_level(logging.WARNING, logger="qa"):
        doc = _one(tmp_path / "scan2.pdf")
    assert [p.number for p in doc.pages] == list(range(1, len(pages) + 1))
    assert "40 million dollars" in doc.text and "desalination" in doc.text
    assert "\n" not in doc.text.split("\n\n")[0]  # OCR lines joined into paragraphs
    assert any(f"page {len(pages) + 1} has no text layer and OCR found no text" in r.getMessage()
               for r in caplog.records)


@needs_tesseract
def test_page_image_is_read_by_ocr(tmp_path):
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", (1700, 500), 255)
    font = ImageFont.truetype("DejaVuSans.ttf", 40) if _has_font("DejaVuSans.ttf") else ImageFont.load_default(40)
    ImageDraw.Draw(image).text((60, 200), "Revenue grew to 17,606 million dollars.", fill=0, font=font)
    image.save(tmp_path / "page.png")
    doc = _one(tmp_path / "page.png")
    assert "17,606 million dollars" in doc.text and doc.pages[0].number == 1


def _has_font(name: str) -> bool:
    from PIL import ImageFont

    try:
        ImageFont.truetype(name, 10)
        return True
    except OSError:
        return False


def test_long_pdf_reports_progress_per_page_with_bounded_memory(tmp_path):
    import psutil
    from pypdf import PdfReader, PdfWriter

    from tests.pdfs import write_pdf

    one = write_pdf(tmp_path / "one.pdf", ["A page of the long report, with a sentence on it."])
    writer = PdfWriter()
    page = PdfReader(one).pages[0]
    for _ in range(500):
        writer.add_page(page)
    with open(tmp_path / "long.pdf", "wb") as fh:
        writer.write(fh)
    seen: list[tuple[str, int, int]] = []
    before = psutil.Process().memory_info().rss
    docs, skipped = load_corpus([tmp_path / "long.pdf"], progress=lambda f, n, total: seen.append((f, n, total)))
    grown = psutil.Process().memory_info().rss - before
    assert not skipped and len(docs[0].pages) == 500
    assert [n for _, n, _ in seen] == list(range(1, 501)) and {t for _, _, t in seen} == {500}
    assert grown < 300 * 2**20


# ---------------------------------------------------------------- office, mail


def test_docx_headings_paragraphs_tables(tmp_path):
    table = [["Region", "Plants", "Cost"], ["North", "2", "25 million"], ["South", "1", "15 million"]]
    path = write_docx(tmp_path / "brief.docx", "Water brief", PARAS, table=table)
    doc = _one(path)
    blocks = doc.text.split("\n\n")
    assert blocks[0] == "Water brief" and doc.title == "Water brief"
    assert "North\t2\t25 million" in doc.text.splitlines()
    for para in PARAS:
        assert para in blocks


def test_docx_that_is_another_zip_is_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photos/cat.jpg", b"\xff\xd8\xff not really")
    (tmp_path / "report.docx").write_bytes(buffer.getvalue())
    (tmp_path / "text.docx").write_text("just text, not a zip at all")
    docs, skipped = load_corpus([tmp_path])
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert not docs and "not a Word .docx file" in reasons["report.docx"] and "not a Word" in reasons["text.docx"]


def test_pptx_slide_number_is_the_page(tmp_path):
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    for n, body in enumerate(["Revenue rose 12 percent.", "Costs fell by 40 million dollars."], start=1):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = f"Slide title {n}"
        slide.placeholders[1].text = body
    rows = deck.slides[1].shapes.add_table(2, 2, Inches(1), Inches(5), Inches(4), Inches(1)).table
    for r, row in enumerate([["Quarter", "Sales"], ["Q1", "4,756"]]):
        for c, value in enumerate(row):
            rows.cell(r, c).text = value
    deck.save(tmp_path / "deck.pptx")
    doc = _one(tmp_path / "deck.pptx")
    assert [p.number for p in doc.pages] == [1, 2]
    assert _page_of(doc, "40 million dollars") == 2 and _page_of(doc, "Slide title 1") == 1
    assert "Q1\t4,756" in doc.text.splitlines()


def test_eml_body_and_attachments_are_documents(tmp_path):
    docx_path = write_docx(tmp_path / "attached.docx", "Attached brief", PARAS[:1])
    message = email.message.EmailMessage()
    message["Subject"] = "Desalination tender"
    message["From"] = "ministry@example.org"
    message["To"] = "desk@example.org"
    message["Date"] = "Mon, 11 Sep 2023 10:00:00 +0000"
    message.set_content("Dear colleagues,\n\nthe tender closed today and the\nwinner will be named on Friday.\n")
    message.add_attachment(docx_path.read_bytes(), maintype="application",
                           subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
                           filename="brief.docx")
    message.add_attachment("Budget: 40 million dollars.".encode(), maintype="text", subtype="plain",
                           filename="budget.txt")
    message.add_attachment(b"\x00\x01 not an image", maintype="image", subtype="png", filename="logo.png")
    corpus = tmp_path / "mail"
    corpus.mkdir()
    (corpus / "tender.eml").write_bytes(bytes(message))
    docs, skipped = load_corpus([corpus])
    by_id = {d.doc_id: d for d in docs}
    assert set(by_id) == {"tender.eml", "tender.eml/brief.docx", "tender.eml/budget.txt"}
    mail = by_id["tender.eml"]
    assert mail.title == "Desalination tender" and "Subject: Desalination tender" in mail.text
    assert "the tender closed today and the winner will be named on Friday." in mail.text
    assert PARAS[0] in by_id["tender.eml/brief.docx"].text
    assert [Path(s.path).name for s in skipped] == ["logo.png"]


def test_odt_and_rtf(tmp_path):
    content = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" office:version="1.2">'
        "<office:body><office:text><text:h text:outline-level=\"1\">Water brief</text:h>"
        "<text:p>The plants cost <text:span>40 million</text:span><text:s/>dollars.</text:p>"
        "<table:table><table:table-row><table:table-cell><text:p>North</text:p></table:table-cell>"
        "<table:table-cell><text:p>2</text:p></table:table-cell></table:table-row></table:table>"
        "</office:text></office:body></office:document-content>")
    with zipfile.ZipFile(tmp_path / "brief.odt", "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        archive.writestr("content.xml", content)
    doc = _one(tmp_path / "brief.odt")
    assert doc.text == "Water brief\n\nThe plants cost 40 million dollars.\n\nNorth\t2"
    (tmp_path / "memo.rtf").write_text(r"{\rtf1\ansi{\fonttbl\f0\fswiss Helvetica;}\f0\pard "
                                       r"The plants cost 40 million dollars.\par Caf\'e9 opened.\par}")
    assert _one(tmp_path / "memo.rtf").text == "The plants cost 40 million dollars.\n\nCafé opened."


# ---------------------------------------------------------------- one table


def test_one_loader_table_feeds_cli_upload_and_readme(capsys):
    from qa.cli import main
    from qa.ui import UPLOAD_SUFFIXES

    assert list(UPLOAD_SUFFIXES) == list(SUPPORTED_SUFFIXES) == list(LOADERS)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    formats_line = next(line for line in readme.splitlines() if line.startswith("qa index PATH"))
    assert set(re.findall(r"\.\w+", formats_line.split("#", 1)[1])) >= set(SUPPORTED_SUFFIXES)
    with pytest.raises(SystemExit):
        main(["index", "--help"])
    shown = capsys.readouterr().out
    assert [s for s in SUPPORTED_SUFFIXES if s not in shown] == [], shown


# ---------------------------------------------------------------- format invariance (eval/seeds.jsonl)


@pytest.fixture(scope="module")
def seed_copies(tmp_path_factory) -> dict[str, Path]:
    """The seed reports as .txt, as Chromium-printed PDF, as .docx and as a scanned (image-only) PDF."""
    from tests.pdfs import seed_paragraphs

    if CHROMIUM is None or TESSERACT is None:
        pytest.skip("chromium and tesseract-ocr are needed (.ci/run installs them)")
    root = tmp_path_factory.mktemp("seed-formats")
    folders = {kind: root / kind for kind in ("txt", "pdf", "docx", "scan")}
    for folder in folders.values():
        folder.mkdir()
    for seed in sorted((ROOT / "seeds").glob("*.txt")):
        paras = seed_paragraphs(seed)
        (folders["txt"] / seed.name).write_bytes(seed.read_bytes())
        pdf = print_to_pdf(report_html(seed.stem, paras, heading=False), folders["pdf"] / f"{seed.stem}.pdf")
        write_docx(folders["docx"] / f"{seed.stem}.docx", seed.stem, paras, heading=False)
        scan_pdf(pdf, folders["scan"] / f"{seed.stem}.pdf")
    return folders


def _items_for(index_path: Path, settings, target: Path) -> Path:
    """eval/seeds.jsonl with each evidence quote re-read from this copy's text.

    OCR may misread a character of a quote; the gold span is then the best-aligned span of
    the same length, so the scan is scored on the same evidence as the other formats.
    """
    import difflib

    import qa.api
    from qa.evaluation.metrics import locate, normalize

    index = qa.api.get_engine(index_path, settings).index
    items = [json.loads(line) for line in (ROOT / "eval" / "seeds.jsonl").read_text(encoding="utf-8").splitlines()
             if line.strip()]
    for item in items:
        for ev in item.get("evidence", []):
            doc = next(d for d in index.doc_ids if Path(d).stem == Path(ev["doc"]).stem)
            text = index.store.document(doc).text
            ev["doc"] = doc
            if locate(text, ev["quote"]) is None:
                folded, quote = normalize(text), normalize(ev["quote"])
                match = difflib.SequenceMatcher(None, folded, quote, autojunk=False).find_longest_match(
                    0, len(folded), 0, len(quote))
                start = max(0, match.a - match.b)
                ev["quote"] = folded[start:start + len(quote)]
                assert locate(text, ev["quote"]) is not None, ev
    target.write_text("\n".join(json.dumps(i) for i in items), encoding="utf-8")
    return target


def test_answers_and_citations_do_not_depend_on_the_format(seed_copies, embedder, settings, tmp_path):
    import qa
    import qa.api
    from qa.evaluation.qaset import run_qa_eval

    figures = {}
    for kind, folder in seed_copies.items():
        index_path = tmp_path / f"index-{kind}"
        _, skipped = qa.index_paths([folder], index=index_path, settings=settings)
        assert not skipped
        items = _items_for(index_path, settings, tmp_path / f"seeds-{kind}.jsonl")
        summary, rows = run_qa_eval(items, settings, index=str(index_path), progress=False)
        index = qa.api.get_engine(index_path, settings).index
        for row in rows:
            for c in row["citations"]:
                assert index.store.document(c["doc_id"]).text[c["start"]:c["end"]] == c["quote"]
                assert (c["page"] is not None) == (kind in ("pdf", "scan"))
        figures[kind] = {k: summary[k] for k in ("answer_recall", "citation_precision", "citation_recall")}
        assert summary["quote_exact"] == 1.0
    print("\nformat invariance:", json.dumps(figures))
    base = figures["txt"]
    for kind, tolerance in (("pdf", 0.02), ("docx", 0.02), ("scan", 0.05)):
        for metric in ("answer_recall", "citation_precision"):
            assert abs(figures[kind][metric] - base[metric]) <= tolerance, (kind, metric, figures)


def test_without_tesseract_a_scan_page_is_reported_and_text_pages_still_load(tmp_path, monkeypatch, caplog):
    # Provoked failure: tesseract missing from PATH.
    import qa.load.ocr
    from PIL import Image

    from tests.pdfs import write_pdf

    text_pdf = write_pdf(tmp_path / "text.pdf", ["Revenue rose to 17,606 million."])
    Image.new("L", (600, 800), 255).save(tmp_path / "blank.pdf", "PDF")
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    writer.add_page(PdfReader(text_pdf).pages[0])
    writer.add_page(PdfReader(tmp_path / "blank.pdf").pages[0])
    with open(tmp_path / "mixed.pdf", "wb") as fh:
        writer.write(fh)
    monkeypatch.setattr(qa.load.ocr, "ocr_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="qa"):
        doc = _one(tmp_path / "mixed.pdf")
    assert [p.number for p in doc.pages] == [1] and "17,606" in doc.text
    assert any("page 2" in r.getMessage() and "tesseract" in r.getMessage().lower() for r in caplog.records)
    with pytest.raises(LoadError, match="Tesseract is not installed"):
        list(load_file(tmp_path / "blank.pdf"))


def test_indexing_reports_each_stage_with_pages_and_counts(tmp_path):
    """What the chat's upload shows: "reading report.pdf, page 2 of 3", then chunking and embedding counts."""
    from qa.ui import progress_label
    from tests.pdfs import write_pdf

    folder = tmp_path / "reports"
    folder.mkdir()
    write_pdf(folder / "report.pdf", [f"Page {n} of the report says the river rose {n} metres." for n in (1, 2, 3)])
    seen: list[str] = []
    qa.index_paths([folder], index=tmp_path / "idx",
                   progress=lambda stage, done, total: seen.append(progress_label(stage, done, total)))
    assert [s for s in seen if s.startswith("reading")] == [f"reading report.pdf, page {n} of 3" for n in (1, 2, 3)]
    assert "chunking 1/1" in seen and any(s.startswith("embedding ") and s.endswith("/3") for s in seen)
    assert progress_label("embedding", 1200, 4800) == "embedding 1,200/4,800"
