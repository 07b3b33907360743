"""The source panel (#15 item 1) on a real server and Chromium, and its pure functions.

The reports: seed 000 printed to a PDF of two pages or more by Chromium (so the cited sentence has a page, a
rendered image and character boxes) and seed 002 as text.
"""
import json
import shutil
from pathlib import Path

import pytest

from qa.types import Document, Page
from tests.pdfs import CHROMIUM as CHROMIUM_FOUND, print_to_pdf, report_html, seed_paragraphs
from tests.test_ui import ARTIFACTS, CHROMIUM, QUESTION, ask, contrast, launch, start_server

ROOT = Path(__file__).resolve().parent.parent
PDF_NAME = "alliance-report.pdf"
browser_only = pytest.mark.skipif(not Path(CHROMIUM).exists() or CHROMIUM_FOUND is None,
                                  reason="Debian chromium is installed by .ci/run")


# ---------------------------------------------------------------- pure functions

def test_parse_source_request_takes_only_well_formed_requests():
    from qa.sources import SourceRequest, parse_source_request

    ok = parse_source_request(json.dumps({"doc": "a.pdf", "start": "10", "end": 20, "page": "3", "quote": "q"}))
    assert ok == SourceRequest("a.pdf", 10, 20, "q", 3)
    assert parse_source_request({"doc": "a.txt", "start": 0, "end": 0, "page": ""}).page is None
    for bad in ("not json", "[]", json.dumps({"doc": "", "start": 1, "end": 2}), json.dumps({"doc": "a", "start": 5,
                "end": 2}), json.dumps({"doc": "a", "start": -1, "end": 2}), json.dumps({"doc": 3, "start": 1, "end": 2}),
                json.dumps({"doc": "a", "start": "x", "end": 2}), None):
        assert parse_source_request(bad) is None, bad


def test_locate_quote_exact_moved_and_changed():
    from qa.sources import locate_quote

    text = "Intro line.\nThe dam held\nafter the storm. Then rain."
    start = text.index("The dam")
    end = text.index("storm.") + len("storm.")
    assert locate_quote(text, start, end, "The dam held after the storm.") == (start, end, "exact")  # spacing folded
    assert locate_quote(text, start, end, "") == (start, end, "exact")
    edited = "A new first paragraph was added. " + text
    s, e, status = locate_quote(edited, start, end, "The dam held after the storm.")
    assert status == "moved" and edited[s:e] == "The dam held\nafter the storm."
    assert locate_quote(text, start, end, "The bridge fell.") == (start, end, "changed")
    assert locate_quote(text, 5, 10_000, "") == (5, len(text), "exact"), "offsets past the end are clamped"


def test_source_view_whole_document_window_and_pages():
    from qa.sources import SourceRequest, render_source, source_view

    text = "Page one text. <b>Bold</b> claim here.\nPage two starts. The end."
    doc = Document("r.pdf", text, (Page(1, 0, 39), Page(2, 39, len(text))), title="Report <One>")
    start = text.index("<b>")
    end = text.index("here.") + 5
    view = source_view(doc, SourceRequest("r.pdf", start, end, text[start:end]))
    assert view.quote == text[start:end] and view.before + view.quote + view.after == text
    assert view.page == 1 and view.status == "exact" and view.offset == 0 and not view.cut_after
    shown = render_source(view)
    assert "<b>Bold</b>" not in shown and "&lt;b&gt;Bold&lt;/b&gt;" in shown, "report text is inert"
    assert "Report &lt;One&gt;" in shown and 'class="qa-page-mark"' in shown and "page 2" in shown
    assert 'id="qa-panel-hit"' in shown and f'data-start="{start}"' in shown
    long = Document("l.txt", "x" * 1000 + " Needle sentence. " + "y" * 1000)
    at = long.text.index("Needle")
    cut = source_view(long, SourceRequest("l.txt", at, at + 16, "Needle sentence."), window=200)
    assert cut.quote == "Needle sentence." and cut.offset > 0 and cut.cut_after and len(cut.before) <= 100
    assert "… " in render_source(cut) and cut.page is None


def test_match_span_ignores_line_breaks_hyphens_and_ligatures():
    from qa.sources import line_boxes, match_span

    page = "Ahmed al-Asadi, who re-\r\ncently resigned as P.M.F. spokes\ufb01nal, will serve."
    span = match_span(page, "who recently resigned as P.M.F. spokesfinal")
    assert span is not None and page[span[0]:span[1]].startswith("who re-") and page[span[1] - 1] == "l"
    assert match_span(page, "nowhere on this page") is None and match_span(page, "...") is None
    # one rectangle per character on two lines become two line boxes
    chars = [(10 + 5 * i, 100, 14 + 5 * i, 110) for i in range(5)] + [(10 + 5 * i, 80, 14 + 5 * i, 90) for i in range(3)]
    assert line_boxes(chars) == [(10, 100, 34, 110), (10, 80, 24, 90)]


def test_render_page_marks_the_quote_on_a_real_pdf(tmp_path):
    from qa.load import load_file
    from qa.sources import page_of, render_page

    pdf = alliance_pdf(tmp_path / PDF_NAME)
    document = next(iter(load_file(pdf, PDF_NAME)))
    start = document.text.index("Ahmed al-Asadi, who")
    end = document.text.index("alliance.", start) + len("alliance.")
    number = page_of(document, start)
    image = render_page(pdf, number, document.text[start:end])
    assert image.png[:8] == b"\x89PNG\r\n\x1a\n" and image.count >= 2 and image.number == number
    assert 1 <= len(image.boxes) <= 4, image.boxes  # one box per line of the sentence
    assert all(0 <= b.left < 1 and 0 <= b.top < 1 and b.width > 0 and b.height > 0 for b in image.boxes)
    other = render_page(pdf, number % image.count + 1, document.text[start:end])
    assert other.boxes == (), "the sentence is not on the other page"
    assert render_page(pdf, 99).number == image.count, "a page past the end is the last page"


# ---------------------------------------------------------------- the browser

def alliance_pdf(target: Path) -> Path:
    """Seed 000 printed by Chromium in a large type, so it runs over more than one page."""
    markup = report_html("Mujahideen Alliance report", seed_paragraphs(ROOT / "seeds" / "000_e8572f977ee04a7c.txt"))
    return print_to_pdf(markup.replace("font-size:11pt", "font-size:19pt"), target)


@pytest.fixture(scope="module")
def pdf_server(tmp_path_factory):
    """A ``qa chat`` over seed 000 as a PDF and seed 002 as text."""
    if not Path(CHROMIUM).exists() or CHROMIUM_FOUND is None:
        pytest.skip("Debian chromium is installed by .ci/run")
    base = tmp_path_factory.mktemp("sources")
    corpus = base / "corpus"
    corpus.mkdir()
    shutil.copy(ROOT / "seeds" / "002_476c018fafa87246.txt", corpus)
    alliance_pdf(corpus / PDF_NAME)
    proc, info = start_server(tmp_path_factory, base=base)
    from qa.load import load_file

    info["text"] = next(iter(load_file(corpus / PDF_NAME, PDF_NAME))).text
    yield info
    proc.terminate()
    proc.wait(timeout=30)


def open_first_pdf_citation(page):
    """Ask, hover the first marker citing the PDF, then click it; the marker's source element."""
    ask(page, QUESTION)
    marker = page.locator(f"a.qa-cite").first
    source = page.locator(marker.get_attribute("href"))
    assert cited(source)["doc"] == PDF_NAME
    return marker, source


def cited(source) -> dict:
    """What a source element's marker asks the panel for (its ``data`` attribute)."""
    return json.loads(source.get_attribute("data"))


def wait_panel(page, timeout=20_000):
    page.wait_for_selector("#source-panel #qa-panel-hit", timeout=timeout)
    page.wait_for_timeout(500)  # the panel scrolls to the quote after it renders


def hit_in_view(page) -> bool:
    return page.evaluate("""() => { const box = document.querySelector('#source-text .qa-doc');
        const hit = document.getElementById('qa-panel-hit'); const b = box.getBoundingClientRect();
        const h = hit.getBoundingClientRect(); return h.top >= b.top - 1 && h.top <= b.bottom - 10; }""")


@browser_only
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_browser_source_panel_preview_text_page_and_reload(pdf_server, theme):
    from playwright.sync_api import sync_playwright

    text = pdf_server["text"]
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(pdf_server["url"] + f"?__theme={theme}")
        page.wait_for_selector("#question textarea", timeout=30_000)
        assert page.locator("#source-panel").count() == 0 or not page.locator("#source-panel").is_visible()
        marker, source = open_first_pdf_citation(page)
        start, end = cited(source)["start"], cited(source)["end"]
        quote = text[start:end]
        assert "Ahmed al-Asadi" in quote

        # hovering previews the quote; focusing by keyboard does too
        marker.hover()
        page.wait_for_selector("#qa-preview", timeout=5_000)
        assert " ".join(quote.split()) in page.locator("#qa-preview").inner_text()
        assert marker.get_attribute("aria-describedby") == "qa-preview"
        fg, bg = page.evaluate("() => { const s = getComputedStyle(document.getElementById('qa-preview'));"
                               " return [s.color, s.backgroundColor]; }")
        assert contrast(fg, bg) >= 4.5, (theme, fg, bg)
        page.mouse.move(5, 5)
        page.wait_for_selector("#qa-preview", state="detached", timeout=5_000)
        marker.focus()
        page.wait_for_selector("#qa-preview", timeout=5_000)
        page.keyboard.press("Escape")
        page.wait_for_selector("#qa-preview", state="detached", timeout=5_000)

        # clicking opens the whole document scrolled to the quote, highlighted
        marker.click()
        wait_panel(page)
        hit = page.locator("#qa-panel-hit")
        assert hit.text_content() == quote, "the highlight is exactly text[start:end]"
        assert (int(hit.get_attribute("data-start")), int(hit.get_attribute("data-end"))) == (start, end)
        doc_text = page.locator("#source-text .qa-doc").text_content()
        assert text[max(0, start - 200):start].split()[-3:] == doc_text[:doc_text.index(quote)].split()[-3:]
        assert "".join(doc_text.split()).startswith("".join(text[:60].split())), "the whole document, from its start"
        assert hit_in_view(page), "the text box is scrolled to the quote"
        assert page.locator("#source-panel").is_visible()
        fg, bg = page.evaluate("() => { const s = getComputedStyle(document.getElementById('qa-panel-hit'));"
                               " return [s.color, s.backgroundColor]; }")
        assert contrast(fg, bg) >= 4.5, (theme, fg, bg)
        fg = page.evaluate("() => getComputedStyle(document.querySelector('#source-text .qa-doc')).color")
        panel_bg = page.evaluate("""() => { let el = document.querySelector('#source-text .qa-doc');
            while (el) { const c = getComputedStyle(el).backgroundColor;
              if (c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c; el = el.parentElement; }
            return getComputedStyle(document.body).backgroundColor; }""")
        assert contrast(fg, panel_bg) >= 4.5, (theme, fg, panel_bg)
        # desktop: the panel sits beside the chat, not under it
        chat, panel = page.locator("#chat").bounding_box(), page.locator("#source-panel").bounding_box()
        assert panel["x"] >= chat["x"] + chat["width"] - 1 and panel["y"] < chat["y"] + chat["height"]

        # the PDF page with the sentence's area marked, and page navigation
        label = page.locator("#page-label").inner_text()
        at = int(page.locator(".qa-page").get_attribute("data-page"))
        count = int(page.locator(".qa-page").get_attribute("data-pages"))
        assert count >= 2 and f"Page {at} of {count}" in label and "marked" in label
        assert page.locator(".qa-page img").evaluate("i => i.complete && i.naturalWidth > 300")
        assert page.locator(".qa-box").count() >= 1
        other = page.locator("#page-next") if at < count else page.locator("#page-prev")
        back = page.locator("#page-prev") if at < count else page.locator("#page-next")
        other.click()
        page.wait_for_function(f"document.querySelector('.qa-page')?.dataset.page !== '{at}'", timeout=10_000)
        assert page.locator(".qa-box").count() == 0, "the sentence is not on the other page"
        back.click()
        page.wait_for_function(f"document.querySelector('.qa-page')?.dataset.page === '{at}'", timeout=10_000)
        assert page.locator(".qa-box").count() >= 1
        page.wait_for_timeout(1000)  # the loading shade over the page image fades
        page.screenshot(path=str(ARTIFACTS / f"ui-source-{theme}.png"))

        # a reload opens the same source again
        page.reload()
        wait_panel(page, 60_000)
        assert page.locator("#qa-panel-hit").text_content() == quote
        assert hit_in_view(page)
        page.locator("#source-close").click()
        page.wait_for_function("!document.querySelector('#source-panel') || "
                               "document.querySelector('#source-panel').offsetParent === null", timeout=10_000)
        page.reload()
        page.wait_for_selector(".qa-sources", timeout=30_000)
        page.wait_for_timeout(3000)
        assert page.locator("#qa-panel-hit").count() == 0, "a closed panel stays closed after a reload"
        browser.close()


@browser_only
def test_browser_source_panel_is_a_drawer_on_a_phone(pdf_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        page.goto(pdf_server["url"])
        marker, source = open_first_pdf_citation(page)
        marker.tap()
        wait_panel(page)
        box = page.locator("#source-panel").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 391, box
        assert abs(box["y"] + box["height"] - 844) <= 2 and box["height"] <= 0.8 * 844 + 2, box
        assert page.evaluate("getComputedStyle(document.querySelector('#source-panel')).position") == "fixed"
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert page.locator("#qa-panel-hit").text_content() == pdf_server["text"][cited(source)["start"]:cited(source)["end"]]
        assert hit_in_view(page)
        img = page.locator(".qa-page img").bounding_box()
        assert img["x"] >= 0 and img["x"] + img["width"] <= 391
        page.screenshot(path=str(ARTIFACTS / "ui-source-phone.png"))
        page.locator("#source-close").tap()
        page.wait_for_function("!document.querySelector('#source-panel') || "
                               "document.querySelector('#source-panel').offsetParent === null", timeout=10_000)
        browser.close()


@browser_only
def test_browser_source_panel_reads_only_indexed_reports(pdf_server):
    """A forged request naming a path outside the index shows a message, never a file's content."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(pdf_server["url"])
        page.wait_for_selector("#question textarea", timeout=30_000)
        for doc in ("../../../../etc/passwd", "/etc/passwd", "../server.log"):
            page.evaluate("""(doc) => { const box = document.querySelector('#source-request textarea');
                box.value = JSON.stringify({doc, start: 0, end: 30, page: null, quote: ''});
                box.dispatchEvent(new Event('input', {bubbles: true}));
                setTimeout(() => document.querySelector('#source-open').click(), 0); }""", doc)
            said = f"⚠️ {doc} is no longer in the index."
            page.wait_for_function(f"document.querySelector('#source-message')?.innerText.trim() === {json.dumps(said)}",
                                   timeout=10_000)
            shown = page.locator("#source-panel").inner_text()
            assert "no longer in the index" in shown and "root:" not in shown and "Traceback" not in shown
            assert page.locator("#qa-panel-hit").count() == 0
        browser.close()
