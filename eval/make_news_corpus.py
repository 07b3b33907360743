"""Pick the articles of the news eval set (`eval/news.jsonl`) and write `eval/news.corpus.json`.

Deterministic, stdlib only. The articles stay in ../shared/data (research licence): only ids are written.

    python eval/make_news_corpus.py            # from the repository root

Gold: 31 RealTimeQA articles that qrels.tsv names as gold, chosen by hand as substantive news stories
(not quiz or gallery pages, not 210-character stubs), grouped into stories; several stories have two or
three articles so that multidoc questions can span articles. Each story is assigned to one split, so
tuning on `dev` never sees an article (or story) of `test`.
Distractors: a seeded random sample of 300 other articles of the same weeks (any source, text of at least
500 characters), drawn from the id-sorted candidates with random.Random(SEED).
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = "../shared/data/realtimeqa/corpus.jsonl"  # relative to the repository root
QRELS = "../shared/data/realtimeqa/qrels.tsv"
SEED = 20221104
N_DISTRACTORS = 300
MIN_CHARS = 500

# story -> (split, gold article ids)
STORIES: dict[str, tuple[str, list[str]]] = {
    "sri-lanka-crisis": ("test", ["d71f9442bf9a", "f483f382834a", "109cd9bf3c7a"]),
    "artemis-i": ("test", ["c37a6b52e488", "11638a1aca88", "e0617f60fb9f"]),
    "student-loans": ("dev", ["ae7bf73a3f79", "49b093a803ec"]),
    "grocery-prices": ("dev", ["36aebd3e5dc0", "25d16b43b0cb"]),
    "afghanistan-earthquake": ("test", ["a539cfa139ce"]),
    "dart-mission": ("test", ["2c4baa210d85"]),
    "uk-prime-ministers": ("dev", ["cb4c26e0c3bd", "77f5e1711c0c", "9ba9445d1999"]),
    "spirit-airlines": ("dev", ["5a7e3d986ea3", "500413a2a298"]),
    "gas-prices": ("dev", ["7f9a1bdf8b58", "c30acde24c05", "6784534e6af5"]),
    "covid-vaccines-under-5": ("dev", ["705d56b95d63", "6b344444c1c8"]),
    "first-ladies-ukraine": ("dev", ["0fa4cad5f783", "9c678775b19a"]),
    "serena-williams": ("dev", ["6aa07dd5ff78", "007a486c743e"]),
    "monkeypox": ("dev", ["8a6318aa7686", "435b5aa7aff5"]),
    "covid-boosters": ("dev", ["fec8e634040f", "fd1459af0843"]),
    "british-pound": ("dev", ["6d3b9b2acbff"]),
}


def main() -> None:
    with open(ROOT / QRELS, encoding="utf-8") as fh:
        qrels_gold = {row["corpus-id"] for row in csv.DictReader(fh, delimiter="\t")}
    articles = {}
    with open(ROOT / CORPUS, encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            articles[record["_id"]] = (record["week"], len(record.get("text") or ""))
    gold = [doc for _, ids in STORIES.values() for doc in ids]
    assert len(set(gold)) == len(gold), "an article is in two stories"
    missing = [doc for doc in gold if doc not in qrels_gold]
    assert not missing, f"not gold in qrels.tsv: {missing}"
    weeks = sorted({articles[doc][0] for doc in gold})
    candidates = sorted(doc for doc, (week, size) in articles.items()
                        if week in weeks and doc not in gold and size >= MIN_CHARS)
    distractors = sorted(random.Random(SEED).sample(candidates, N_DISTRACTORS))
    out = {
        "corpus": CORPUS,
        "seed": SEED,
        "gold": gold,
        "distractors": distractors,
        "stories": {name: {"split": split, "gold": ids} for name, (split, ids) in STORIES.items()},
        "weeks": weeks,
        "note": (f"gold: {len(gold)} qrels.tsv gold articles chosen by hand as substantive news stories "
                 f"(no quiz, gallery or stub pages), grouped into {len(STORIES)} stories, each story in one "
                 f"split; distractors: random.Random({SEED}).sample of {N_DISTRACTORS} from the id-sorted "
                 f"other articles of the same weeks with at least {MIN_CHARS} characters of text "
                 f"({len(candidates)} candidates). Written by eval/make_news_corpus.py."),
    }
    target = ROOT / "eval" / "news.corpus.json"
    target.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"{target}: {len(gold)} gold, {len(distractors)} distractors from {len(candidates)} candidates")


if __name__ == "__main__":
    main()
