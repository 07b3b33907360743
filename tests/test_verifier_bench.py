"""The claim-checking benchmark (``qa eval --verifier``): its built claims are what their family says,
and its runner scores a handful of them with the real verifier, index and parser."""
import json
import re
from collections import Counter

import pytest

from qa.evaluation import claims as cl
from qa.evaluation.verifier import _auc, _find, check_claims, parts_of, summarize
from tests.conftest import ROOT, SEEDS

WORD = re.compile(r"[^\W_]+")


@pytest.fixture(scope="module")
def built():
    evidence = [(e["doc"], e["quote"]) for line in (ROOT / "eval" / "seeds.jsonl").open(encoding="utf-8")
                for e in json.loads(line).get("evidence") or []]
    texts = {p.name: p.read_text(encoding="utf-8") for p in SEEDS.iterdir()}
    return cl.build_claims(evidence, texts), texts


def words(text):
    return Counter(w.lower() for w in WORD.findall(text))


def test_every_family_is_built_and_deterministic(built):
    claims, texts = built
    families = Counter(c.family for c in claims)
    assert set(families) == set(cl.TRUE_FAMILIES) | set(cl.WRONG_FAMILIES), families
    again = cl.build_claims([(c.doc_id, c.gold) for c in claims if c.family == "gold"], texts)
    assert [c.text for c in again] == [c.text for c in claims]


def test_true_families_restate_the_gold_sentence(built):
    for c in built[0]:
        if c.family == "gold":
            assert c.text == " ".join(c.gold.split()) and c.true
        elif c.family == "shortened":
            assert len(c.text) < len(c.gold) and not (words(c.text) - words(c.gold)), c.text
        elif c.family == "reordered":
            assert not (words(c.text) - words(c.gold)) and set(words(c.gold) - words(c.text)) <= {"that"}, c.text
            assert c.text != c.gold


def test_wrong_families_change_one_thing(built):
    claims, texts = built
    for c in claims:
        if c.true:
            continue
        added, removed = words(c.text) - words(c.gold), words(c.gold) - words(c.text)
        if c.family == "number_change":
            changed = set(added) | set(removed)
            assert changed and all(w.isdigit() or w in cl._NUMBER_WORDS or w in cl._NUMBER_WORDS.values()
                                   or w.capitalize() in cl._MONTHS for w in changed), c.text
        elif c.family == "negation":
            assert set(added) | set(removed) <= {"not", "did", "does", "do", "n", "t"} | {
                w.lower() for w in WORD.findall(c.gold)} | {w.lower() for w in WORD.findall(c.text)}
            negs = lambda t: len(re.findall(r"\bnot\b|n't", t))
            assert abs(negs(c.text) - negs(c.gold)) == 1, c.text
        elif c.family == "role_swap":
            assert c.text != c.gold and sum(added.values()) <= 2, c.text  # same words, pronoun case aside
        elif c.family == "quantifier":
            pairs = {(a, b) for a, b in cl._QUANTIFIERS.items()}
            assert any(re.search(rf"\b{a}\b", c.gold, re.I) and re.search(rf"\b{b}\b", c.text, re.I)
                       for a, b in pairs), c.text
        elif c.family == "name_swap":
            doc_names = cl.names_in(texts[c.doc_id])
            assert any(n in c.text and n not in c.gold for n in doc_names), c.text
        elif c.family == "other_report":
            assert c.source_doc != c.doc_id and c.source_doc in texts
            assert c.text not in texts[c.doc_id]


def test_family_rules_on_examples():
    assert cl.negation("Sistani called for the disbandment.") == "Sistani did not call for the disbandment."
    assert cl.negation("He did not call for the disbandment.") == "He did call for the disbandment."
    assert cl.number_change("It has 60,000 fighters.") == "It has 70,000 fighters."
    assert cl.number_change("In 2014, it began.") == "In 2015, it began."
    assert cl.quantifier("All weapons must be handed over.") == "No weapons must be handed over."
    assert cl.role_swap("Badr leads the new bloc.") == "The new bloc leads Badr."
    assert cl.shortened("Qais al-Khazali, the head of the group, called on the government.") == \
        "Qais al-Khazali called on the government."
    assert cl.reordered("Macron stressed that all militias should be dissolved.") == \
        "All militias should be dissolved, Macron stressed."


def test_runner_scores_claims_with_the_real_verifier(seeds_index, settings, built):
    claims, texts = built
    pick = [c for fam in ("gold", "negation", "other_report")
            for c in [x for x in claims if x.family == fam][:2]]
    rows = check_claims([(c, _find(texts.get(c.doc_id, ""), c.gold)) for c in pick], seeds_index, settings,
                        progress=False)
    rows = [dict(r, part="built") for r in rows]
    by = {r["family"]: r for r in rows}
    assert by["gold"]["kept"] and by["gold"]["on_gold"] and by["gold"]["verdicts"] == ["supported"]
    assert not by["negation"]["kept"] and "contradicted" in by["negation"]["verdicts"]
    assert not by["other_report"]["kept"]
    summary = summarize(rows)
    assert summary["families"]["gold"]["kept"] == 1.0 and summary["families"]["negation"]["rejected"] == 1.0


def test_auc_and_parts():
    assert _auc([0.9, 0.8], [0.1, 0.2]) == 1.0 and _auc([0.5], [0.5]) == 0.5 and _auc([], [1.0]) is None
    assert parts_of("all") == ["built", "scifact", "rgb"] and parts_of("rgb,built") == ["rgb", "built"]
    with pytest.raises(ValueError):
        parts_of("bogus")
    assert _find("A  b’s  c. D.", "a b's c.") == [(0, 9)]


def test_cli_verify_json(tmp_path, seeds_index):
    import os
    import subprocess
    import sys

    text = tmp_path / "memo.txt"
    text.write_text("Ahmed al-Asadi will be the spokesperson of the new alliance. "
                    "Sistani called for the disbandment of the paramilitary forces.", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "qa.cli", "verify", str(text), "--index", str(seeds_index), "--json"],
                          capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=600)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert [s["verdict"] for s in out["sentences"]] == ["supported", "contradicted"]
    c = out["sentences"][0]["citation"]
    assert set(c) == {"doc_id", "quote", "start", "end", "page"}
    assert (SEEDS / c["doc_id"]).read_text(encoding="utf-8")[c["start"]:c["end"]] == c["quote"]
    assert isinstance(out["sentences"][0]["score"], float)
