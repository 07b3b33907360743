"""The eval set and ``qa eval``: gold quotes are real, metrics are computed right, quality holds."""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from qa.evaluation import financebench, realtimeqa, rgb
from qa.evaluation.beir import run_beir_eval
from qa.evaluation.financebench import run_financebench_eval
from qa.evaluation.metrics import locate, ndcg, recall
from qa.evaluation.qaset import load_items, run_qa_eval
from qa.evaluation.realtimeqa import run_realtimeqa_eval
from qa.evaluation.rgb import run_rgb_eval

is_financebench, is_realtimeqa, is_rgb = financebench.detect, realtimeqa.detect, rgb.detect
from qa.load import load_corpus

ROOT = Path(__file__).resolve().parent.parent
SET = ROOT / "eval" / "seeds.jsonl"
# Measured floor of the extractive engine (see eval/README.md); a change that lowers any
# of these fails CI. The target is 0.9 on each: not reached yet.
# Measured 2026-11-23: 0.81 / 0.936 / 0.81 / 0.75.
FLOOR = {"answer_recall": 0.80, "citation_precision": 0.92, "citation_recall": 0.80, "abstention_recall": 0.7}


def test_eval_set_shape_and_verbatim_evidence():
    items = load_items(SET)
    docs = {d.doc_id: d.text for d in load_corpus([ROOT / "seeds"])[0]}
    kinds = Counter(i["kind"] for i in items)
    assert len(items) >= 60 and len({i["id"] for i in items}) == len(items)
    assert all(kinds[k] >= 8 for k in ("factoid", "list", "paraphrase", "followup")) and kinds["multidoc"] >= 5
    assert kinds["unanswerable"] >= 10
    for item in items:
        assert set(item) >= {"id", "question", "answers", "evidence", "kind"}
        if item["kind"] == "unanswerable":
            assert not item["answers"] and not item["evidence"]
            continue
        assert item["answers"] and item["evidence"]
        for ev in item["evidence"]:
            assert locate(docs[ev["doc"]], ev["quote"]) is not None, (item["id"], ev["quote"])
        if item["kind"] == "followup":
            assert [m["role"] for m in item["history"]] == ["user", "assistant"]
        if item["kind"] == "multidoc":
            assert len({ev["doc"] for ev in item["evidence"]}) == 2


def test_locate_folds_quotes_and_space():
    text = "He said “go  now”\nand left."
    s, e = locate(text, 'said "go now" and')
    assert text[s:e] == "said “go  now”\nand"


def test_ndcg_and_recall_by_hand():
    assert ndcg(["a", "b"], {"a": 1}, 10) == 1.0
    assert ndcg(["x", "a"], {"a": 1}, 10) == pytest.approx(1 / 1.5849625, rel=1e-6)
    assert ndcg(["x"], {"a": 1}, 10) == 0.0
    assert recall(["a", "x", "b"], {"a": 1, "b": 1, "c": 1}, 2) == pytest.approx(1 / 3)


def test_seeds_eval_meets_the_floor(seeds_index, settings):
    summary, rows = run_qa_eval(SET, settings, index=str(seeds_index), progress=False)
    assert summary["quote_exact"] == 1.0
    for key, floor in FLOOR.items():
        assert summary[key] >= floor, (key, summary[key])
    assert len(rows) == len(load_items(SET)) and set(summary["by_kind"]) >= {"factoid", "unanswerable"}


def test_beir_runner_on_a_tiny_fixture(tmp_path, settings):
    beir = tmp_path / "tiny"
    (beir / "qrels").mkdir(parents=True)
    docs = {"d1": "Aspirin reduces the risk of heart attacks in adults.",
            "d2": "Vitamin D deficiency is common in northern countries during winter.",
            "d3": "Regular exercise improves sleep quality and mood.",
            "d4": "Smoking increases the risk of lung cancer."}
    (beir / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": k, "title": "", "text": v}) for k, v in docs.items()))
    queries = {"q1": "Does aspirin prevent heart attacks?", "q2": "Is lack of vitamin D frequent in the north?",
               "q3": "What causes lung cancer?"}
    (beir / "queries.jsonl").write_text("\n".join(json.dumps({"_id": k, "text": v}) for k, v in queries.items()))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td4\t1\n")
    out = run_beir_eval(beir, settings)
    assert out["queries"] == 3
    for mode in ("bm25", "dense", "hybrid"):
        assert out[mode]["ndcg@10"] == 1.0 and out[mode]["recall@100"] == 1.0
    assert Path(out["index"]).exists()


def test_cli_eval_json_and_outputs(tmp_path):
    done = subprocess.run([sys.executable, "-m", "qa.cli", "eval", "--json", "--limit", "12", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, env=os.environ, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("answer_recall", "citation_precision", "citation_recall", "quote_exact", "abstention_recall",
                "abstention_precision", "evidence_recall@k", "latency_p50_ms", "by_kind"):
        assert key in summary
    assert summary["quote_exact"] == 1.0
    assert set(summary["evidence_recall@k"]) == {"1", "3", "5", "10"}
    for name in ("summary.json", "items.jsonl", "report.md", "chart.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    items = [json.loads(l) for l in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert len(items) == 12 and all(r["quote_exact"] in (None, 1.0) for r in items)
    diff = subprocess.run([sys.executable, "-m", "qa.cli", "eval", "--limit", "12", "--compare",
                           str(tmp_path / "summary.json")], capture_output=True, text=True, cwd=ROOT, env=os.environ)
    assert diff.returncode == 0 and "+0.0000" in diff.stdout


def test_rgb_runner_on_a_tiny_fixture(tmp_path, settings):
    items = [
        {"id": 0, "query": "Where was Super Bowl LV played?", "answer": ["Tampa"], "fakeanswer": "Glendale",
         "positive": ["Super Bowl LV was played at Raymond James Stadium in Tampa, Florida, on February 7, 2021."],
         "positive_wrong": ["Super Bowl LV was played at State Farm Stadium in Glendale, Arizona, on February 7, 2021."],
         "negative": ["The Academy Awards ceremony took place in Los Angeles in April."]},
        {"id": 1, "query": "Who won the 2022 Tour de France?", "answer": "Jonas Vingegaard", "fakeanswer": "Tadej Pogacar",
         "positive": ["Jonas Vingegaard won the 2022 Tour de France, finishing ahead of Tadej Pogacar by more than two minutes."],
         "positive_wrong": ["Tadej Pogacar won the 2022 Tour de France after a decisive final time trial."],
         "negative": ["The Giro d'Italia starts in May each year."]},
    ]
    path = tmp_path / "rgb_tiny.jsonl"
    path.write_text("\n".join(json.dumps(i) for i in items) + "\n")
    assert is_rgb(path) and not is_rgb(SET)
    out = run_rgb_eval(path, settings, progress=False)
    assert out["questions"] == 2 and len(out["items"]) == 2
    for row, item in zip(out["items"], items):
        assert all(d.startswith(f"q{item['id']}-") for d in row["cited"]), row["cited"]
        assert row["states_fake"] == (item["fakeanswer"].lower() in row["answer"].lower())
        assert row["cites_true_source"] == any("-positive-" in d for d in row["cited"])
    assert out["fake_unchallenged"] == sum(r["states_fake"] and not r["cites_true_source"] for r in out["items"]) / 2


def test_realtimeqa_runner_on_a_tiny_fixture(tmp_path, settings):
    root = tmp_path / "rtqa"
    root.mkdir()
    articles = {"a1": "Netflix announced Sunday that the hit South Korean show Squid Game is green lit for a second season.",
                "a2": "The European Union will require a single common charging port, USB-C, for phones sold from 2024.",
                "a3": "Heavy rains flooded parts of Pakistan, displacing millions of people this summer."}
    (root / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": k, "title": "", "text": v}) for k, v in articles.items()))
    questions = [
        {"_id": "q1", "question": "Which South Korean show was green lit for a second season?", "choices": ["Squid Game", "Friends"],
         "answer": ["Squid Game"], "gold_doc_ids": ["a1"]},
        {"_id": "q2", "question": "Which charging port will the European Union require for phones?", "choices": ["Lightning", "USB-C"],
         "answer": ["USB-C"], "gold_doc_ids": ["a2"]},
        {"_id": "q3", "question": "Which planet did the probe reach?", "choices": ["Mars", "Venus"], "answer": ["Mars"],
         "gold_doc_ids": []},
    ]
    (root / "questions.jsonl").write_text("\n".join(json.dumps(q) for q in questions))
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\ta1\t1\nq2\ta2\t1\n")
    assert is_realtimeqa(root) and not is_financebench(root)
    out = run_realtimeqa_eval(root, settings, progress=False)
    assert out["questions"] == 3 and out["with_gold_article"] == 2
    assert out["hybrid"] == {"hit@10": 1.0, "ndcg@10": 1.0}
    rows = {r["id"]: r for r in out["items"]}
    assert rows["q1"]["correct"] and rows["q2"]["correct"] and not rows["q3"]["correct"]
    assert out["answer_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert out["citation_precision_doc"] == 1.0


def test_financebench_runner_on_a_tiny_fixture(tmp_path, settings):
    from tests.pdfs import write_pdf

    root = tmp_path / "fb"
    (root / "pdfs").mkdir(parents=True)
    write_pdf(root / "pdfs" / "ACME_2022_10K.pdf", ["ACME annual report 2022.", "Total revenue was 17,606 million dollars in fiscal 2022.",
                                                   "The company has 4,200 employees."])
    write_pdf(root / "pdfs" / "GLOBEX_2021_10K.pdf", ["Globex operates pipelines in Texas.", "Globex paid a dividend of 2 dollars per share."])
    qs = [{"financebench_id": "f1", "doc_name": "ACME_2022_10K", "question": "What was ACME's total revenue in fiscal 2022?",
           "evidence": [{"evidence_page_num": 1}]},
          {"financebench_id": "f2", "doc_name": "GLOBEX_2021_10K", "question": "What dividend per share did Globex pay?",
           "evidence": [{"evidence_page_num": 1}]}]
    (root / "questions.jsonl").write_text("\n".join(json.dumps(q) for q in qs))
    assert is_financebench(root)
    out = run_financebench_eval(root, settings, progress=False)
    assert out["questions"] == 2 and not out["missing_filings"]
    assert out["evidence_recall_filing@k"]["3"] == 1.0 and out["evidence_recall_shared@k"]["3"] == 1.0
    assert out["evidence_recall_filing@k"]["1"] >= 0.5
    assert out["citation_precision_page"] >= 0.5
    assert all(2 in r["cited_pages"] for r in out["items"])
    for r in out["items"]:
        assert r["citation_precision_page"] == r["cited_pages"].count(2) / len(r["cited_pages"])


def test_rationale_runner_on_a_tiny_fixture(tmp_path, settings):
    from qa.evaluation import dataset_for, rationales

    root = tmp_path / "sf"
    root.mkdir()
    abstracts = {"11": ["Aspirin lowers the risk of heart attacks.", "The trial enrolled 4,000 adults."],
                 "22": ["Vitamin D deficiency is common in winter.", "Sunlight exposure raises vitamin D levels."]}
    (root / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": k, "title": "", "text": " ".join(v)})
                                                 for k, v in abstracts.items()))
    (root / "corpus_sentences.jsonl").write_text("\n".join(json.dumps({"_id": k, "sentences": v})
                                                           for k, v in abstracts.items()))
    (root / "queries.jsonl").write_text("")
    claims = [{"_id": "1", "text": "Sunlight exposure raises vitamin D levels.",
               "evidence": {"22": {"label": "SUPPORT", "sentence_sets": [[1]]}}},
              {"_id": "2", "text": "Aspirin lowers the risk of heart attacks.",
               "evidence": {"11": {"label": "SUPPORT", "sentence_sets": [[0]]}}}]
    path = root / "claims_dev_evidence.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in claims))
    assert dataset_for(path) is rationales
    out = rationales.run_rationale_eval(path, settings, progress=False)
    assert out["claims"] == 2 and out["with_evidence"] == 2
    assert out["sentence_recall"] == 1.0 and out["sentence_precision"] > 0.5
    assert all(r["gold_cited"] == r["gold"] == 1 for r in out["items"])


NEWS = ROOT / "eval" / "news.jsonl"
# Measured floor on the news set's test split (never tuned on; see eval/README.md).
# Measured 2026-11-23: 0.618 / 0.634 / 0.632 / 0.417 (the target is 0.80 on each); the day
# before 0.574 / 0.658 / 0.588 / 0.417: sentences pooled in passage trade 0.024 of citation
# precision for 0.044 of answer and citation recall on this split (eval/README.md).
# Measured 2026-11-23 on the test split (0.632 / 0.667 / 0.647 / 0.417, evidence@5 0.809), less about one item;
# since the int8 passage encoder and sentencex: 0.662 / 0.667 / 0.647 / 0.417, evidence@5 0.779 (one sentence
# fewer at rank 5), so its floor is that less one item too.
# Measured 2026-11-24 with lead rule 6 and the count / calendar checks: 0.662 / 0.651 / 0.647 / 0.417,
# evidence@5 0.809; the floors sit about one item (1/68 of answer recall) below.
NEWS_FLOOR = {"answer_recall": 0.64, "citation_precision": 0.63, "citation_recall": 0.63, "abstention_recall": 0.40}
NEWS_EVIDENCE_FLOOR = 0.78


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "realtimeqa").exists(), reason="needs ../shared/data")
def test_news_eval_meets_the_floor(settings):
    """The second dev set, over 331 news articles read from ../shared by path: builds (or reuses)
    the set's own index under indexes/, answers the test split, and holds the measured floor."""
    summary, rows = run_qa_eval(NEWS, settings, split="test", progress=False)
    assert summary["quote_exact"] == 1.0 and summary["split"] == "test"
    assert len(rows) == len(load_items(NEWS, "test"))
    for key, floor in NEWS_FLOOR.items():
        assert summary[key] >= floor, (key, summary[key])
    assert summary["evidence_recall@k"]["5"] >= NEWS_EVIDENCE_FLOOR, summary["evidence_recall@k"]


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "financebench").exists(), reason="needs ../shared/data")
def test_the_financebench_held_out_questions_point_at_real_pages():
    """eval/filings_heldout.jsonl: unique ids, filings that exist, gold pages inside them, each kind present."""
    import pypdfium2 as pdfium

    rows = [json.loads(line) for line in (ROOT / "eval" / "filings_heldout.jsonl").read_text().splitlines()]
    assert len({r["financebench_id"] for r in rows}) == len(rows) >= 30
    assert Counter(r["kind"] for r in rows).keys() == {"named", "implied", "prose"}
    pdfs = ROOT.parent / "shared" / "data" / "financebench" / "pdfs"
    for r in rows:
        pdf = pdfium.PdfDocument(pdfs / f"{r['doc_name']}.pdf")
        try:
            assert all(0 <= e["evidence_page_num"] < len(pdf) for e in r["evidence"]), r["financebench_id"]
        finally:
            pdf.close()
