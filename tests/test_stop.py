"""Stop (#15 item 2) in LLM mode: a real server answering with SmolLM2 (llama.cpp), a real Chromium.

The answer's generator checks a per-session stop flag between yields and ends itself with a note,
so no late draft can follow it; nothing of the stopped answer is stored.
"""
import time
from pathlib import Path

import pytest

from tests.test_ui import CHROMIUM, QUESTION, ask, launch, start_server

pytestmark = [pytest.mark.llm, pytest.mark.slow]
STOPPED = "Stopped: nothing of this answer was kept."


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by .ci/run")
def test_browser_stop_drops_the_draft_for_good_and_the_next_answer_is_whole(tmp_path_factory):
    pytest.importorskip("llama_cpp", reason="needs the [llm] extra")
    from playwright.sync_api import sync_playwright

    proc, info = start_server(tmp_path_factory, {"QA_LLM": "local", "QA_LLM_MAX_TOKENS": "400"})
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(info["url"])
            page.wait_for_selector("#stop", timeout=30_000)
            assert page.locator("#mode input[type=radio]").count() == 2  # LLM mode is offered and chosen
            assert page.get_by_role("radio", name="extractive").is_checked() is False
            page.locator("#question textarea").fill("What did Qais al-Khazali ask the Iraqi government to do?")
            page.locator("#ask").click()
            page.wait_for_function("document.querySelector('#chat').innerText.includes('checking citations')",
                                   timeout=120_000)
            page.locator("#stop").click()
            page.wait_for_function(f"document.querySelector('#chat').innerText.includes({STOPPED!r})", timeout=30_000)
            # no late draft: watch the chat while the model would still be writing
            deadline = time.time() + 10
            while time.time() < deadline:
                text = page.locator("#chat").inner_text()
                assert "checking citations" not in text and STOPPED in text, text[-300:]
                page.wait_for_timeout(500)
            assert page.locator(".qa-sources").count() == 0
            assert "Khazali" in page.locator("#chat").inner_text(), "the question stays, with the note under it"
            page.wait_for_timeout(1500)
            page.reload()
            page.wait_for_selector("#question textarea", timeout=30_000)
            page.wait_for_timeout(3000)  # a stored turn would be back by now
            assert page.locator("#chat .message").count() == 0, "nothing of the stopped answer was stored"
            # Stop is for that answer only: the next one is written, checked and kept
            ask(page, QUESTION)
            assert "Asadi" in page.locator(".qa-sources").last.inner_text()
            assert STOPPED not in page.locator("#chat").inner_text()
            page.wait_for_timeout(1500)
            page.reload()
            page.wait_for_selector(".qa-sources", timeout=30_000)
            assert page.locator(".qa-sources").count() == 1
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
