"""One test per answering rule and per question-shape pattern (no model, no index)."""
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
