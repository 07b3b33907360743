"""Sentence and passage splitting on the seed reports: abbreviation-safe, exact offsets."""
from pathlib import Path

import pytest

from qa.chunk import chunk_document, split_sentences
from qa.load import load_corpus

SEEDS = Path(__file__).resolve().parent.parent / "seeds"


@pytest.fixture(scope="module")
def seed_docs():
    docs, skipped = load_corpus([SEEDS])
    assert not skipped
    return {d.doc_id: d for d in docs}


def sentences_of(doc):
    return [doc.text[s:e] for s, e in split_sentences(doc.text)]


def test_offsets_are_exact_and_trimmed(seed_docs):
    for doc in seed_docs.values():
        spans = split_sentences(doc.text)
        assert len(spans) > 10
        for (s, e), (s2, _) in zip(spans, spans[1:] + [(len(doc.text), 0)]):
            assert doc.text[s:e] == doc.text[s:e].strip()
            assert e <= s2
        # nothing but whitespace is left between sentences
        covered = "".join(doc.text[s:e] for s, e in spans)
        assert "".join(doc.text.split()) == "".join(covered.split())


def test_initialisms_do_not_end_sentences(seed_docs):
    a = sentences_of(seed_docs["000_e8572f977ee04a7c.txt"])
    assert ("The A.A.H. commander, who has close ties with Iran’s Revolutionary Guards and Lebanon’s Hezbollah, "
            "said the group will pursue its political ambitions separate from its military affairs.") in a
    assert ("Qais al-Khazali, the head of the Asa’ib Ahl al-Haq, called on the Iraqi government to value P.M.F. "
            "forces as an asset and treat them fairly.") in a
    assert "In 2014, it was Sistani’s religious edict that resulted in P.M.F.’s creation to fight ISIS." in a
    for doc in seed_docs.values():
        for sentence in sentences_of(doc):
            assert not sentence[0].islower(), sentence


def test_initialism_before_a_sentence_starter_ends_the_sentence(seed_docs):
    b = sentences_of(seed_docs["002_476c018fafa87246.txt"])
    assert ("With the battle against ISIS nearly over, Tehran has increasingly been pressuring Iraqi leaders not "
            "to disband the P.M.F.") in b
    assert "Many powerful units within the P.M.F. are closely aligned with Iran and are more answerable to Tehran than Baghdad." in b


def test_us_and_closing_quotes():
    text = 'The U.S. embassy said it "will stay." U.S. officials agreed. He left the U.S. The talks ended.'
    got = [text[s:e] for s, e in split_sentences(text)]
    assert got == ['The U.S. embassy said it "will stay."', "U.S. officials agreed.", "He left the U.S.",
                   "The talks ended."]


def test_closing_quote_stays_with_its_sentence(seed_docs):
    a = sentences_of(seed_docs["000_e8572f977ee04a7c.txt"])
    assert any(s.endswith("State of Law coalition.”") for s in a)
    assert any(s.startswith("Ahmed al-Asadi, who recently resigned") for s in a)


def test_passages_pack_whole_sentences_with_overlap(seed_docs):
    doc = seed_docs["000_e8572f977ee04a7c.txt"]
    sentences, passages = chunk_document(doc, chunk_chars=600, overlap=1)
    assert len(passages) > 3
    for p in passages:
        assert p.start == sentences[p.first].start and p.end == sentences[p.last - 1].end
        assert p.end - p.start <= 600 or p.last - p.first == 1
    for prev, nxt in zip(passages, passages[1:]):
        assert nxt.first == prev.last - 1  # one shared sentence
    assert passages[-1].last == len(sentences)


def test_pdf_pages_bound_passages(tmp_path):
    from tests.pdfs import write_pdf
    from qa.load import load_file

    pdf = write_pdf(tmp_path / "r.pdf", ["Page one talks about the budget. It is large.", "Page two names the chair."])
    doc = next(load_file(pdf))
    sentences, passages = chunk_document(doc, 600, 1)
    assert [s.page for s in sentences] == [1, 1, 2]
    assert [p.page for p in passages] == [1, 2]
    assert doc.text[sentences[2].start:sentences[2].end] == "Page two names the chair."


def test_a_long_document_reports_its_own_progress(tmp_path, monkeypatch):
    """A 35 MB report takes minutes to split: indexing says how far it got inside it."""
    import qa
    import qa.chunk
    import qa.index
    from qa.settings import Settings

    monkeypatch.setattr(qa.index, "LONG_DOCUMENT", 2000)
    monkeypatch.setattr(qa.chunk, "PROGRESS_EVERY", 1000)
    seen = []
    qa.index_paths([SEEDS], index=tmp_path / "idx", settings=Settings.from_env(),
                   progress=lambda stage, done, total: seen.append((stage, done, total)))
    inside = [(done, total) for stage, done, total in seen if stage == "chunking 000_e8572f977ee04a7c.txt (characters)"]
    assert len(inside) >= 3
    assert [d for d, _ in inside] == sorted(d for d, _ in inside) and inside[-1][0] == inside[-1][1]


def test_a_passage_is_searched_with_its_documents_title():
    """The title goes before every passage that does not already hold it; a report without a
    title is searched as written (its first sentence before every passage blurred the seeds)."""
    from qa.chunk import passage_lead, searched_text

    text = "Ferry sinks off Zanzibar\n\nThe vessel left port at dawn. Most passengers were rescued."
    assert passage_lead("  Ferry sinks\n off Zanzibar ") == "Ferry sinks off Zanzibar"
    assert passage_lead("") == ""
    assert len(passage_lead("word " * 100)) <= 200
    lead = "Ferry sinks off Zanzibar"
    assert searched_text(lead, "Most passengers were rescued.") == lead + "\nMost passengers were rescued."
    assert searched_text(lead, text[:55]) == text[:55]  # the first passage holds the title already
    assert searched_text("", "Most passengers were rescued.") == "Most passengers were rescued."


def test_heading_lines_are_short_titles_not_sentences_rows_or_list_items():
    """A page's heading names what the page is about; sentences, table rows and notes do not."""
    from qa.chunk import is_heading_line

    for line in ("Consolidated Balance Sheets", "CONSOLIDATED STATEMENTS OF CASH FLOWS",
                 "CONSOLIDATED\tBALANCE\tSHEETS", "Note 6 - Restructuring", "Item 7"):
        assert is_heading_line(line), line
    for line in ("ADOBE INC.", "(In millions, except per share data)", "Net income\t$ 4,756 $\t4,822",
                 "$ in millions, except per share amounts", "2022\t2021\t2020", "1. Travel chaos",
                 "the vessel left port at dawn", "Revenue grew 12% as subscriptions rose.",
                 "A very long line " * 10):
        assert not is_heading_line(line), line


def test_a_filing_page_lends_its_heading_to_each_of_its_passages():
    """A statement's rows are searched with the statement's name; a page without a heading at its
    top carries the last one over (a statement continued); an unpaginated report gets none."""
    from qa.chunk import page_headings, passage_leads, searched_text
    from qa.types import Document, Page

    pages = ["ADOBE INC.\n\nCONSOLIDATED STATEMENTS OF INCOME\n\n(In millions)\n\nRevenue\t17,606\t15,785",
             "Net income\t4,756\t4,822\nBasic net income per share\t10.13\t10.10",
             "The company grew. Its revenue rose.\n\nLiquidity and Capital Resources\n\nCash was ample."]
    text, spans, at = "", [], 0
    for number, page in enumerate(pages, start=1):
        spans.append(Page(number, len(text), len(text) + len(page)))
        text += page + "\n\n"
    doc = Document("f.pdf", text, tuple(spans), title="Adobe 10-K 2022")
    assert page_headings(doc) == {1: "CONSOLIDATED STATEMENTS OF INCOME", 2: "CONSOLIDATED STATEMENTS OF INCOME",
                                  3: "Liquidity and Capital Resources"}
    leads = passage_leads(doc, [2, 3, None])
    assert leads == ["Adobe 10-K 2022\nCONSOLIDATED STATEMENTS OF INCOME", "Adobe 10-K 2022\nLiquidity and Capital Resources",
                     "Adobe 10-K 2022"]
    assert passage_leads(doc, [2], rule=4) == ["Adobe 10-K 2022"]  # indexes built before page headings
    # BM25 counts the heading, not the title (rule 6); indexes of rule 5 counted both
    assert passage_leads(doc, [2, None], keyword=True) == ["CONSOLIDATED STATEMENTS OF INCOME", ""]
    assert passage_leads(doc, [2], rule=5, keyword=True) == [leads[0]]
    row = "Net income\t4,756\t4,822"
    assert searched_text(leads[0], row) == f"{leads[0]}\n{row}"
    # the page's first passage opens with the heading already: only the title goes before it
    first = text[spans[0].start:spans[0].end]
    assert searched_text(leads[0], first) == f"Adobe 10-K 2022\n{first}"
    flat = Document("n.txt", "CONSOLIDATED RESULTS\n\nRevenue rose.", title="")
    assert passage_leads(flat, [None]) == [""]


def _split(text: str) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text)]


def test_a_table_row_is_one_sentence_whatever_its_cells_hold():
    text = "Revenue grew. Costs fell.\nOther\t61\t(54)\t7\n(State or other jurisdiction of\t(I.R.S. Employer"
    assert _split(text) == ["Revenue grew.", "Costs fell.", "Other\t61\t(54)\t7",
                            "(State or other jurisdiction of\t(I.R.S. Employer"]


def test_a_line_break_inside_a_paragraph_ends_a_sentence():
    assert _split("Consolidated Balance Sheets\nInventories rose by $2 billion.") == \
        ["Consolidated Balance Sheets", "Inventories rose by $2 billion."]


def test_a_stop_inside_a_word_and_a_list_number_do_not_end_sentences():
    assert _split("AMAZON.COM, INC. reported sales.") == ["AMAZON.COM, INC. reported sales."]
    assert _split("18. Charlie Fuqua, responsible for signature riffs.") == \
        ["18. Charlie Fuqua, responsible for signature riffs."]


def test_an_opening_quote_starts_the_sentence_it_opens():
    text = 'Business was good there, he added. "I think the brightest days are ahead." He left.'
    assert _split(text) == ["Business was good there, he added.", '"I think the brightest days are ahead."',
                            "He left."]
    text = "Macron stressed that militias must disband. “It is essential that there is a gradual demilitarization.”"
    assert _split(text)[1].startswith("“It is essential")


def test_an_ordinary_word_taken_for_an_abbreviation_still_ends_a_sentence():
    assert _split("The port reopened in May. Exports rose.") == ["The port reopened in May.", "Exports rose."]
    assert _split("He told me. Officials agreed.") == ["He told me.", "Officials agreed."]
    assert _split("See Art. 5 and No. 7 of the treaty.") == ["See Art. 5 and No. 7 of the treaty."]


def test_a_statement_page_is_known_by_a_heading_that_is_only_its_name():
    from qa.chunk import page_statements, statement_of_heading
    from qa.types import Document, Page

    headings = {
        "Consolidated Balance Sheets": "balance",
        "NIKE, Inc. Consolidated Statements of Income": "income",
        "INCOME STATEMENTS": "income",
        "The Boeing Company and Subsidiaries Consolidated Statements of Financial Position": "balance",
        "Consolidated Statements of Earnings GENERAL MILLS, INC. AND SUBSIDIARIES": "income",
        "PFIZER INC. AND SUBSIDIARY COMPANIES CONDENSED CONSOLIDATED BALANCE SHEETS": "balance",
        ("COSTCO WHOLESALE CORPORATION CONSOLIDATED STATEMENTS OF INCOME "
         "(amounts in millions, except per share data)"): "income",
        "Condensed Consolidated Statements of Earnings $ and shares in millions, except per share amounts": "income",
        "U.S. GAAP Condensed Consolidated Statements of Income (Unaudited)": "income",
        "Consolidated Statements of Operations and Comprehensive Loss": "income",
        "Statements of Consolidated Cash Flows": "cash",
        "Consolidated Statements of Cash Flows Years ended December 31, 2018": "cash",
        "Condensed Consolidated Statements of Cash Flows (Unaudited)": "cash",
        "CONSOLIDATED STATEMENTS OF OPERATIONS (continued)": "income",
    }
    for line, kind in headings.items():
        assert statement_of_heading(line) == kind, line
    for line in ("Supplemental balance sheet information related to leases was as follows:",
                 "Statements of Operations:", "Notes to Consolidated Financial Statements",
                 "Our balance sheet remains strong.", "Consolidated Statements of Comprehensive Income",
                 "ANALYSIS OF THE CONDENSED CONSOLIDATED STATEMENTS OF INCOME",
                 "Statement of Earnings Location\tJuly 29, 2023\tJuly 30, 2022",
                 "Reconciliation to the Company balance sheet",
                 "Income statements in dollars were hit hard by the millions of losses"):
        assert statement_of_heading(line) == "", line
    pages = ["Item 8\nITEM 8. FINANCIAL STATEMENTS\nINCOME STATEMENTS\nRevenue\t85,320\t93,580",
             "Net income\t16,798\t12,193",  # no heading: the statement goes on
             "BALANCE SHEETS\nTotal assets\t193,694",
             "Liquidity and Capital Resources\nCash was ample. The balance sheet is strong.",
             "CONSOLIDATED STATEMENTS OF CASH FLOWS\nNet income\t16,798",
             "We review the balance sheet each quarter, as the notes describe."]  # prose: not a statement continued
    text, spans = "", []
    for number, page in enumerate(pages, start=1):
        spans.append(Page(number, len(text), len(text) + len(page)))
        text += page + "\n\n"
    doc = Document("f.pdf", text, tuple(spans), title="")
    assert page_statements(doc) == {1: "income", 2: "income", 3: "balance", 4: "", 5: "cash", 6: ""}
