"""The news eval set (`eval/news.jsonl`) is well formed and its evidence is verbatim in the articles.

The articles are read from ../shared/data by path (research licence: never copied into the repository)
and built into document text exactly as the loader builds them (`qa.load.beir_documents`). No model load.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from qa.evaluate import load_items, locate, normalize
from qa.load import beir_documents

ROOT = Path(__file__).resolve().parent.parent
SET = ROOT / "eval" / "news.jsonl"
SPEC = json.loads((ROOT / "eval" / "news.corpus.json").read_text(encoding="utf-8"))
CORPUS = ROOT / SPEC["corpus"]
KINDS = {"factoid", "list", "multidoc", "paraphrase", "followup", "unanswerable"}

pytestmark = pytest.mark.skipif(not CORPUS.exists(), reason=f"{CORPUS} not available")


@pytest.fixture(scope="module")
def items() -> list[dict]:
    return load_items(SET)


@pytest.fixture(scope="module")
def articles() -> dict[str, str]:
    """Text of the gold and distractor articles, as `qa.load.beir_documents` builds it."""
    wanted = set(SPEC["gold"]) | set(SPEC["distractors"])
    lines = [line for line in CORPUS.read_bytes().splitlines(keepends=True)
             if json.loads(line)["_id"] in wanted]
    return {doc.doc_id: doc.text for doc in beir_documents(b"".join(lines))}


def test_corpus_spec(articles):
    gold, distractors = SPEC["gold"], SPEC["distractors"]
    assert SPEC["corpus"] == "../shared/data/realtimeqa/corpus.jsonl" and isinstance(SPEC["seed"], int)
    assert len(set(gold)) == len(gold) and len(set(distractors)) == len(distractors)
    assert not set(gold) & set(distractors)
    assert 25 <= len(gold) <= 35 and 250 <= len(distractors) <= 350
    assert set(articles) == set(gold) | set(distractors), "an id of news.corpus.json is not in the corpus"
    qrels = (CORPUS.parent / "qrels.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert set(gold) <= {line.split("\t")[1] for line in qrels}, "a gold article is not gold in qrels.tsv"
    stories = SPEC["stories"]
    assert sorted(d for s in stories.values() for d in s["gold"]) == sorted(gold)
    assert {s["split"] for s in stories.values()} == {"dev", "test"}


def test_items_well_formed(items):
    assert len(items) >= 80
    ids = [item["id"] for item in items]
    assert len(set(ids)) == len(ids), "duplicate ids"
    for item in items:
        assert item["kind"] in KINDS, item["id"]
        assert item["split"] in ("dev", "test"), item["id"]
        assert item["question"].strip(), item["id"]
        if item["kind"] == "unanswerable":
            assert item["answers"] == [] and item["evidence"] == [], item["id"]
        else:
            assert item["answers"] and all(group and all(alt.strip() for alt in group) for group in item["answers"]), item["id"]
            assert item["evidence"], item["id"]
        if item["kind"] == "followup":
            history = item.get("history")
            assert history and [m["role"] for m in history][:2] == ["user", "assistant"], item["id"]
            assert all(m["content"].strip() for m in history), item["id"]
        else:
            assert "history" not in item, item["id"]
        if item["kind"] == "multidoc":
            assert len({ev["doc"] for ev in item["evidence"]}) >= 2, f"{item['id']}: multidoc needs two articles"


def test_splits(items):
    by_split = Counter(item["split"] for item in items)
    assert by_split["test"] * 3 >= len(items), f"test is under a third: {by_split}"
    for split in ("dev", "test"):
        assert {item["kind"] for item in items if item["split"] == split} == KINDS, f"{split} lacks a kind"
    # Split by article (and story): no article's evidence appears in both splits.
    splits_of = defaultdict(set)
    for item in items:
        for ev in item["evidence"]:
            splits_of[ev["doc"]].add(item["split"])
    assert not [doc for doc, splits in splits_of.items() if len(splits) > 1], "an article is in both splits"
    story_split = {doc: s["split"] for s in SPEC["stories"].values() for doc in s["gold"]}
    assert all(splits == {story_split[doc]} for doc, splits in splits_of.items())
    assert set(splits_of) == set(SPEC["gold"]), "every gold article is the evidence of some item"


def test_evidence_verbatim(items, articles):
    gold = set(SPEC["gold"])
    for item in items:
        quotes = []
        for ev in item["evidence"]:
            assert ev["doc"] in gold, f"{item['id']}: {ev['doc']} is not a gold article"
            assert locate(articles[ev["doc"]], ev["quote"]) is not None, \
                f"{item['id']}: quote not in {ev['doc']}: {ev['quote'][:60]!r}"
            quotes.append(normalize(ev["quote"]))
        for group in item["answers"]:
            assert any(normalize(alt) in q for alt in group for q in quotes), \
                f"{item['id']}: answer {group[0]!r} is not in its evidence"
