"""Answers from the real model and index: cited, verbatim, abstaining, conversational."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import qa
from qa import Answer, Citation

A = "000_e8572f977ee04a7c.txt"
B = "002_476c018fafa87246.txt"


def test_default_index_is_built_on_first_use():
    a = qa.answer("Who will be the spokesperson of the new political alliance?")
    assert isinstance(a, Answer) and not a.abstained
    assert "Ahmed al-Asadi" in a.text and "[1]" in a.text
    c = a.citations[0]
    assert isinstance(c, Citation) and c.doc_id == A and c.page is None and c.score > 0
    assert "will serve as the spokesperson for the new political alliance" in c.quote


def test_list_question_gathers_every_item(seeds_index, settings):
    a = qa.answer("Which groups make up the Mujahideen Alliance?", index=seeds_index, settings=settings)
    for group in ["Harakat al-Nujaba", "Kata’ib Hezbollah", "Kata’ib al-Tiar al-Rasali"]:
        assert group in a.text


def test_question_spanning_both_reports_cites_both(seeds_index, settings):
    a = qa.answer("What did Sistani ask of P.M.F. forces, and what did Khamenei ask of Abadi?",
                  index=seeds_index, settings=settings)
    assert {c.doc_id for c in a.citations} == {A, B}
    assert "choose between politics and military roles" in a.text and "not to dismantle the P.M.F." in a.text


@pytest.mark.parametrize("question", [
    "How many fighters does the P.M.F. have?",
    "What is the capital of Australia?",
    "How many seats did the Mujahideen Alliance win in the May elections?",
])
def test_out_of_corpus_questions_abstain(seeds_index, settings, question):
    a = qa.answer(question, index=seeds_index, settings=settings)
    assert a.abstained and a.citations == [] and a.text.startswith("The reports do not say")


def test_follow_up_is_answered_through_history(seeds_index, settings):
    first = qa.answer("Who is the head of Asa’ib Ahl al-Haq?", index=seeds_index, settings=settings)
    history = [{"role": "user", "content": "Who is the head of Asa’ib Ahl al-Haq?"},
               {"role": "assistant", "content": first.text}]
    a = qa.answer("What did he say his group would do with its weapons?", history, index=seeds_index,
                  settings=settings)
    assert "hand over its heavy and medium weapons" in a.text
    alone = qa.answer("What did he say his group would do with its weapons?", index=seeds_index, settings=settings)
    assert alone.query != a.query and "Khazali" in a.query


def test_restricting_to_a_document(seeds_index, settings):
    a = qa.answer("What did Sistani do?", index=seeds_index, settings=settings, doc_ids=[B])
    assert a.citations and {c.doc_id for c in a.citations} == {B}


@pytest.mark.parametrize("question", ["", "   \n\t "])
def test_empty_question_is_refused(question):
    with pytest.raises(ValueError, match="empty"):
        qa.answer(question)


def test_huge_question_is_answered_from_a_truncated_query(seeds_index, settings):
    question = "Who will be the spokesperson of the new political alliance? " + "padding " * 13000
    assert len(question) > 100_000
    a = qa.answer(question, index=seeds_index, settings=settings)
    assert len(a.question) <= settings.max_question_chars
    assert isinstance(a.abstained, bool)


def test_concurrent_calls_get_their_own_answers(seeds_index, settings):
    questions = ["Who will be the spokesperson of the new political alliance?", "Who heads the IRGC’s elite Quds Force?",
                 "Which country was Shamkhani most likely referring to as the “Western country”?",
                 "Who is the secretary general of the Badr Organization?"] * 3
    expected = {q: qa.answer(q, index=seeds_index, settings=settings).text for q in set(questions)}
    barrier = threading.Barrier(6)

    def ask(q):
        barrier.wait(timeout=30) if threading.current_thread().name != "MainThread" else None
        return q, qa.answer(q, index=seeds_index, settings=settings).text

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(ask, questions))
    assert all(text == expected[q] for q, text in results)


def test_a_question_in_a_report_is_never_the_answer(corpus, tmp_path, settings):
    """A quiz page repeating the question verbatim must not be cited as its answer."""
    (corpus / "quiz.txt").write_text(
        "Weekly news quiz.\n\nWho will be the spokesperson of the new political alliance?\n\n"
        "Which country was Shamkhani most likely referring to?\n", encoding="utf-8")
    qa.index_paths([corpus], index=tmp_path / "ix", settings=settings)
    a = qa.answer("Who will be the spokesperson of the new political alliance?", index=tmp_path / "ix",
                  settings=settings)
    assert not a.abstained and "Ahmed al-Asadi" in a.text
    assert all(c.doc_id != "quiz.txt" and not c.quote.rstrip().endswith("?") for c in a.citations)


def test_names_the_reports_never_mention(seeds_index, settings):
    from qa.extractive import unknown_names
    from qa.index import load_index
    from qa.question import analyse

    index = load_index(seeds_index, settings)
    assert unknown_names(analyse("What did Saudi Arabia say about Saudi Arabia's allies?"), index) == ["Saudi", "Arabia"]
    assert unknown_names(analyse("What happened to the P.M.F. in FY2014?"), index) == []  # the reports say "In 2014"
    assert unknown_names(analyse("What happened in FY2031?"), index) == ["FY2031"]
    a = qa.answer("What did Saudi Arabia say about the Mujahideen Alliance?", index=seeds_index, settings=settings)
    assert a.abstained and "Saudi" in a.notice


def test_follow_up_with_the_full_previous_answer_keeps_the_person(seeds_index, settings):
    """The chat sends the whole previous answer as history; "he" must stay Khazali, not become
    the Sistani of a neighbouring "He did not call …" sentence."""
    first = qa.answer("Who heads Asa’ib Ahl al-Haq?", index=seeds_index, settings=settings)
    history = [{"role": "user", "content": "Who heads Asa’ib Ahl al-Haq?"}, {"role": "assistant", "content": first.text}]
    a = qa.answer("What did he ask the government to do?", history, index=seeds_index, settings=settings)
    assert "Khazali" in a.citations[0].quote and "called on the Iraqi government" in a.citations[0].quote
    assert not any("Sistani" in c.quote or c.quote.startswith("He did not call") for c in a.citations)


@pytest.mark.parametrize("history", ["abc", {"role": "user"}, ["Who?"], [None], [{"content": "x"}],
                                     [{"role": "robot", "content": "x"}]])
def test_malformed_history_is_a_clear_error(seeds_index, settings, history):
    with pytest.raises(ValueError, match="history"):
        qa.answer("Who heads Asa’ib Ahl al-Haq?", history, index=seeds_index, settings=settings)


def test_changed_retrieval_settings_are_not_served_from_the_cache(seeds_index, settings):
    import dataclasses

    import qa.api

    base = qa.api.get_engine(seeds_index, settings)
    other = qa.api.get_engine(seeds_index, dataclasses.replace(settings, rrf_k=5, candidates=7))
    assert other.retriever.settings.rrf_k == 5 and other.retriever.settings.candidates == 7
    assert base.retriever.settings.rrf_k == settings.rrf_k
    assert other.index is base.index  # the loaded index itself is shared


@pytest.mark.parametrize("question,doc", [
    ("Who is the head of Asa’ib Ahl al-Haq?", B),
    ("Whom did Shamkhani meet in Tehran?", A),
    ("Who heads the IRGC’s elite Quds Force?", A),
    ("Who will be the spokesperson of the new political alliance?", B),
])
def test_restricted_to_a_report_that_does_not_say(seeds_index, settings, question, doc):
    """Asked within one report that does not answer, the reply is the fixed abstention, not a fragment."""
    a = qa.answer(question, index=seeds_index, settings=settings, doc_ids=[doc])
    assert a.abstained and a.text.startswith("The reports do not say") and not a.citations


def test_a_sentence_repeated_on_many_pages_is_quoted_once(tmp_path, settings):
    """Ten pages open with the same note: the answer quotes it once, not once a page."""
    from tests.test_index import STATEMENT_QUESTION, statement_filing

    index = tmp_path / "idx"
    qa.index_paths([statement_filing(tmp_path / "filings")], index=index, settings=settings)
    a = qa.answer(STATEMENT_QUESTION, index=index, settings=settings)
    quotes = [" ".join(c.quote.split()) for c in a.citations]
    assert quotes and len(quotes) == len(set(quotes)), quotes


def test_a_statement_question_is_answered_by_the_statements_row(tmp_path, settings):
    """Asked for a balance-sheet item, the answer quotes the balance sheet's row for it (with its
    page), not the prose of another report that talks about inventories and the balance sheet."""
    from tests.pdfs import CHROMIUM, print_to_pdf, report_html

    if CHROMIUM is None:
        pytest.skip("chromium is needed (.ci/run installs it)")
    folder = tmp_path / "filings"
    folder.mkdir()
    rows = [["", "2022", "2021"], ["Cash and cash equivalents", "1,980", "1,101"],
            ["Merchandise inventories", "5,409", "5,209"], ["Total current assets", "8,870", "9,829"],
            ["Total assets", "12,901", "13,049"], ["Accounts payable", "5,257", "4,873"]]
    print_to_pdf(report_html("Consolidated Balance Sheets", ["All amounts in millions of dollars."], table=rows),
                 folder / "ACME_10K.pdf")
    (folder / "letter.txt").write_text(
        "ACME's letter to shareholders discusses its balance sheet. Management says merchandise inventories "
        "on the balance sheet were kept lean this year, and the balance sheet stayed strong.", encoding="utf-8")
    index = tmp_path / "idx"
    qa.index_paths([folder], index=index, settings=settings)
    a = qa.answer("Using the balance sheet, what were ACME's merchandise inventories in 2022?", index=index,
                  settings=settings)
    assert a.citations and a.citations[0].doc_id == "ACME_10K.pdf" and a.citations[0].page == 1
    assert a.citations[0].quote.startswith("Merchandise inventories") and "5,409" in a.citations[0].quote
