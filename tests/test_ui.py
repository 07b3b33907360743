"""The chat UI on a real Gradio server: API, and a real Chromium driven by Playwright."""
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
QUESTION = "Who will be the spokesperson of the new political alliance?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp_path_factory, extra_env=None, base=None, port=None):
    """A ``qa chat`` process; given ``base`` and ``port`` of a stopped one, the same server started again."""
    base = base or tmp_path_factory.mktemp("ui")
    corpus = base / "corpus"
    if not corpus.exists():
        shutil.copytree(ROOT / "seeds", corpus)
    port = port or free_port()
    env = {**os.environ, "QA_CORPUS": str(corpus), "QA_INDEX": str(base / "index"),
           "GRADIO_TEMP_DIR": str(base / "gradio"), **(extra_env or {})}
    log = open(base / "server.log", "a")
    proc = subprocess.Popen([sys.executable, "-m", "qa.cli", "chat", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            assert proc.poll() is None, (base / "server.log").read_text()
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("server did not start: " + (base / "server.log").read_text())
    return proc, {"url": url, "corpus": corpus, "base": base, "port": port}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real ``qa chat`` process on a copy of the seeds."""
    proc, info = start_server(tmp_path_factory)
    yield info
    proc.terminate()
    proc.wait(timeout=30)


def test_login_required_with_qa_auth(tmp_path_factory):
    from gradio_client import Client

    proc, info = start_server(tmp_path_factory, {"QA_AUTH": "analyst:s3cret"})
    try:
        with pytest.raises(Exception):
            Client(info["url"], verbose=False).predict(QUESTION, api_name="/chat")
        with pytest.raises(Exception):
            Client(info["url"], auth=("analyst", "wrong"), verbose=False)
        text = Client(info["url"], auth=("analyst", "s3cret"), verbose=False).predict(QUESTION, api_name="/chat")
        assert "Ahmed al-Asadi" in text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_api_chat_returns_a_cited_answer(server):
    from gradio_client import Client

    text = Client(server["url"], verbose=False).predict(QUESTION, api_name="/chat")
    assert "Ahmed al-Asadi" in text and "[1]" in text


def test_ten_simultaneous_chats(server):
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client

    questions = {"Who heads the IRGC’s elite Quds Force?": "Suleimani", QUESTION: "Asadi",
                 "Who is the secretary general of the Badr Organization?": "Amiri",
                 "Which country was Shamkhani most likely referring to as the “Western country”?": "France",
                 "Whom did Shamkhani meet in Tehran?": "Hamoudi"}
    asks = list(questions) * 2
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda q: Client(server["url"], verbose=False).predict(q, api_name="/chat"), asks))
    for q, text in zip(asks, answers):
        assert questions[q] in text and "[1]" in text


def launch(p):
    """Debian's Chromium, headless, with no background network traffic (this machine has none)."""
    return p.chromium.launch(executable_path=CHROMIUM, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"])


def ask(page, question):
    count = page.locator(".qa-sources").count()
    page.locator("#question textarea").fill(question)
    page.locator("#ask").click()
    page.wait_for_function(f"document.querySelectorAll('.qa-sources').length > {count}", timeout=60_000)
    page.wait_for_timeout(1000)  # the finished turn is stored in the browser by the event after the answer


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by .ci/run")
def test_browser_chat_citations_reload_and_upload(server, tmp_path):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server["url"])
        ask(page, QUESTION)
        first = page.locator(".qa-cite").first
        assert first.inner_text() == "[1]"
        quote = page.locator(".qa-source mark").first.inner_text()
        source = (server["corpus"] / "000_e8572f977ee04a7c.txt").read_text(encoding="utf-8")
        assert quote in source and "Ahmed al-Asadi" in quote
        target = first.get_attribute("href")
        first.click()
        page.wait_for_function(f"location.hash === '{target}'", timeout=10_000)
        assert page.locator(target).is_visible()
        page.screenshot(path=str(ARTIFACTS / "ui-answer.png"), full_page=True)

        ask(page, "Which country was Shamkhani most likely referring to as the “Western country”?")
        assert page.locator(".qa-sources").count() == 2
        # the first answer still cites its own source, the second its own
        assert "Ahmed al-Asadi" in page.locator(".qa-sources").nth(0).inner_text()
        assert "France" in page.locator(".qa-sources").nth(1).inner_text()
        assert "002_476c018fafa87246.txt" in page.locator(".qa-sources").nth(1).inner_text()

        page.reload()
        page.wait_for_selector(".qa-sources", timeout=30_000)
        assert page.locator(".qa-sources").count() == 2
        assert "Ahmed al-Asadi" in page.locator(".qa-sources").nth(0).locator("mark").inner_text()
        assert "France" in page.locator(".qa-sources").nth(1).locator("mark").inner_text()

        note = tmp_path / "harbour.txt"
        note.write_text("The Umm Qasr harbour reopened to grain ships on Tuesday. Photos at "
                        "[the port site](https://evil.example/p) and https://evil.example/q.", encoding="utf-8")
        page.locator("#upload input[type=file]").set_input_files([str(note)])
        page.wait_for_function("document.querySelector('#upload-status').innerText.includes('Added')", timeout=120_000)
        assert (server["corpus"] / "harbour.txt").exists()
        assert not list((server["corpus"].parent / "gradio").rglob("harbour.txt")), "the temporary copy is removed"
        ask(page, "When did the Umm Qasr harbour reopen?")
        last = page.locator(".qa-sources").last.text_content()  # the passage around a quote sits in <details>
        assert "harbour.txt" in last and "Tuesday" in last
        assert "https://evil.example/q" in last, "a link in a report is shown as its text"
        assert page.locator('#chat a[href*="evil.example"]').count() == 0, "and is never live"

        empty = tmp_path / "empty.txt"
        empty.write_text("  ")
        page.locator("#upload input[type=file]").set_input_files([str(empty)])
        page.wait_for_function("document.querySelector('#upload-status').innerText.includes('Rejected')",
                               timeout=60_000)
        assert "empty" in page.locator("#upload-status").inner_text()
        assert not (server["corpus"] / "empty.txt").exists()

        page.locator("#new-conversation").click()
        page.wait_for_function("document.querySelectorAll('.qa-sources').length === 0", timeout=10_000)
        page.screenshot(path=str(ARTIFACTS / "ui-final.png"), full_page=True)
        browser.close()


def test_store_upload_keeps_base_name_type_and_size(tmp_path):
    from qa.load import LoadError
    from qa.ui import store_upload

    corpus = tmp_path / "corpus"
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    ok = nested / "brief.md"
    ok.write_text("A short brief.", encoding="utf-8")
    assert store_upload(tmp_path / "a" / ".." / "a" / "b" / "brief.md", corpus, 1000).path == corpus / "brief.md"
    assert sorted(p.name for p in corpus.iterdir()) == ["brief.md"]
    exe = nested / "tool.exe"
    exe.write_bytes(b"MZ" * 10)
    with pytest.raises(LoadError, match="only"):
        store_upload(exe, corpus, 1000)
    big = nested / "big.txt"
    big.write_text("word " * 1000)
    with pytest.raises(LoadError, match="limit"):
        store_upload(big, corpus, 1000)
    binary = nested / "fake.pdf"
    binary.write_bytes(b"\x00\x01 not a pdf")
    with pytest.raises(LoadError):
        store_upload(binary, corpus, 1000)
    assert sorted(p.name for p in corpus.iterdir()) == ["brief.md"]


def test_links_in_reports_are_shown_as_text():
    from qa.types import Answer, Citation
    from qa.ui import render_answer

    quote = "Details at [the portal](https://evil.example/x) and www.evil.example or mail@evil.example (O'Neil & Co)."
    passage = "Before. " + quote + " ![img](http://evil.example/i.png) <a href='http://evil.example'>x</a>"
    result = Answer(text=quote + " [1]", citations=[Citation("memo.txt", quote, 8, 8 + len(quote), None, passage, 1.0)],
                    abstained=False, question="q")
    rendered = render_answer(result, "t1")
    assert rendered.count("<a ") == 1 and 'class="qa-cite"' in rendered  # only the marker is a link
    for live in ("http://", "https://", "www.evil", "](", "<a href", "@evil", "!["):
        assert live not in rendered, live
    import html
    shown = html.unescape(re.sub(r"<[^>]+>", "", rendered))
    # still readable: in the answer, the quoted sentence and the passage around it
    assert shown.count("https://evil.example/x") == 3 and shown.count("(O'Neil & Co)") == 3


def test_upload_never_replaces_a_different_file(tmp_path):
    from qa.ui import store_upload

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    original = corpus / "falmouth.txt"
    original.write_text("The Falmouth packet sailed on Monday.", encoding="utf-8")
    upload = tmp_path / "upload" / "falmouth.txt"
    upload.parent.mkdir()
    upload.write_text("A different report that happens to share the name.", encoding="utf-8")
    kept = store_upload(upload, corpus, 10_000)
    assert kept == (corpus / "falmouth-2.txt", "renamed")
    assert original.read_text(encoding="utf-8") == "The Falmouth packet sailed on Monday."
    assert kept.path.read_text(encoding="utf-8") == upload.read_text(encoding="utf-8")
    # the same bytes again, under either name: nothing new is written
    assert store_upload(upload, corpus, 10_000) == (corpus / "falmouth-2.txt", "identical")
    same = tmp_path / "falmouth.txt"
    shutil.copyfile(original, same)
    assert store_upload(same, corpus, 10_000) == (original, "identical")
    assert sorted(p.name for p in corpus.iterdir()) == ["falmouth-2.txt", "falmouth.txt"]


def test_uploads_go_to_qa_corpus_not_the_index_source(seeds_index, settings, tmp_path):
    from dataclasses import replace

    from qa.ui import upload_target

    corpus = tmp_path / "uploads"
    folder, sources = upload_target(seeds_index, replace(settings, corpus=corpus))
    assert folder == corpus.resolve()
    assert str(corpus.resolve()) in sources and str((ROOT / "seeds").resolve()) in sources


@pytest.mark.llm
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by .ci/run")
def test_browser_llm_mode_shows_verified_sources_and_can_switch_to_extractive(tmp_path_factory):
    pytest.importorskip("llama_cpp", reason="needs the [llm] extra")
    from playwright.sync_api import sync_playwright

    proc, info = start_server(tmp_path_factory, {"QA_LLM": "local"})
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(info["url"])
            page.wait_for_selector("#mode input[type=radio]", timeout=30_000)
            assert page.locator("#mode input[type=radio]").count() == 2
            ask(page, QUESTION)
            answer_text = page.locator("#chat .message").last.inner_text()
            sources = page.locator(".qa-sources").last.inner_text()
            source = (info["corpus"] / "000_e8572f977ee04a7c.txt").read_text(encoding="utf-8")
            for quote in page.locator(".qa-sources").last.locator("mark").all_inner_texts():
                assert quote in source or quote in (info["corpus"] / "002_476c018fafa87246.txt").read_text(encoding="utf-8")
            assert "Asadi" in sources
            # a fallback or a removed sentence is said under the answer, never hidden
            if "extractive answer instead" in answer_text or "removed as unsupported" in answer_text:
                assert page.locator(".qa-notice").count() >= 1
            page.get_by_role("radio", name="extractive").check()
            ask(page, "Which country was Shamkhani most likely referring to as the “Western country”?")
            last = page.locator(".qa-sources").last.inner_text()
            assert "France" in last
            assert page.locator("#chat .message").last.locator(".qa-notice").count() == 0
            page.screenshot(path=str(ARTIFACTS / "ui-llm.png"), full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def chat_messages(page) -> int:
    return page.locator("#chat .message").count()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by .ci/run")
def test_browser_documents_survive_reload_and_clearing_forgets_the_chat(server, tmp_path):
    """#15.1: the Documents list is read on each page load; #15.2: both ways of clearing also clear storage."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server["url"])
        note = tmp_path / "basra-notes.md"
        note.write_text("# Basra port briefing\n\nThe Basra grain silo was repaired in March.\n", encoding="utf-8")
        page.locator("#upload input[type=file]").set_input_files([str(note)])
        page.wait_for_function("document.querySelector('#upload-status').innerText.includes('Added')", timeout=120_000)
        page.wait_for_function("document.querySelector('#documents')?.innerText.includes('Basra port briefing')",
                               timeout=10_000)
        page.reload()
        page.wait_for_function("document.querySelector('#documents')?.innerText.includes('Basra port briefing')",
                               timeout=30_000)
        assert "basra-notes.md" in page.locator("#documents").inner_text()  # the file name is shown too
        # a fresh tab (a new session) sees it as well
        other = browser.new_page()
        other.goto(server["url"])
        other.wait_for_function("document.querySelector('#documents')?.innerText.includes('Basra port briefing')",
                                timeout=30_000)
        other.close()
        # #15.6: the same file again is not "Added …: 0 new, 0 changed"
        page.locator("#upload input[type=file]").set_input_files([str(note)])
        page.wait_for_function("document.querySelector('#upload-status').innerText.includes('already indexed')",
                               timeout=60_000)
        assert "Added" not in page.locator("#upload-status").inner_text()

        for clear in ("#chat button[aria-label='Clear']", "#new-conversation"):
            ask(page, QUESTION)
            page.wait_for_timeout(1500)  # the browser state is written after the answer
            page.locator(clear).first.click()
            page.wait_for_function("document.querySelectorAll('#chat .message').length === 0", timeout=10_000)
            page.wait_for_timeout(1500)
            page.reload()
            page.wait_for_selector("#question textarea", timeout=30_000)
            page.wait_for_timeout(3000)  # a stored chat would be back by now
            assert chat_messages(page) == 0, clear
        browser.close()


def contrast(fg: str, bg: str) -> float:
    """WCAG contrast ratio of two CSS rgb()/rgba() colours."""
    def lum(css: str) -> float:
        r, g, b = (int(x) / 255 for x in re.findall(r"[\d.]+", css)[:3])
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    hi, lo = sorted((lum(fg), lum(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


COLOURS = """(sel) => { const el = document.querySelector(sel); const s = getComputedStyle(el);
                        return [s.color, s.backgroundColor]; }"""


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by .ci/run")
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_browser_highlight_is_readable_and_answer_stays_in_view(server, theme):
    """#15.4: readable highlight in both themes, first click highlights; #15.5: the answer's start in view."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server["url"] + f"?__theme={theme}")
        page.wait_for_selector("#question textarea", timeout=30_000)
        assert page.evaluate("document.body.classList.contains('dark')") == (theme == "dark")
        for question in (QUESTION, "Which country was Shamkhani most likely referring to as the “Western country”?"):
            ask(page, question)
            page.wait_for_timeout(1000)
            # the new answer's first line is inside the chat's visible area, though its sources are long
            answer_top, box = page.evaluate("""() => {
                const bots = document.querySelectorAll('#chat .message.bot, #chat .bot-row .message');
                const msg = bots[bots.length - 1];
                const log = document.querySelector('#chat [role=log]');
                return [msg.getBoundingClientRect().top, log.getBoundingClientRect().toJSON()]; }""")
            assert box["top"] - 5 <= answer_top <= box["bottom"] - 40, (answer_top, box)
        assert page.locator(".qa-source details").count() >= 1, "the passage around a quote is collapsed"
        assert page.locator(".qa-source details").first.evaluate("d => !d.open")
        marker = page.locator(".qa-cite").last
        target = marker.get_attribute("href")
        marker.click()
        page.wait_for_function(f"document.querySelector('{target}').classList.contains('qa-hit')", timeout=5_000)
        fg, bg = page.evaluate(COLOURS, f"{target} mark")
        assert contrast(fg, bg) >= 4.5, (theme, fg, bg)
        fg, bg = page.evaluate(COLOURS, target)
        assert bg not in ("rgba(0, 0, 0, 0)", "transparent"), "the clicked source is highlighted"
        assert contrast(fg, bg) >= 4.5, (theme, fg, bg)
        page.screenshot(path=str(ARTIFACTS / f"ui-{theme}.png"))
        browser.close()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by .ci/run")
def test_browser_copy_gives_clean_text(server):
    """#15.3: Copy message / Copy conversation give the answer with [n] and a plain Sources list, no HTML."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        context = browser.new_context(viewport={"width": 1280, "height": 900},
                                      permissions=["clipboard-read", "clipboard-write"])
        page = context.new_page()
        page.goto(server["url"])
        ask(page, QUESTION)
        page.wait_for_timeout(1000)
        page.locator("#chat .message").last.hover()
        page.locator("#chat button[aria-label='Copy message']").last.click()
        page.wait_for_timeout(500)
        copied = page.evaluate("navigator.clipboard.readText()")
        assert "[1]" in copied and "Sources:" in copied and "Ahmed al-Asadi" in copied, copied
        assert "000_e8572f977ee04a7c.txt" in copied and "chars " in copied
        assert "<" not in copied and "qa-" not in copied and "&#" not in copied, copied
        page.evaluate("navigator.clipboard.writeText('')")
        page.locator("#chat button[aria-label^='Copy conversation'], #chat button[aria-label^='Copy all']").first.click()
        page.wait_for_timeout(500)
        copied = page.evaluate("navigator.clipboard.readText()")
        assert QUESTION in copied and "Sources:" in copied and "Ahmed al-Asadi" in copied, copied
        assert "<a" not in copied and "qa-" not in copied and "&#" not in copied, copied
        browser.close()


def test_duplicate_citations_are_merged_and_passages_clamped():
    """#15.6: one passage span cited twice is one source; the slider's value stays in 1..20."""
    from qa.index import BuildReport
    from qa.types import Answer, Citation
    from qa.ui import indexed_message, passages, render_answer

    same = Citation("memo.txt", "The dam held.", 10, 23, None, "Rain fell. The dam held. Roads closed.", 1.0)
    other = Citation("memo.txt", "Roads closed.", 24, 37, None, "Rain fell. The dam held. Roads closed.", 0.9)
    result = Answer(text="The dam held [1] [2]. Roads closed [3].", citations=[same, same, other],
                    abstained=False, question="q")
    rendered = render_answer(result, "t")
    assert rendered.count('class="qa-source"') == 2
    assert 'href="#src-t-1">[1]</a>' in rendered and 'href="#src-t-2">[2]</a>' in rendered
    assert "[3]" not in rendered and rendered.count(">[1]</a>") == 1
    assert [passages(v) for v in (0, 5, 20, 500, "7", "", None)] == [1, 5, 20, 20, 7, 1, 1]
    assert "already indexed" in indexed_message(["memo.txt"], BuildReport(unchanged=3))
    assert "Added memo.txt: 1 new" in indexed_message(["memo.txt"], BuildReport(added=["memo.txt"]))


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by .ci/run")
def test_browser_long_answer_starts_in_view(server, tmp_path):
    """#15.5: an answer taller than the chat is shown from its start, not scrolled to its last source."""
    from playwright.sync_api import sync_playwright

    clauses = ", ".join(f"the {w} depot and the {w} warehouse at kilometre {i * 7} were inspected" for i, w in enumerate(
        "north south east west upper lower inner outer old new river hill coastal desert border central "
        "airport harbour railway canal".split()))
    note = tmp_path / "convoy.txt"
    note.write_text(f"The Zubair convoy inspection found that {clauses}, and all of them were sealed by Thursday.\n",
                    encoding="utf-8")
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 440, "height": 900})  # narrow: a long quote wraps tall
        page.goto(server["url"])
        page.locator("#upload input[type=file]").set_input_files([str(note)])
        page.wait_for_function("document.querySelector('#upload-status').innerText.includes('Added')", timeout=120_000)
        ask(page, "What did the Zubair convoy inspection find?")
        page.wait_for_timeout(1500)
        answer_top, height, box = page.evaluate("""() => {
            const msgs = document.querySelectorAll('#chat .message');
            const msg = msgs[msgs.length - 1];
            const r = msg.getBoundingClientRect();
            return [r.top, r.height, document.querySelector('#chat [role=log]').getBoundingClientRect().toJSON()]; }""")
        assert height > box["height"], (height, box)
        assert box["top"] - 5 <= answer_top <= box["top"] + 120, (answer_top, box)
        browser.close()


# ---------------------------------------------------------------- the workbench: conversations and reports

WESTERN = "Which country was Shamkhani most likely referring to as the “Western country”?"
SEED_A, SEED_B = "000_e8572f977ee04a7c.txt", "002_476c018fafa87246.txt"


def answers(page) -> int:
    return page.locator("#chat .message").count()


def ask_any(page, question):
    """Ask and wait for the whole answer, cited or not (an abstention has no Sources)."""
    before = answers(page)
    page.locator("#question textarea").fill(question)
    page.locator("#ask").click()
    page.wait_for_function(f"document.querySelectorAll('#chat .message').length >= {before + 2}", timeout=60_000)
    page.wait_for_function("!document.querySelector('#chat')?.innerText.includes('checking citations')",
                           timeout=60_000)
    page.wait_for_timeout(1500)  # the streamed words end, the browser state is written


def conversation_titles(page) -> list[str]:
    return [t.strip() for t in page.locator("#conversations label").all_inner_texts()]


def wait_text(page, selector, text, timeout=30_000):
    page.wait_for_function("([s, t]) => document.querySelector(s)?.innerText.includes(t)", arg=[selector, text],
                           timeout=timeout)


def doc_rows(page) -> list[str]:
    return page.locator("#doc-table tr[data-doc]").evaluate_all("rows => rows.map(r => r.dataset.doc)")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by .ci/run")
def test_browser_conversations_restriction_and_export_survive_reload_and_restart(tmp_path_factory):
    """Item 2 (restriction shown and kept) and item 3 (conversation list, rename, delete, export) end to end."""
    from playwright.sync_api import sync_playwright

    proc, info = start_server(tmp_path_factory)
    try:
        with sync_playwright() as p:
            browser = launch(p)
            context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True,
                                          permissions=["clipboard-read", "clipboard-write"])
            page = context.new_page()
            page.goto(info["url"])
            wait_text(page, "#scope", "Searching all 2 reports")
            ask(page, QUESTION)
            page.wait_for_timeout(1500)
            assert any(QUESTION in t for t in conversation_titles(page)), conversation_titles(page)
            quote = page.locator(".qa-source mark").first.inner_text()

            # export: numbered footnotes holding the quote, the document and where; as "copy" says it
            with page.expect_download() as download:
                page.locator("#export").click()
            md = Path(download.value.path()).read_text(encoding="utf-8")
            assert download.value.suggested_filename.endswith(".md")
            assert md.startswith(f"# {QUESTION}") and f"**Question:** {QUESTION}" in md
            assert "Ahmed al-Asadi" in md and re.search(r"^\*\*Answer:\*\*.*\[\^1\]", md, re.M), md
            footnote = re.search(r"^\[\^1\]: (.*)$", md, re.M).group(1)
            assert quote in footnote and SEED_A in footnote and re.search(r"chars \d+–\d+$", footnote), footnote
            page.locator("#chat .message").last.hover()
            page.locator("#chat button[aria-label='Copy message']").last.click()
            page.wait_for_timeout(500)
            assert "[1] " + footnote in page.evaluate("navigator.clipboard.readText()")

            # a second conversation, renamed; a restriction to one report
            page.locator("#new-conversation").click()
            page.wait_for_function("document.querySelectorAll('#chat .message').length === 0", timeout=10_000)
            ask(page, WESTERN)
            wait_text(page, "#conversations", WESTERN[:30], 10_000)  # the answer is kept: its question names it
            page.locator("#conv-title input").fill("Shamkhani notes")
            page.locator("#rename").click()
            wait_text(page, "#conversations", "Shamkhani notes", 10_000)
            page.locator("#documents").get_by_label(SEED_B).check()
            wait_text(page, "#scope", "Searching 1 of 2 reports", 10_000)
            scope_box, input_box = page.locator("#scope").bounding_box(), page.locator("#question").bounding_box()
            assert scope_box["y"] + scope_box["height"] <= input_box["y"] + 1, "the restriction is said above the input"
            page.wait_for_timeout(1500)

            page.reload()
            wait_text(page, "#conversations", "Shamkhani notes")
            titles = conversation_titles(page)
            assert len(titles) == 2 and any(QUESTION in t for t in titles), titles
            page.wait_for_selector(".qa-sources", timeout=30_000)
            assert "France" in page.locator(".qa-sources").last.inner_text(), "the current conversation is shown"
            wait_text(page, "#scope", "Searching 1 of 2 reports")
            assert page.locator("#documents").get_by_label(SEED_B).is_checked()
            assert not page.locator("#documents").get_by_label(SEED_A).is_checked()

            # restricted to a report that cannot answer: it says so, and cites nothing
            ask_any(page, QUESTION)
            last = page.locator("#chat .message").last.inner_text()
            assert last.startswith("The reports do not say") and SEED_B in last, last
            assert page.locator(".qa-sources").count() == 1

            # switch back to the first conversation, then delete it
            page.locator("#conversations").get_by_label(re.compile("Who will be the spokesperson")).check()
            page.wait_for_function("document.querySelector('#chat')?.innerText.includes('Ahmed al-Asadi')",
                                   timeout=10_000)
            assert "Shamkhani" not in page.locator("#chat").inner_text()
            page.locator("#delete-conversation").click()
            page.wait_for_function("document.querySelectorAll('#conversations label').length === 1", timeout=10_000)
            assert "Shamkhani notes" in conversation_titles(page)[0]
            page.wait_for_timeout(1500)
            page.reload()
            wait_text(page, "#conversations", "Shamkhani notes")
            assert len(conversation_titles(page)) == 1, "a deleted conversation stays deleted"

            # a server restart (same address, same index folder) keeps the conversations and the restriction
            proc.terminate()
            proc.wait(timeout=30)
            proc, info = start_server(tmp_path_factory, base=info["base"], port=info["port"])
            page.reload()
            wait_text(page, "#conversations", "Shamkhani notes")
            page.wait_for_selector(".qa-sources", timeout=30_000)
            assert "France" in page.locator(".qa-sources").last.inner_text()
            wait_text(page, "#scope", "Searching 1 of 2 reports")
            page.screenshot(path=str(ARTIFACTS / "ui-workbench.png"), full_page=True)

            # the trash icon clears the conversation for good
            page.locator("#chat button[aria-label='Clear']").first.click()
            page.wait_for_function("document.querySelectorAll('#chat .message').length === 0", timeout=10_000)
            page.wait_for_timeout(1500)
            page.reload()
            wait_text(page, "#conversations", "Shamkhani notes (0)")
            assert answers(page) == 0
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def choose(page, dropdown, label):
    """Pick an option of a Gradio dropdown (it selects on mousedown; its list may open below the viewport)."""
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=label, exact=True).dispatch_event("mousedown")
    page.wait_for_function("([s, v]) => document.querySelector(s).value === v", arg=[f"{dropdown} input", label],
                           timeout=10_000)


def pick_to_remove(page, label):
    choose(page, "#remove-choice", label)
    page.locator("#remove").click()
    page.wait_for_selector("#remove-confirm", state="visible", timeout=10_000)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by .ci/run")
def test_browser_remove_reports_uploaded_and_from_the_source_folder(tmp_path_factory, tmp_path):
    """Item 2: an upload is deleted with its file; a user's own report leaves the index, its file kept, for good."""
    from playwright.sync_api import sync_playwright

    proc, info = start_server(tmp_path_factory)
    corpus = info["corpus"]
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(info["url"])
            page.wait_for_function("document.querySelectorAll('#doc-table tr[data-doc]').length === 2", timeout=30_000)
            row = page.locator(f'#doc-table tr[data-doc="{SEED_A}"]').inner_text()
            assert "TXT" in row and "KB" in row and "UTC" in row and "source folder" in row, row
            note = tmp_path / "harbour.txt"
            note.write_text("# Umm Qasr harbour\n\nThe Umm Qasr harbour reopened to grain ships on Tuesday.\n",
                            encoding="utf-8")
            page.locator("#upload input[type=file]").set_input_files([str(note)])
            wait_text(page, "#upload-status", "Added", 120_000)
            page.wait_for_function("document.querySelectorAll('#doc-table tr[data-doc]').length === 3", timeout=10_000)
            row = page.locator('#doc-table tr[data-doc="harbour.txt"]').inner_text()
            assert "Umm Qasr harbour" in row and "upload" in row and "MD" not in row, row
            ask(page, "When did the Umm Qasr harbour reopen?")
            assert "harbour.txt" in page.locator(".qa-sources").last.text_content()

            # the confirmation step: cancelling changes nothing
            pick_to_remove(page, "Umm Qasr harbour (harbour.txt)")
            assert "uploaded copy is deleted" in page.locator("#remove-plan").inner_text()
            page.locator("#remove-no").click()
            page.wait_for_selector("#remove-confirm", state="hidden", timeout=10_000)
            assert (corpus / "harbour.txt").exists() and "harbour.txt" in doc_rows(page)

            pick_to_remove(page, "Umm Qasr harbour (harbour.txt)")
            page.locator("#remove-yes").click()
            wait_text(page, "#remove-status", "Removed harbour.txt", 120_000)
            assert doc_rows(page) == [SEED_A, SEED_B]
            assert "harbour" not in page.locator("#documents").inner_text()
            assert not (corpus / "harbour.txt").exists(), "the app's own upload is deleted"
            ask_any(page, "When did the Umm Qasr harbour reopen?")
            assert "harbour.txt" not in page.locator("#chat .message").last.text_content()

            # a report that was not uploaded: explained, left out of the index, its file kept
            pick_to_remove(page, SEED_A)
            plan = page.locator("#remove-plan").inner_text()
            assert "stays where it is" in plan and "not uploaded" in plan, plan
            page.locator("#remove-yes").click()
            wait_text(page, "#remove-status", f"Removed {SEED_A}", 120_000)
            assert doc_rows(page) == [SEED_B]
            assert (corpus / SEED_A).exists(), "a user's own file is never deleted"
            assert SEED_A in page.locator("#doc-table .qa-left-out").inner_text()
            wait_text(page, "#scope", "Searching all 1 report")
            ask_any(page, QUESTION)
            assert SEED_A not in page.locator("#chat .message").last.text_content()

            # it stays out through a server restart, whose start re-reads the corpus folder
            proc.terminate()
            proc.wait(timeout=30)
            proc, info = start_server(tmp_path_factory, base=info["base"], port=info["port"])
            page.reload()
            page.wait_for_function("document.querySelectorAll('#doc-table tr[data-doc]').length >= 1", timeout=30_000)
            page.wait_for_timeout(1000)
            assert doc_rows(page) == [SEED_B]

            # "Put back" brings it back; removed again, so does uploading the file again
            choose(page, "#restore-choice", SEED_A)
            page.locator("#restore").click()
            wait_text(page, "#remove-status", f"Put {SEED_A} back", 120_000)
            assert doc_rows(page) == [SEED_A, SEED_B] and page.locator("#restore-row").is_hidden()
            ask(page, QUESTION)
            assert SEED_A in page.locator(".qa-sources").last.text_content()
            pick_to_remove(page, SEED_A)
            page.locator("#remove-yes").click()
            page.wait_for_function("document.querySelectorAll('#doc-table tr[data-doc]').length === 1",
                                   timeout=120_000)
            page.locator("#upload input[type=file]").set_input_files([str(ROOT / "seeds" / SEED_A)])
            wait_text(page, "#upload-status", "Added", 120_000)
            page.wait_for_function("document.querySelectorAll('#doc-table tr[data-doc]').length === 2", timeout=10_000)
            assert page.locator("#doc-table .qa-left-out").count() == 0
            assert sorted(p.name for p in corpus.iterdir() if not p.name.startswith(".")) == [SEED_A, SEED_B]
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by .ci/run")
def test_browser_workbench_fits_a_phone(server):
    """At 390x844 nothing runs off the page: the reports table scrolls inside itself, the scope sits above the input."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        page.goto(server["url"])
        page.wait_for_function("document.querySelectorAll('#doc-table tr[data-doc]').length >= 2", timeout=30_000)
        ask(page, QUESTION)
        page.wait_for_timeout(1500)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, "no sideways scrolling of the page"
        for sel in ("#conversations", "#export", "#documents", "#doc-table", "#remove", "#scope"):
            box = page.locator(sel).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 391, (sel, box)
        scope_box, input_box = page.locator("#scope").bounding_box(), page.locator("#question").bounding_box()
        assert scope_box["y"] + scope_box["height"] <= input_box["y"] + 1
        inner, shown, overflow = page.locator("#doc-table .qa-docs").evaluate(
            "d => [d.scrollWidth, d.clientWidth, getComputedStyle(d).overflowX]")
        assert inner > shown and overflow == "auto", "the table is wider than a phone and scrolls inside its box"
        page.locator("#conv-title input").fill("On the phone")
        page.locator("#rename").click()
        wait_text(page, "#conversations", "On the phone", 10_000)
        page.wait_for_timeout(1500)
        page.reload()
        wait_text(page, "#conversations", "On the phone")
        page.screenshot(path=str(ARTIFACTS / "ui-phone.png"), full_page=True)
        browser.close()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by .ci/run")
def test_browser_keyboard_labels_and_phone_tap_targets(server):
    """Item 5: the first Tab offers a skip to the question, the box is announced as "Question", the
    chat has no unlabelled share button, and on a phone each citation marker is at least 44 x 44 px."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto(server["url"])
        page.wait_for_selector("#question textarea", timeout=30_000)
        assert page.get_by_role("textbox", name="Question").count() == 1
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "skip-to-question"
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.closest('#question') !== null")
        ask(page, QUESTION)
        # a button's name is its aria-label, else its text (the feedback flag's "Wrong citation" option)
        labels = [b.get_attribute("aria-label") or b.text_content() or "" for b in page.locator("#chat button").all()]
        assert labels and all(label.strip() for label in labels), labels
        assert not any("share" in label.lower() for label in labels), labels
        box = page.locator("a.qa-cite").first.bounding_box()
        assert box["width"] >= 44 and box["height"] >= 44, box
        browser.close()
