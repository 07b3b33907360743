"""Loading every supported format; bad files are skipped with a warning naming them."""
import json
import logging

from qa.load import load_corpus
from tests.pdfs import write_pdf


def test_formats_and_bad_files(tmp_path, caplog):
    (tmp_path / "a.txt").write_text("Plain text report. Second sentence.", encoding="utf-8")
    (tmp_path / "b.md").write_text("# Title\n\nMarkdown body.", encoding="utf-8")
    (tmp_path / "c.html").write_text("<html><head><title>T</title><style>p{}</style></head><body><p>Visible "
                                     "<b>text</b>.</p><script>var hidden=1;</script></body></html>", encoding="utf-8")
    write_pdf(tmp_path / "d.pdf", ["First page.", "Second page."])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "latin.txt").write_bytes("Caf\xe9 cr\xe8me na\xefve r\xe9sum\xe9 d\xe9j\xe0 vu.".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("   \n")
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02PNG\x00" * 50)
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a pdf at all")
    (tmp_path / "notes.xyz").write_text("ignored")
    with caplog.at_level(logging.WARNING, logger="qa"):
        docs, skipped = load_corpus([tmp_path])
    by_id = {d.doc_id: d for d in docs}
    assert set(by_id) == {"a.txt", "b.md", "c.html", "d.pdf", "sub/latin.txt"}
    assert by_id["a.txt"].text == "Plain text report. Second sentence."
    assert by_id["c.html"].text == "Visible text."
    assert "hidden" not in by_id["c.html"].text and "p{}" not in by_id["c.html"].text
    assert by_id["c.html"].title == "T"
    assert [p.number for p in by_id["d.pdf"].pages] == [1, 2]
    assert "Café crème" in by_id["sub/latin.txt"].text
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in skipped}
    assert set(reasons) == {"empty.txt", "binary.txt", "broken.pdf"}
    assert "empty" in reasons["empty.txt"] and "binary" in reasons["binary.txt"] and "PDF" in reasons["broken.pdf"]
    for name in reasons:
        assert any(name in r.getMessage() for r in caplog.records), name


def test_beir_corpus(tmp_path):
    rows = [{"_id": "d1", "title": "Aspirin", "text": "Aspirin thins blood."}, {"_id": "d2", "title": "", "text": "Only text."}]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "x"}))
    docs, skipped = load_corpus([tmp_path])
    assert [d.doc_id for d in docs] == ["d1", "d2"] and not skipped
    assert docs[0].text == "Aspirin\n\nAspirin thins blood." and docs[1].text == "Only text."


def test_missing_path_is_reported(tmp_path):
    docs, skipped = load_corpus([tmp_path / "nope"])
    assert not docs and "no such" in skipped[0].reason


def test_aes_encrypted_pdf_with_empty_password_is_read(tmp_path):
    # Filings often ship AES-encrypted with an empty user password (FinanceBench's ADOBE_2022_10K.pdf).
    from pypdf import PdfReader, PdfWriter

    plain = write_pdf(tmp_path / "plain.pdf", ["Revenue rose to 17,606 million.", "Headcount was 29,239."])
    writer = PdfWriter()
    for page in PdfReader(plain).pages:
        writer.add_page(page)
    writer.encrypt(user_password="", owner_password="owner-secret", algorithm="AES-128")
    corpus = tmp_path / "filings"
    corpus.mkdir()
    with open(corpus / "locked.pdf", "wb") as fh:
        writer.write(fh)
    plain.unlink()
    docs, skipped = load_corpus([corpus])
    assert not skipped and len(docs) == 1
    doc = docs[0]
    assert [p.number for p in doc.pages] == [1, 2]
    assert "29,239" in doc.text[doc.pages[1].start:doc.pages[1].end]


# ---------------------------------------------------------------- issue #13: loader defects


def test_deeply_nested_html_is_refused_quickly(tmp_path):
    import time

    (tmp_path / "deep.html").write_text("<html><body>" + "<div>" * 100_000 + "x" + "</div>" * 100_000)
    nested = "".join(f"<div><p>Level {i} text.</p>" for i in range(300)) + "</div>" * 300
    (tmp_path / "nested.html").write_text(f"<html><body>{nested}</body></html>")
    started = time.monotonic()
    docs, skipped = load_corpus([tmp_path])
    assert time.monotonic() - started < 10
    assert [s.path.rsplit("/", 1)[-1] for s in skipped] == ["deep.html"] and "nested" in skipped[0].reason
    assert docs[0].text.split("\n\n") == [f"Level {i} text." for i in range(300)]


def test_utf16_and_utf32_with_bom_are_text(tmp_path):
    text = "The minister’s “plan” costs €40 million.\n\nSecond paragraph."
    (tmp_path / "le.txt").write_bytes(text.encode("utf-16"))
    (tmp_path / "be.txt").write_bytes(b"\xfe\xff" + text.encode("utf-16-be"))
    (tmp_path / "wide.txt").write_bytes(text.encode("utf-32"))
    docs, skipped = load_corpus([tmp_path])
    assert not skipped and [d.text for d in docs] == [text, text, text]


def test_mostly_utf8_with_bad_bytes_keeps_utf8_and_warns(tmp_path, caplog):
    good = "The minister’s “plan” costs €40 million. " * 20
    raw = good.encode("utf-8") + b"\xff\xfe broken tail \x92 here."
    (tmp_path / "mixed.txt").write_bytes(raw)
    with caplog.at_level(logging.WARNING, logger="qa"):
        docs, skipped = load_corpus([tmp_path])
    assert not skipped and docs[0].text.startswith(good)
    assert docs[0].text.count("\ufffd") == 3
    assert any("mixed.txt" in r.getMessage() and "UTF-8" in r.getMessage() for r in caplog.records)


def test_symlink_out_of_the_corpus_is_refused_unless_allowed(tmp_path):
    from qa.settings import Settings

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd.txt").write_text("root:x:0:0:root:/root:/bin/bash")
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "report.txt").write_text("A real report.")
    (corpus / "sub" / "inside.txt").symlink_to(corpus / "report.txt")
    (corpus / "passwd.txt").symlink_to(outside / "passwd.txt")
    (corpus / "linked").symlink_to(outside, target_is_directory=True)
    docs, skipped = load_corpus([corpus])
    assert sorted(d.doc_id for d in docs) == ["report.txt", "sub/inside.txt"]
    assert all("outside the corpus" in s.reason for s in skipped) and skipped
    assert not any("root:x" in d.text for d in docs)
    allowed = Settings.from_env({"QA_FOLLOW_SYMLINKS": "1"})
    assert allowed.follow_symlinks and not Settings.from_env({}).follow_symlinks
    docs, skipped = load_corpus([corpus], follow_symlinks=allowed.follow_symlinks)
    assert "passwd.txt" in {d.doc_id for d in docs} and not skipped
