"""One test per answering rule and per question-shape pattern (no model, no index)."""
import pytest

from qa.extractive import answers_type, is_question_sentence, lexical_share, list_shape_bonus, repeat_factor
from qa.question import analyse, name_stems
from qa.settings import AnswerRules

RULES = AnswerRules()


def test_shape_reads_what_is_asked():
    assert analyse("How many fighters does the P.M.F. have?").count_noun == "fighter"
    assert analyse("What was the death toll?").wants_number
    assert analyse("When are the elections scheduled?").wants_date
    assert analyse("Why did he resign?").wants_cause
    assert analyse("Which groups make up the alliance?").wants_list
    assert analyse("What do both reports say about it?").multidoc
    assert analyse("What did Sistani ask, and what did Khamenei ask?").multipart
    plain = analyse("Who heads the Quds Force?")
    assert not (plain.wants_number or plain.wants_date or plain.wants_cause or plain.wants_list or plain.multipart)
    assert plain.names == ("Quds", "Force")


def test_name_stems_know_fiscal_years_by_their_number():
    assert "2019" in name_stems("FY2019")


def test_answers_type_needs_the_asked_kind_of_fact():
    count = analyse("How many fighters does the P.M.F. have?")
    assert answers_type(count, "The P.M.F. has about 120,000 fighters.")
    assert not answers_type(count, "The P.M.F. fighters were praised.")
    assert not answers_type(count, "In 2014 it was founded, and its fighters fought ISIS.")  # the number is not a count of them
    when = analyse("When are the elections?")
    assert answers_type(when, "The elections are slated for May 15.") and not answers_type(when, "Elections are near.")
    why = analyse("Why did he resign?")
    assert answers_type(why, "He resigned because of the scandal.") and not answers_type(why, "He resigned.")
    assert answers_type(analyse("Who leads Badr?"), "Hadi al-Amiri leads Badr.")


def test_a_question_in_a_report_is_not_an_answer():
    assert is_question_sentence("Who will be the spokesperson?")
    assert is_question_sentence("Is this the end?”")
    assert not is_question_sentence("He asked who would lead it.")


def test_list_questions_favour_enumerations():
    shape = analyse("Which groups make up the alliance?")
    assert list_shape_bonus(shape, "It includes Badr, Asa’ib Ahl al-Haq, and Kata’ib Hezbollah.", RULES) == RULES.list_shape_bonus
    assert list_shape_bonus(shape, "It includes Badr.", RULES) == 0.0
    assert list_shape_bonus(analyse("Who leads it?"), "Badr, Nujaba, and Hezbollah.", RULES) == 0.0


def test_a_sentence_already_quoted_counts_less():
    said = "Qais al-Khazali said so. [1]"  # folded by the caller
    assert repeat_factor("Qais al-Khazali said so.", said, RULES) == RULES.repeat_factor
    assert repeat_factor("Something new.", said, RULES) == 1.0
    assert repeat_factor("Qais al-Khazali said so.", "", RULES) == 1.0


def test_lexical_share_gives_half_credit_to_the_sentence_before():
    weights = {"allianc": 2.0, "consist": 1.0}
    assert lexical_share(weights, {"allianc", "consist"}, set()) == 1.0
    assert lexical_share(weights, {"consist"}, {"allianc"}) == (1.0 + 1.0) / 3.0
    assert lexical_share(weights, set(), set()) == 0.0


def test_who_and_which_questions_need_a_name_the_question_lacks():
    from qa.extractive import new_names

    shape = analyse("Who is the head of Asa’ib Ahl al-Haq?")
    assert shape.wants_entity and not analyse("What did he ask?").wants_entity
    assert analyse("Which news agency reported it?").wants_entity and analyse("Where did he say it?").wants_entity
    assert new_names("Qais al-Khazali, the head of the Asa’ib Ahl al-Haq, spoke.", shape) == ["Qais al-Khazali"]
    assert not answers_type(shape, "The head of Asa’ib Ahl al-Haq spoke.")  # restates the question
    assert answers_type(shape, "Qais al-Khazali, the head of the Asa’ib Ahl al-Haq, spoke.")


def test_a_month_or_weekday_is_not_the_name_asked_for():
    from qa.extractive import is_calendar_word, new_names

    where = analyse("In which Ukrainian city did Jill Biden meet Olena Zelenska?")
    assert is_calendar_word("February") and is_calendar_word("Monday.") and is_calendar_word("March’s")
    assert not is_calendar_word("Theresa May") and not is_calendar_word("Uzhhorod")
    assert not answers_type(where, "Biden met Olena Zelenska, unseen since the war began on February 24.")
    assert new_names("Biden met Olena Zelenska in Uzhhorod on Sunday.", where) == ["Uzhhorod"]


def test_a_count_may_name_what_it_counts_by_another_noun_of_the_phrase():
    from qa.question import counted_words

    shape = analyse("How many hospital admissions and deaths could the shots avert?")
    assert shape.count_noun == "admiss" and shape.count_words == {"hospit", "admiss"}
    assert answers_type(shape, "Boosters could prevent 137,000 more hospitalizations and 9,700 deaths.")
    assert not answers_type(shape, "Hospital admissions could fall, the CDC said in 2022.")  # no count before either
    assert counted_words("US troops") == ["troop"]  # a name is not what is counted
    assert analyse("How many Americans voted?").count_words == {"american"}  # a capitalized head still counts


def test_names_absent_from_a_candidates_passage_are_counted():
    from qa.extractive import absent_names
    from qa.index import terms

    shape = analyse("How many monkeypox cases has Texas reported?")
    assert absent_names(shape, set(terms("There are 22,000 monkeypox cases in the US."))) == ["texa"]
    assert absent_names(shape, set(terms("Texas reported 1,800 monkeypox cases."))) == []
    both = analyse("What did Sistani ask, and what did Khamenei ask?")
    assert absent_names(both, set(terms("Sistani asked for calm."))) == []  # each part names its own


def test_follow_up_referents_and_other_people():
    from qa.extractive import other_referent_penalty
    from qa.index import terms
    from qa.retrieve import Query, referents

    refs = referents("Who heads Asa'ib Ahl al-Haq?", "Qais al-Khazali, the head of the Asa’ib Ahl al-Haq, called on …")
    assert "khazali" in refs
    query = Query("What did he ask the government to do?", "…", refs)
    sistani = set(terms("Grand Ayatollah Ali Sistani asked P.M.F. forces to choose."))
    assert other_referent_penalty(query, set(), sistani, "He did not call for it.", RULES) == RULES.referent_penalty
    khazali = set(terms("Qais al-Khazali spoke today."))
    assert other_referent_penalty(query, set(), khazali, "He called on the government.", RULES) == 0.0
    assert other_referent_penalty(query, set(terms("The group will disarm.")), set(), "The group will disarm.",
                                  RULES) == RULES.unnamed_penalty
    assert other_referent_penalty(Query("Who?"), set(), set(), "He left.", RULES) == 0.0


def test_keep_best_puts_each_retrievers_best_in_the_top_k():
    """A passage one retriever ranks first is never pushed out of the top k by fusion; the rest
    keep their fused order, and nothing is lost or repeated."""
    from qa.retrieve import keep_best, reciprocal_rank_fusion

    dense = [(9, 0.9), (1, 0.8), (2, 0.7), (3, 0.6), (4, 0.5)]
    bm25 = [(7, 12.0), (1, 9.0), (2, 8.0), (3, 7.0), (4, 6.0)]
    fused = reciprocal_rank_fusion([dense, bm25], 60)
    assert [p for p, _ in fused[:3]] == [1, 2, 3]  # agreement wins under plain fusion ...
    kept = keep_best(fused, [dense, bm25], 3, 1)
    assert [p for p, _ in kept[:3]] == [1, 7, 9]  # ... each list's first is kept, in fused order
    assert sorted(p for p, _ in kept) == sorted(p for p, _ in fused)
    assert keep_best(fused, [dense, bm25], 3, 0) == fused
    assert [p for p, _ in keep_best(fused, [dense, bm25], 1, 2)[:1]] == [1]  # k bounds what is kept


def test_hybrid_search_holds_both_retrievers_best(seeds_index, settings):
    """Through the real index: the top 5 of hybrid search hold dense search's and BM25's best, also
    when more passages are asked for (an answer asks for a few spare ones)."""
    from qa.api import get_engine
    from qa.retrieve import Query

    retriever = get_engine(seeds_index, settings).retriever
    assert settings.keep_best == 1
    for question in ("Which news agency reported Khazali's announcement?", "Who heads the Supreme National Security Council?",
                     "What did Sistani ask of the PMF?"):
        query = Query(question)
        dense = [pid for pid, _ in retriever.dense(retriever.embed_query(query), 1)]
        bm25 = [pid for pid, _ in retriever.keyword(retriever.query_terms(query), 1)]
        for k in (5, 8):
            top = {p.passage_id for p in retriever.search(query, k)[:5]}
            assert set(dense) | set(bm25) <= top, question


def test_a_question_names_or_implies_its_financial_statement():
    from qa.question import named_statement

    assert named_statement("Using only the balance sheet, what were total assets?") == "balance"
    assert named_statement("Based on the statement of income, what was revenue?") == "income"
    assert named_statement("From the consolidated statements of cash flows, what was capex?") == "cash"
    assert named_statement("What is the FY2016 COGS for Microsoft?") == "income"  # a line item only it carries
    assert named_statement("What drove free cash flow in 2023?") == "cash"
    assert named_statement("How much debt did Microsoft carry?") == "balance"
    assert named_statement("Who will be the spokesperson of the new alliance?") == ""
    assert named_statement("Does Boeing have any off-balance sheet arrangements?") == ""
    assert analyse("What is Nike's gross margin?").statement == "income"


def test_a_statement_row_answers_the_line_item_asked_for():
    from qa.extractive import statement_row_bonus

    rules = AnswerRules(statement_row_bonus=0.5)
    asked = analyse("Based on the balance sheet, what were total current liabilities at year end 2022?")
    right = statement_row_bonus(asked, "Total current liabilities\t8,128\t6,932", True, rules)
    assert right == pytest.approx(0.5 + 0.03)
    # a row the question fits wholly but names less of, or only partly, scores below the asked row
    assert 0 < statement_row_bonus(asked, "Total\t8,128", True, rules) < right
    assert 0 < statement_row_bonus(asked, "Total current assets\t7,669\t5,720", True, rules) < right
    assert statement_row_bonus(asked, "Goodwill\t12,787\t12,668", True, rules) == 0.0  # not the item asked
    assert statement_row_bonus(asked, "Total current liabilities\t8,128\t6,932", False, rules) == 0.0  # not the statement
    assert statement_row_bonus(asked, "December 2,\tDecember 3,", True, rules) == 0.0  # a column header
    assert statement_row_bonus(asked, "Total current liabilities were $8.1 billion.", True, rules) == 0.0  # prose
    why = analyse("What drove the increase in total current liabilities on the balance sheet?")
    assert statement_row_bonus(why, "Total current liabilities\t8,128\t6,932", True, rules) == 0.0
    # "balance sheet" says which statement, not which row
    assert statement_row_bonus(asked, "Balance sheet total\t1\t2", True, rules) == 0.0
    # words that begin like a month are not dates
    margin = analyse("What was the gross margin in the income statement?")
    assert statement_row_bonus(margin, "Gross margin\t9,961\t9,876", True, rules) > 0
    decrease = analyse("From the cash flow statement, what was the net decrease in cash?")
    assert statement_row_bonus(decrease, "Net decrease in cash\t(1,200)\t(300)", True, rules) > 0


def test_a_line_item_is_not_an_entity():
    assert not analyse("What was Nike's capital expenditure (additions to property) in FY2021?").wants_entity
    assert analyse("What is the capital of the new province?").wants_entity
    assert analyse("Which company bought the stake?").wants_entity


def test_a_statement_question_matches_what_it_asks_not_where_to_look():
    from qa.extractive import item_weights

    weights = {"base": 1.0, "balanc": 2.0, "sheet": 2.0, "total": 1.0, "asset": 3.0, "nike": 4.0}
    shape = analyse("Based on Nike's balance sheet, what were its total assets?")
    assert item_weights(shape, weights) == {"base": 1.0, "total": 1.0, "asset": 3.0, "nike": 4.0}
    implied = analyse("How much debt did Nike carry?")  # names no statement: nothing to leave out
    assert item_weights(implied, weights) == weights
