"""Feedback on answers (#15 item 3): kept in ``<index>/feedback.jsonl``, read back by ``qa eval``.

Pure functions and the evaluator on a real index; the thumbs and the flag in a real Chromium against
a real server. A failing disk is provoked for real (the file's name taken by a folder) in the browser,
and by a patched ``os.fsync`` for the write function.
"""
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import qa
from qa.feedback import (FEEDBACK_FILE, Feedback, FeedbackCitation, append_feedback, make_feedback, parse_feedback,
                         read_feedback, verdict_of)
from tests.test_ui import CHROMIUM, QUESTION, ask, launch, start_server

ROOT = Path(__file__).resolve().parent.parent
CITES = [{"doc_id": "memo.txt", "quote": "The dam held.", "start": 10, "end": 23, "page": None},
         {"doc_id": "r.pdf", "quote": "Rain fell.", "start": 0, "end": 10, "page": 2}]


def test_verdicts_from_the_chat_events():
    assert [verdict_of(x) for x in (True, False, "Like", "Dislike", "Wrong citation", "wrong citation")] == \
        ["up", "down", "up", "down", "flagged", "flagged"]
    assert verdict_of(None) is None and verdict_of("Other") is None


def test_a_repeated_verdict_on_the_same_answer_counts_once():
    from qa.feedback import RepeatFilter

    guard = RepeatFilter(window=2.0)
    assert guard.fresh("s1", ("c", 1, "up"), now=10.0)
    assert not guard.fresh("s1", ("c", 1, "up"), now=10.5), "the flag menu's second event"
    assert guard.fresh("s2", ("c", 1, "up"), now=10.6), "another browser"
    assert guard.fresh("s1", ("c", 1, "down"), now=10.7) and guard.fresh("s1", ("c", 1, "up"), now=10.8)
    assert guard.fresh("s1", ("c", 1, "up"), now=13.0), "the same verdict given again later"


def test_append_and_read_back_one_line_per_verdict(tmp_path):
    path = tmp_path / "idx" / FEEDBACK_FILE
    first = make_feedback("Who?", "Ali [1].", CITES, "up", "c1", when=0)
    append_feedback(path, first)
    append_feedback(path, make_feedback("Who?", "Ali [1].", CITES[:1], "flagged", "c1"))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and json.loads(lines[0]) == {
        "time": "1970-01-01T00:00:00Z", "question": "Who?", "answer": "Ali [1].", "verdict": "up", "conversation": "c1",
        "citations": [{"doc_id": "memo.txt", "quote": "The dam held.", "start": 10, "end": 23, "page": None},
                      {"doc_id": "r.pdf", "quote": "Rain fell.", "start": 0, "end": 10, "page": 2}]}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"verdict": "up", "citat\n\n{"verdict": "meh"}\n')  # a torn line and a foreign verdict
    records, bad = read_feedback(path)
    assert bad == 2 and [r.verdict for r in records] == ["up", "flagged"]
    assert records[0] == first and records[1].citations == (FeedbackCitation("memo.txt", "The dam held.", 10, 23),)
    with pytest.raises(ValueError):
        make_feedback("q", "a", [], "sideways", "c")
    assert parse_feedback('{"verdict": "down", "citations": [{"doc_id": "x"}]}').citations == ()


def test_a_failing_disk_raises_oserror_and_leaves_no_torn_line(tmp_path, monkeypatch):
    path = tmp_path / FEEDBACK_FILE
    append_feedback(path, make_feedback("q", "a", [], "up", "c"))

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        append_feedback(path, make_feedback("q", "a", [], "down", "c"))
    monkeypatch.undo()
    records, bad = read_feedback(path)
    assert bad == 0 and records[0].verdict == "up"


def test_feedback_subject_prefers_the_stored_turn_and_falls_back_to_the_html():
    from qa.types import Answer, Citation
    from qa.ui import answer_turn, citations_in_html, feedback_subject, render_answer, stopped_chat

    c = Citation("memo.txt", "The dam\nheld.", 10, 23, 2, "Rain fell. The dam\nheld.", 1.0)
    turn = answer_turn(Answer(text="It held [1].", citations=[c]), render_answer(Answer(text="It held [1].",
                                                                                       citations=[c]), "t1"))
    shown = [{"role": "user", "content": "Did the dam hold?"}, {"role": "assistant", "content": turn["content"]}]
    stored = feedback_subject(shown, 1, {"turns": [shown[0], turn]})
    assert stored.question == "Did the dam hold?" and stored.answer == "It held [1]."
    assert stored.citations == [{"doc_id": "memo.txt", "quote": "The dam\nheld.", "start": 10, "end": 23, "page": 2}]
    shown_only = feedback_subject(shown, 1, {"turns": []})  # answered, not stored yet
    assert shown_only.citations == [{"doc_id": "memo.txt", "quote": "The dam held.", "start": 10, "end": 23, "page": 2}]
    assert "It held" in shown_only.answer and "<" not in shown_only.answer
    assert citations_in_html(turn["content"]) == shown_only.citations
    assert feedback_subject(shown, 0, {"turns": []}) is None, "a question is not an answer"
    assert feedback_subject(shown, 7, {"turns": []}) is None
    assert feedback_subject(stopped_chat(shown[:1]), 1, {"turns": []}) is None, "a stopped answer has nothing to judge"


def test_eval_counts_verdicts_and_finds_stale_citations(tmp_path, settings, embedder):
    from qa.evaluation import dataset_for
    from qa.evaluation import feedback as evaluator

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    memo = "Rain fell on Monday. The dam held through the storm. Repairs start in May."
    (corpus / "memo.txt").write_text(memo, encoding="utf-8")
    (corpus / "silo.txt").write_text("The silo was repaired in March.", encoding="utf-8")
    index = tmp_path / "index"
    qa.index_paths([corpus], index=index, settings=settings)
    s = memo.index("The dam")
    held = {"doc_id": "memo.txt", "quote": "The dam held through the storm.", "start": s, "end": s + 31, "page": None}
    silo = {"doc_id": "silo.txt", "quote": "The silo was repaired in March.", "start": 0, "end": 31, "page": None}
    path = index / FEEDBACK_FILE
    for verdict, conv, cites in (("up", "a", [held]), ("flagged", "a", [held]), ("down", "b", [silo]),
                                 ("flagged", "c", [silo, held])):
        append_feedback(path, make_feedback(f"q-{conv}", f"answer {conv} [1]", cites, verdict, conv))
    assert dataset_for(path) is evaluator
    args = SimpleNamespace(index=None, limit=None)
    summary, rows = evaluator.run(path, settings, args)
    assert {k: summary[k] for k in ("records", "answers", "up", "down", "flagged", "citations", "stale", "gone")} == \
        {"records": 4, "answers": 3, "up": 1, "down": 1, "flagged": 2, "citations": 5, "stale": 0, "gone": 0}
    assert summary["flagged_share"] == round(2 / 3, 4)

    # the report changes: the dam sentence moves, the silo report goes
    (corpus / "memo.txt").write_text("A new first line. " + memo, encoding="utf-8")
    (corpus / "silo.txt").unlink()
    qa.index_paths([corpus], index=index, settings=settings)
    summary, rows = evaluator.run(path, settings, args)
    assert summary["stale"] == 3 and summary["gone"] == 2
    assert [c["status"] for c in rows[3]["citations"]] == ["gone", "stale"]
    assert "flagged_share" in evaluator.headline(summary)


def test_cli_eval_reads_a_feedback_file(tmp_path, seeds_index, settings):
    text = (ROOT / "seeds" / "000_e8572f977ee04a7c.txt").read_text(encoding="utf-8")
    s = text.index("Ahmed al-Asadi")
    cite = {"doc_id": "000_e8572f977ee04a7c.txt", "quote": text[s:s + 14], "start": s, "end": s + 14, "page": None}
    path = tmp_path / "exported.jsonl"  # any name: the first line says what it is
    append_feedback(path, make_feedback("q", "a [1]", [cite], "up", "c"))
    append_feedback(path, make_feedback("q", "a [1]", [{**cite, "start": s + 1}], "flagged", "c"))
    done = subprocess.run([sys.executable, "-m", "qa.cli", "eval", str(path), "--index", str(seeds_index), "--json"],
                          capture_output=True, text=True, cwd=ROOT, env=os.environ, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["up"], summary["flagged"], summary["answers"], summary["flagged_share"]) == (1, 1, 1, 1.0)
    assert (summary["citations"], summary["stale"]) == (2, 1)
    assert "flagged_share" in done.stdout


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by .ci/run")
def test_browser_thumbs_and_flag_are_kept_and_a_failed_write_is_said(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    proc, info = start_server(tmp_path_factory)
    path = info["base"] / "index" / FEEDBACK_FILE
    source = (info["corpus"] / "000_e8572f977ee04a7c.txt").read_text(encoding="utf-8")
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(info["url"])
            ask(page, QUESTION)
            bot = page.locator("#chat .message-row, #chat .message-wrap").last

            def status(text):
                page.wait_for_function(f"document.querySelector('#feedback-status').innerText.includes({json.dumps(text)})",
                                       timeout=15_000)

            page.locator("#chat button[aria-label='Like']").last.click()
            status("helpful")
            page.locator("#chat button[aria-label='Feedback']").last.click()
            page.get_by_role("button", name="Wrong citation").last.click()
            status("flagged as wrong")
            page.locator("#chat button[aria-label='Dislike']").last.click()
            status("not helpful")
            records, bad = read_feedback(path)
            assert bad == 0 and [r.verdict for r in records] == ["up", "flagged", "down"]
            for r in records:
                assert r.question == QUESTION and "Ahmed al-Asadi" in r.answer and "[1]" in r.answer
                assert r.conversation == records[0].conversation != ""
                assert r.citations and all(source[c.start:c.end] == c.quote for c in r.citations), r.citations
                assert r.citations[0].doc_id == "000_e8572f977ee04a7c.txt"

            # the disk fails (the file's name is taken by a folder): said under the chat, no traceback
            path.rename(path.with_suffix(".kept"))
            path.mkdir()
            page.locator("#chat button[aria-label='Like'], #chat button[aria-label='Liked']").last.click()
            status("not saved")
            assert "Traceback" not in page.locator("body").inner_text()
            path.rmdir()
            path.with_suffix(".kept").rename(path)
            ask(page, "Which country was Shamkhani most likely referring to as the “Western country”?")
            assert "France" in page.locator(".qa-sources").last.inner_text(), "the chat still works"
            browser.close()
        done = subprocess.run([sys.executable, "-m", "qa.cli", "eval", str(path), "--json"], capture_output=True,
                              text=True, cwd=ROOT, env={**os.environ, "QA_CORPUS": str(info["corpus"])}, timeout=600)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert (summary["up"], summary["down"], summary["flagged"], summary["stale"]) == (1, 1, 1, 0)
        assert summary["flagged_share"] == 1.0 and summary["index"] == str(path.parent)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
