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


def start_server(tmp_path_factory, extra_env=None):
    base = tmp_path_factory.mktemp("ui")
    corpus = base / "corpus"
    shutil.copytree(ROOT / "seeds", corpus)
    port = free_port()
    env = {**os.environ, "QA_CORPUS": str(corpus), "QA_INDEX": str(base / "index"),
           "GRADIO_TEMP_DIR": str(base / "gradio"), **(extra_env or {})}
    log = open(base / "server.log", "w")
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
    return proc, {"url": url, "corpus": corpus}


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
        note.write_text("The Umm Qasr harbour reopened to grain ships on Tuesday.", encoding="utf-8")
        page.locator("#upload input[type=file]").set_input_files([str(note)])
        page.wait_for_function("document.querySelector('#upload-status').innerText.includes('Added')", timeout=120_000)
        assert (server["corpus"] / "harbour.txt").exists()
        assert not list((server["corpus"].parent / "gradio").rglob("harbour.txt")), "the temporary copy is removed"
        ask(page, "When did the Umm Qasr harbour reopen?")
        last = page.locator(".qa-sources").last.inner_text()
        assert "harbour.txt" in last and "Tuesday" in last

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

    quote = "Details at [the portal](https://evil.example/x) and www.evil.example or mail@evil.example."
    passage = "Before. " + quote + " ![img](http://evil.example/i.png) <a href='http://evil.example'>x</a>"
    result = Answer(text=quote + " [1]", citations=[Citation("memo.txt", quote, 8, 8 + len(quote), None, passage, 1.0)],
                    abstained=False, question="q")
    rendered = render_answer(result, "t1")
    assert rendered.count("<a ") == 1 and 'class="qa-cite"' in rendered  # only the marker is a link
    for live in ("http://", "https://", "www.evil", "](", "<a href", "@evil", "!["):
        assert live not in rendered, live
    import html
    assert html.unescape(re.sub(r"<[^>]+>", "", rendered)).count("https://evil.example/x") == 2  # still readable


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
