"""``qa bench`` runs end to end on a tiny corpus and prints the figures the issue asks for.

Speed itself is reported by the benchmark, never asserted here.
"""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def run(*args):
    return subprocess.run([sys.executable, "-m", "qa.cli", "bench", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ}, timeout=900)


def test_bench_against_llamaindex_prints_the_ratios(tmp_path):
    pytest.importorskip("llama_index.vector_stores.faiss", reason="needs the [bench] extra")
    corpus = tmp_path / "reports"
    corpus.mkdir()
    (corpus / "a.txt").write_text("The Basra port handled record cargo in March. Exports of crude rose by a tenth.\n\n"
                                  "Officials said the new terminal opens in June.", encoding="utf-8")
    (corpus / "b.md").write_text("# Rains\n\nHeavy rains flooded the southern marshes. Farmers lost the winter wheat.",
                                 encoding="utf-8")
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps({"question": q}) for q in
                                   ["What did the Basra port handle?", "When does the terminal open?", "What flooded?"]))
    done = run(str(corpus), "--questions", str(questions), "--json", "--work", str(tmp_path / "work"))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("build_speedup_vs_llamaindex", "query_speedup_vs_llamaindex", "cold_start_s", "build_passages_per_s",
                "answer_p50_ms", "answer_p95_ms", "peak_rss_mb"):
        assert isinstance(out[key], (int, float)) and out[key] > 0, key
    assert out["questions"] == 3 and out["ours"]["passages"] >= 2 and out["llamaindex"]["passages"] >= 2
    assert "build_speedup_vs_llamaindex" in done.stdout and (tmp_path / "work" / "ours" / "CURRENT").exists()


def test_scale_bench_builds_opens_and_measures_recall(tmp_path):
    done = run(str(ROOT / "seeds"), "--scale", "3000", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(rows) == 1 and rows[0]["passages"] == 3000 and rows[0]["dense_kind"] == "flat-ip"
    assert rows[0]["recall@10"] == 1.0  # exact search agrees with brute force
    assert rows[0]["open_s"] > 0 and rows[0]["disk_mb"] > 0
    # 100 documents changed or added through the real incremental update: BM25 updated, not rebuilt
    assert rows[0]["update_docs"] == 100 and rows[0]["update_s"] > 0 and rows[0]["update_keyword"] == "updated"
    assert "| 3,000 | flat-ip |" in done.stdout
