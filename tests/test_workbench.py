"""The chat as a workbench: conversations kept and exported, and the reports managed from the chat.

Pure functions here; the browser tests (a real server and Chromium) are in tests/test_ui.py.
"""
import html
import re
import shutil

import pytest

import qa
from qa.api import document_list, excluded_documents, remove_from_index
from qa.types import Answer, Citation

CONVERSATION = {
    "id": "c1", "title": "Basra *port* notes", "turns": [
        {"role": "user", "content": "Who runs the port?"},
        {"role": "assistant", "content": "<b>html the export must not read</b>",
         "text": "Ali runs it [1]. The silo [2] was repaired [1].",
         "citations": [{"doc_id": "ports/basra_notes.md", "quote": "Ali runs the [North] port *daily*.", "start": 10,
                        "end": 44, "page": None},
                       {"doc_id": "silo.pdf", "quote": "The silo was\nrepaired in March.", "start": 120, "end": 150,
                        "page": 3}]},
        {"role": "user", "content": "And the harbour?"},
        {"role": "assistant", "content": "x", "text": "It reopened on Tuesday [1].",
         "citations": [{"doc_id": "harbour.txt", "quote": "The harbour reopened on Tuesday.", "start": 0, "end": 32,
                        "page": None}]},
    ]}


def test_markdown_export_numbers_footnotes_through_the_conversation():
    from qa.ui import conversation_markdown, source_text

    md = conversation_markdown(CONVERSATION)
    assert md.startswith("# Basra \\*port\\* notes\n")
    assert "**Question:** Who runs the port?" in md
    assert "**Answer:** Ali runs it [^1]. The silo [^2] was repaired [^1]." in md
    assert "**Answer:** It reopened on Tuesday [^3]." in md, "the second answer's [1] is the third footnote"
    notes = re.findall(r"^\[\^(\d+)\]: (.*)$", md, flags=re.M)
    assert [n for n, _ in notes] == ["1", "2", "3"]
    # each footnote: the quote (Markdown-inert), its document and location, page when there is one
    assert notes[0][1] == "“Ali runs the \\[North\\] port \\*daily\\*.” — ports/basra_notes.md, chars 10–44"
    assert notes[1][1] == "“The silo was repaired in March.” — silo.pdf, page 3, chars 120–150"
    assert notes[2][1] == "“The harbour reopened on Tuesday.” — harbour.txt, chars 0–32"
    assert "html the export must not read" not in md
    # the copy buttons say a source the same way (render_answer's data-copy)
    assert source_text("silo.pdf", "The silo was\nrepaired in March.", 120, 150, 3) == notes[1][1]


def test_markdown_export_of_answers_without_citations_and_bad_markers():
    from qa.ui import conversation_markdown

    md = conversation_markdown({"title": "t", "turns": [
        {"role": "user", "content": "Q?"},
        {"role": "assistant", "content": "⚠️ Could not answer: <i>boom</i>"},  # stored without "text"
        {"role": "assistant", "text": "No such source [4].", "citations": []}]})
    assert "**Answer:** ⚠️ Could not answer: boom" in md
    assert "No such source \\[4\\]." in md and "[^" not in md


def test_render_answer_copy_line_is_the_export_footnote():
    from qa.ui import answer_turn, conversation_markdown, render_answer

    c = Citation("memo.txt", "The dam held.", 10, 23, 2, "Rain fell. The dam held.", 1.0)
    result = Answer(text="The dam held [1] [2].", citations=[c, c], question="q")
    turn = answer_turn(result, render_answer(result, "t"))
    assert turn["text"] == "The dam held [1]." and len(turn["citations"]) == 1
    md = conversation_markdown({"title": "t", "turns": [{"role": "user", "content": "q"}, turn]})
    footnote = re.search(r"^\[\^1\]: (.*)$", md, flags=re.M).group(1)
    copy_line = re.search(r'data-copy="([^"]*)"', turn["content"]).group(1)
    import html
    assert html.unescape(copy_line) == "[1] " + footnote


def test_stored_conversations_are_repaired_and_titled():
    from qa.ui import NEW_TITLE, conversation_choices, conversations, current_conversation, title_from

    for junk in (None, [], "x", {"items": "no"}, {"items": [{"id": 3}], "current": "zz"}):
        state = conversations(junk)
        assert len(state["items"]) == 1 and current_conversation(state)["title"] == NEW_TITLE
        assert state["current"] == conversations(None)["current"], "an answer must find the conversation it was asked in"
    state = conversations({"current": "gone", "items": [
        {"id": "a", "title": "First", "turns": [{"role": "user", "content": "q"}, {"role": "tool"}, "bad"]},
        {"id": "b", "title": "", "turns": []}]})
    assert state["current"] == "a" and len(current_conversation(state)["turns"]) == 1
    assert conversation_choices(state) == [("First (1)", "a"), (f"{NEW_TITLE} (0)", "b")]
    assert title_from("  What   did the   Basra port report say? ") == "What did the Basra port report say?"
    long = title_from("word " * 40)
    assert len(long) <= 61 and long.endswith("…")


def test_scope_line_and_a_restricted_abstention():
    from qa.ui import restricted, scope_line

    assert scope_line([], 14) == "Searching all 14 reports."
    assert scope_line(["a.txt", "b.txt"], 14).startswith("Searching 2 of 14 reports: a")
    no = Answer(text="The reports do not say: no passage in the indexed reports answers this question.",
                abstained=True, question="q")
    said = restricted(no, ["harbour.txt"]).text
    assert said.startswith("The reports do not say") and "harbour.txt" in said and "chosen report" in said
    assert restricted(no, []).text == no.text
    yes = Answer(text="It did [1].", citations=[], question="q")
    assert restricted(yes, ["harbour.txt"]) is yes


def test_only_the_apps_own_unchanged_uploads_count_as_deletable(tmp_path):
    from qa.ui import delete_upload, is_app_upload, record_upload, store_upload

    folder = tmp_path / "corpus"
    folder.mkdir()
    own = folder / "seed.txt"  # the user's file, in the same folder
    own.write_text("The user's own report.", encoding="utf-8")
    src = tmp_path / "in" / "note.txt"
    src.parent.mkdir()
    src.write_text("An uploaded note.", encoding="utf-8")
    kept = store_upload(src, folder, 10_000)
    record_upload(kept.path, folder)
    assert is_app_upload(kept.path, folder) and not is_app_upload(own, folder)
    assert not is_app_upload(src, folder), "a file outside the upload folder never is"
    assert not is_app_upload(None, folder)
    kept.path.write_text("Since overwritten by the user.", encoding="utf-8")
    assert not is_app_upload(kept.path, folder), "an upload the user changed is theirs now"
    kept.path.write_text("An uploaded note.", encoding="utf-8")
    link = folder / "link.txt"
    link.symlink_to(kept.path)
    assert not is_app_upload(link, folder)
    delete_upload(kept.path, folder)
    assert not kept.path.exists() and own.exists() and not is_app_upload(kept.path, folder)


def test_removed_report_stays_out_of_every_reindex_until_restored(corpus, settings, tmp_path):
    """The exclusion lives beside the index: an update, a rebuild and the default-index refresh honour it."""
    index = tmp_path / "index"
    qa.index_paths([corpus], index=index, settings=settings)
    infos = {d.doc_id: d for d in document_list(index, settings)}
    gone = "000_e8572f977ee04a7c.txt"
    assert gone in infos and infos[gone].file == corpus / gone and infos[gone].indexed.endswith("Z")
    assert infos[gone].text_bytes == len((corpus / gone).read_bytes()) and infos[gone].pages == 0
    first_indexed = infos["002_476c018fafa87246.txt"].indexed

    remove_from_index([gone], index=index, settings=settings)
    report, _ = qa.index_paths([corpus], index=index, settings=settings)
    assert report.removed == [gone] and report.excluded == [gone]
    assert gone not in {d.doc_id for d in document_list(index, settings)}
    assert (corpus / gone).exists(), "the user's file is kept"
    assert excluded_documents(index, settings) == [gone]
    qa.index_paths([corpus], index=index, settings=settings, rebuild=True)
    assert gone not in {d.doc_id for d in document_list(index, settings)}
    result = qa.answer("Who will be the spokesperson of the new political alliance?", index=index, settings=settings)
    assert all(c.doc_id != gone for c in result.citations)

    remove_from_index([gone], index=index, settings=settings, restore=True)
    report, _ = qa.index_paths([corpus], index=index, settings=settings)
    assert report.added == [gone] and excluded_documents(index, settings) == []
    assert not (index / "excluded.json").exists()
    infos = {d.doc_id: d for d in document_list(index, settings)}
    assert gone in infos and infos["002_476c018fafa87246.txt"].indexed >= first_indexed


def test_default_index_refresh_honours_removed_reports(tmp_path, settings):
    from dataclasses import replace

    from qa.api import ensure_default_index

    corpus = tmp_path / "corpus"
    shutil.copytree(qa.__path__[0] + "/../seeds", corpus)
    mine = replace(settings, corpus=corpus, index=tmp_path / "default")
    ensure_default_index(mine)
    remove_from_index(["002_476c018fafa87246.txt"], settings=mine)
    report = ensure_default_index(mine)
    assert report is not None and report.removed == ["002_476c018fafa87246.txt"]
    assert ensure_default_index(mine) is None, "no rebuild on every start once it is out"


@pytest.mark.parametrize("n,shown", [(0, "0 B"), (812, "812 B"), (14_540, "14.2 KB"), (3_250_000, "3.1 MB")])
def test_human_size(n, shown):
    from qa.ui import human_size

    assert human_size(n) == shown


def test_documents_table_is_inert_and_says_where_each_report_comes_from(tmp_path):
    from qa.api import DocumentInfo
    from qa.ui import documents_table, record_upload

    folder = tmp_path / "corpus"
    folder.mkdir()
    up = folder / "up.pdf"
    up.write_bytes(b"%PDF fake but recorded")
    record_upload(up, folder)
    seed = folder / "seed.txt"
    seed.write_text("x" * 2000)
    rows = documents_table([DocumentInfo("up.pdf", "<img src=x onerror=alert(1)>", 4, 900, "2026-01-02T03:04:05Z", up),
                            DocumentInfo("seed.txt", "", 0, 2000, "", seed),
                            DocumentInfo("old.md", "Old", 0, 10, "", None)], folder, ["gone.txt"])
    assert "<img" not in rows
    cells = [re.sub(r"<[^>]+>", "|", r) for r in re.findall(r"<tr data-doc.*?</tr>", rows)]
    assert "PDF" in cells[0] and "|4|" in cells[0] and "2026-01-02 03:04:05 UTC" in cells[0] and "upload" in cells[0]
    assert "seed|" in cells[1] and "TXT" in cells[1] and "2.0 KB" in cells[1] and "source folder" in cells[1]
    assert "file gone" in cells[2] and "10 B text" in cells[2]
    assert "gone.txt" in html.unescape(rows) and "Put back" in rows


def test_a_finished_answer_joins_its_own_conversation_as_the_browser_has_it_now():
    from qa.ui import NEW_TITLE, add_turns, conversations

    turns = [{"role": "user", "content": "Who runs the port?"}, {"role": "assistant", "content": "Ali [1]."}]
    state = {"current": "b", "items": [{"id": "a", "title": NEW_TITLE, "turns": []},
                                       {"id": "b", "title": "Renamed meanwhile", "turns": []}]}
    after = add_turns(state, {"conversation": "a", "turns": turns})
    assert after["current"] == "b", "switching away while the answer came stands"
    assert after["items"][0]["turns"] == turns and after["items"][0]["title"] == "Who runs the port?"
    assert after["items"][1] == {"id": "b", "title": "Renamed meanwhile", "turns": []}
    # asked in "a", which was deleted before the answer came: it is not brought back
    gone = add_turns({"current": "b", "items": [state["items"][1]]}, {"conversation": "a", "turns": turns})
    assert [c["id"] for c in gone["items"]] == ["b"] and gone["items"][0]["turns"] == []
    assert add_turns(None, {"conversation": "x", "turns": turns})["items"][0]["turns"] == []
    assert conversations(after) == after


def test_stop_flags_are_per_session_and_per_answer():
    from qa.ui import StopFlags

    flags = StopFlags()
    assert not flags.stop("s1"), "nothing is being written"
    one = flags.start("s1")
    other = flags.start("s2")
    assert flags.stop("s1") and flags.stopped(one) and not flags.stopped(other)
    flags.finish("s1", one)
    assert not flags.stopped(one) and not flags.stop("s1")
    again = flags.start("s1")
    assert not flags.stopped(again), "a new answer starts unstopped"
    flags.finish("s1", one)  # an old answer finishing late leaves the new one registered
    assert flags.stop("s1") and flags.stopped(again)


def test_a_stopped_answer_leaves_a_note_and_no_history():
    from qa.ui import STOPPED, plain_history, stopped_chat

    asked = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]
    shown = stopped_chat(asked)
    assert shown[:3] == asked and len(shown) == 4 and STOPPED in shown[3]["content"]
    assert STOPPED == "Stopped: nothing of this answer was kept."
    later = shown + [{"role": "user", "content": "Q3"}, {"role": "assistant", "content": "A3"}]
    assert plain_history(later) == [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
                                    {"role": "user", "content": "Q3"}, {"role": "assistant", "content": "A3"}]
