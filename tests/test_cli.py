"""The ``qa`` command, run as a user runs it."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "qa.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT, timeout=600)


def test_index_then_ask_json(tmp_path):
    corpus = tmp_path / "reports"
    corpus.mkdir()
    (corpus / "brief.md").write_text("# Ports\n\nThe Basra port handled record cargo in March. Exports rose.",
                                     encoding="utf-8")
    (corpus / "junk.txt").write_bytes(b"\x00\xff" * 100)
    index = tmp_path / "idx"
    done = run("index", str(corpus), "--index", str(index))
    assert done.returncode == 0, done.stderr
    assert "1 added" in done.stdout and "junk.txt" in done.stderr
    done = run("ask", "What did the Basra port handle in March?", "--index", str(index), "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(out) >= {"text", "abstained", "citations"} and not out["abstained"]
    c = out["citations"][0]
    assert set(c) >= {"doc_id", "quote", "start", "end", "page", "passage", "score"}
    text = (corpus / c["doc_id"]).read_text(encoding="utf-8")
    assert text[c["start"]:c["end"]] == c["quote"] == "The Basra port handled record cargo in March."
    assert "[1]" in out["text"]


def test_ask_on_the_seeds_prints_sources():
    done = run("ask", "Who will be the spokesperson of the new political alliance?")
    assert done.returncode == 0, done.stderr
    assert "Ahmed al-Asadi" in done.stdout and "Sources:" in done.stdout and "000_e8572f977ee04a7c.txt" in done.stdout


def test_empty_question_exits_2_without_traceback():
    done = run("ask", "   ")
    assert done.returncode == 2
    assert "empty" in done.stderr and "Traceback" not in done.stderr


def test_missing_index_is_a_clear_error(tmp_path):
    done = run("ask", "Anything?", "--index", str(tmp_path / "none"))
    assert done.returncode == 1 and "qa index" in done.stderr and "Traceback" not in done.stderr
