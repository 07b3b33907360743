"""The Milvus store and Ray indexing with the real parts: a milvus-lite server answering gRPC on
127.0.0.1 (Milvus' own C++ engine) and a local Ray cluster, each started once per session."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qa
from qa.evaluation.qaset import run_qa_eval
from qa.index import IndexCorrupt, IndexMismatch, MilvusSearch, StoreUnavailable, load_index, read_manifest
from qa.index.milvus import parse_store
from qa.settings import Settings

from .conftest import SEEDS, MilvusServer, titled_report

ROOT = Path(__file__).resolve().parent.parent
SET = ROOT / "eval" / "seeds.jsonl"


def milvus_settings(server, **extra) -> Settings:
    return Settings.from_env(store=server.store, **extra)


@pytest.fixture(scope="module")
def ray_seeds(milvus_server, ray_cluster, tmp_path_factory) -> Path:
    """The seeds indexed through Ray into the Milvus server."""
    path = tmp_path_factory.mktemp("milvus") / "seeds"
    report, skipped = qa.index_paths([SEEDS], index=path, settings=milvus_settings(milvus_server), ray="auto")
    assert not skipped and len(report.added) == 2
    return path


def test_parse_store_names_each_kind(tmp_path):
    assert parse_store("") is None and parse_store("local") is None
    lite = parse_store(f"milvus:{tmp_path}/x.db")
    assert lite.local and lite.uri == str(tmp_path / "x.db")
    remote = parse_store("milvus://db.example:19530", token="u:p", tls=True)
    assert remote.uri == "https://db.example:19530" and remote.token == "u:p" and not remote.local
    for bad in ("milvus:/tmp/x.sqlite", "milvus://", "postgres://x", "milvus://a b:1"):
        with pytest.raises(ValueError):
            parse_store(bad)


def test_seeds_through_ray_into_milvus_answer_as_the_local_store(ray_seeds, milvus_server, seeds_index, settings):
    """Same questions, same figures within 0.02 (they are in fact identical), every quote verbatim."""
    local, _ = run_qa_eval(SET, settings, index=str(seeds_index), progress=False)
    served, rows = run_qa_eval(SET, milvus_settings(milvus_server), index=str(ray_seeds), progress=False)
    for key in ("answer_recall", "citation_precision", "citation_recall", "abstention_recall"):
        assert abs(served[key] - local[key]) <= 0.02, (key, served[key], local[key])
    assert served["quote_exact"] == 1.0 and len(rows) == len(local and rows)
    _, manifest = read_manifest(ray_seeds)
    assert manifest["dense"] == "milvus" and manifest["params"]["store"] == "milvus"
    gen = ray_seeds / (ray_seeds / "CURRENT").read_text().strip()
    assert not (gen / "dense.faiss").exists() and not (gen / "bm25").exists()  # the engine holds them


def test_the_engine_ranks_as_the_local_store(ray_seeds, milvus_server, seeds_index, settings):
    """BM25 over our own terms with k1 0.9, b 0.4 and exact inner product: the same passages, in order."""
    served = load_index(ray_seeds, milvus_settings(milvus_server))
    local = load_index(seeds_index, settings)
    from qa.embed import get_embedder
    from qa.index import terms

    vec = get_embedder().encode(["Who leads the new political alliance?"])[0]
    words = terms("Who leads the new political alliance?")
    as_key = lambda index, hits: [(index.store.passage(i).doc_id, index.store.passage(i).start) for i, _ in hits]
    assert as_key(served, served.dense.dense_search(vec, 10)) == as_key(local, local.dense.search(vec, 10))
    served_bm25, local_bm25 = served.keyword.keyword_search(words, 10), local.keyword.search(words, 10)
    assert as_key(served, served_bm25) == as_key(local, local_bm25)
    # Milvus keeps BM25's (k1 + 1) numerator, which bm25s (Lucene's variant) drops: a constant factor
    from qa.index import BM25_K1

    assert np.allclose([s for _, s in served_bm25], [(BM25_K1 + 1) * s for _, s in local_bm25], rtol=1e-3)
    assert served.keyword.doc_freq("allianc") == local.keyword.doc_freq("allianc") > 0


def test_the_engines_hybrid_search_keeps_each_retrievers_best(ray_seeds, milvus_server):
    """The engine fuses by its own RRF; each retriever's first passage is still among the top 5."""
    from qa.api import get_engine
    from qa.retrieve import Query

    settings = milvus_settings(milvus_server)
    engine = get_engine(ray_seeds, settings)
    search = engine.index.dense
    for question in ("Which news agency reported Khazali's announcement?", "What did Sistani ask of the PMF?"):
        query = Query(question)
        vec = engine.retriever.embed_query(query)
        best = {search.dense_search(vec, 1)[0][0], search.keyword_search(engine.retriever.query_terms(query), 1)[0][0]}
        top = {p.passage_id for p in engine.retriever.search(query, 8)[:5]}
        assert best <= top, question


def test_a_restricted_question_is_answered_from_those_reports_only(ray_seeds, milvus_server):
    settings = milvus_settings(milvus_server)
    docs = sorted(p.name for p in SEEDS.iterdir())
    result = qa.answer("Who will be the spokesperson of the new political alliance?", index=ray_seeds,
                       settings=settings, doc_ids=[docs[1]])
    assert all(c.doc_id == docs[1] for c in result.citations)
    hits = qa.search("political alliance", index=ray_seeds, settings=settings, doc_ids=[docs[0]], k=10)
    assert hits and {h.doc_id for h in hits} == {docs[0]}
    assert qa.search("political alliance", index=ray_seeds, settings=settings, doc_ids=["no-such"]) == []


def test_the_engine_reads_the_statement_a_question_names(milvus_server, tmp_path):
    """The statement-page rule ranks its candidates through the engine's own filtered search."""
    from qa.api import get_engine
    from qa.retrieve import Query

    from .test_index import STATEMENT_PAGE, STATEMENT_QUESTION, statement_filing

    settings = milvus_settings(milvus_server)
    path = tmp_path / "idx"
    qa.index_paths([statement_filing(tmp_path / "filings")], index=path, settings=settings)
    engine = get_engine(path, settings)
    query = Query(STATEMENT_QUESTION)
    assert STATEMENT_PAGE in [p.page for p in engine.retriever.search(query)]
    # the statement's passage is ranked by the engine's own filtered search and put among the first five
    store = engine.index.store
    found = [(pid, 1.0 - i / 100) for i, pid in enumerate(
        pid for pid in store.ids.tolist() if store.passage(pid).page != STATEMENT_PAGE)]
    vec = engine.retriever.embed_query(query)
    out = engine.retriever.with_statement(query, found, 5, vec,
                                          lambda ids: engine.index.dense.dense_search(vec, 2, ids, None))
    assert STATEMENT_PAGE in [store.passage(pid).page for pid, _ in out[:5]] and out[0] == found[0]
    result = qa.answer(STATEMENT_QUESTION, index=path, settings=settings)
    assert result.citations  # each verbatim at its offsets (tests/conftest.py checks every answer)


def test_as_retriever_works_on_the_milvus_store(ray_seeds, milvus_server):
    retriever = qa.as_retriever(ray_seeds, k=3, settings=milvus_settings(milvus_server))
    nodes = retriever.retrieve("Who will be the spokesperson of the new political alliance?")
    assert len(nodes) == 3
    top = nodes[0].node
    doc = (SEEDS / top.metadata["doc_id"]).read_text(encoding="utf-8")
    assert doc[top.metadata["start"]:top.metadata["end"]] == top.text and "spokesperson" in top.text


def test_incremental_update_adds_changes_and_deletes_by_id(milvus_server, ray_cluster, tmp_path, corpus):
    settings = milvus_settings(milvus_server)
    path = tmp_path / "idx"
    qa.index_paths([corpus], index=path, settings=settings, ray="auto")
    before = load_index(path, settings)
    names = sorted(p.name for p in corpus.iterdir())
    (corpus / "zz_new.txt").write_text("The Halvorsen Institute opened a desalination plant in Tromsø in 2031. "
                                       "It was funded by the Nordic Water Fund.", encoding="utf-8")
    (corpus / names[0]).unlink()
    changed = corpus / names[1]
    changed.write_text(changed.read_text(encoding="utf-8") + "\nThe alliance later renamed itself the Blue Front.",
                       encoding="utf-8")
    report, _ = qa.index_paths([corpus], index=path, settings=settings, ray="auto")
    assert report.added == ["zz_new.txt"] and report.changed == [names[1]] and report.removed == [names[0]]
    after = load_index(path, settings)
    assert after.dense.collection == before.dense.collection  # updated in place, not rebuilt
    assert after.dense.count() == len(after.store) == after.manifest["passages"]
    result = qa.answer("Which institute opened a desalination plant in Tromsø?", index=path, settings=settings)
    assert "Halvorsen Institute" in result.text and result.citations[0].doc_id == "zz_new.txt"
    # (searched, not answered: the conftest checks answers against the unchanged seed files)
    renamed = qa.search("alliance renamed itself Blue Front", index=path, settings=settings, k=1)
    assert renamed[0].doc_id == names[1] and "Blue Front" in renamed[0].text
    assert all(h.doc_id != names[0] for h in qa.search("political alliance", index=path, settings=settings, k=20))
    # nothing changed: nothing re-read, nothing re-embedded, nothing written
    again, _ = qa.index_paths([corpus], index=path, settings=settings, ray="auto")
    assert again.unchanged == 2 and again.embedded_passages == 0 and not (again.added or again.changed)


def test_a_failed_ray_task_is_retried_without_duplicate_passages(milvus_server, ray_cluster, tmp_path, monkeypatch,
                                                                 seeds_index):
    settings = milvus_settings(milvus_server)
    marker = tmp_path / "failed-once"
    monkeypatch.setenv("QA_RAY_FAIL_ONCE", str(marker))  # the workers of a local cluster inherit it
    import ray

    ray.shutdown()  # a cluster started with this environment
    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False)
    try:
        qa.index_paths([SEEDS], index=tmp_path / "idx", settings=settings, ray="auto")
    finally:
        monkeypatch.delenv("QA_RAY_FAIL_ONCE")
        ray.shutdown()
        ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False)
    assert marker.exists()  # the failure happened
    served = load_index(tmp_path / "idx", settings)
    local = load_index(seeds_index, Settings.from_env())
    assert served.dense.count() == len(local.store) == len(served.store)
    assert sorted(served.store.ids.tolist()) == list(range(len(local.store)))


def test_an_interrupted_update_is_invisible_and_repaired(milvus_server, tmp_path, corpus):
    """Rows inserted by an update that never went live are never searched, and the next update removes them."""
    settings = milvus_settings(milvus_server)
    path = tmp_path / "idx"
    qa.index_paths([corpus], index=path, settings=settings)
    index = load_index(path, settings)
    orphan = index.store.passage(int(index.store.ids[0]))
    from dataclasses import replace

    ghost = replace(orphan, passage_id=index.store.next_id + 5, text="zebra quagga okapi " * 3)
    index.dense.add_passages([ghost], np.ones((1, 384), np.float32) / np.sqrt(384))  # as a killed update leaves
    reopened = load_index(path, settings)
    assert reopened.dense.count() == reopened.manifest["passages"]
    assert qa.search("zebra quagga okapi", index=path, settings=settings, mode="bm25") == []
    (corpus / "extra.txt").write_text("A short extra report about river levels.", encoding="utf-8")
    qa.index_paths([corpus], index=path, settings=settings)
    updated = load_index(path, settings)
    held = updated.dense.client.query(updated.dense.collection, filter="id >= 0", output_fields=["id"])
    assert sorted(r["id"] for r in held) == sorted(updated.store.ids.tolist())


def test_opening_checks_the_collection_against_the_manifest(milvus_server, tmp_path, corpus):
    settings = milvus_settings(milvus_server)
    path = tmp_path / "idx"
    qa.index_paths([corpus], index=path, settings=settings)
    with pytest.raises(IndexMismatch, match="rebuild"):
        load_index(path, Settings.from_env())  # opened as a local index
    with pytest.raises(IndexMismatch, match="rebuild"):
        load_index(path, milvus_settings(milvus_server, chunk_chars=400))
    from qa.index import check_index

    assert check_index(path, settings) == []
    index = load_index(path, settings)
    index.dense.delete(index.store.ids[:2])
    with pytest.raises(IndexCorrupt, match="holds .* passages, the index"):
        load_index(path, settings)
    run = subprocess.run([sys.executable, "-m", "qa.cli", "check", str(path), "--store", milvus_server.store],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "holds" in run.stderr and "Traceback" not in run.stderr
    index.dense.drop()
    with pytest.raises(IndexCorrupt, match="collection .* is missing"):
        load_index(path, settings)
    # a rebuild makes a new collection live and drops the old one
    old = index.dense.collection
    qa.index_paths([corpus], index=path, settings=settings, rebuild=True)
    rebuilt = load_index(path, settings)
    assert rebuilt.dense.collection != old and old not in rebuilt.dense.client.list_collections()
    assert rebuilt.dense.count() == rebuilt.manifest["passages"]


def test_a_dropped_connection_mid_session_is_a_clear_error(tmp_path, corpus, seeds_index):
    """A second server, stopped between two questions: the API raises StoreUnavailable, the CLI says so."""
    server = MilvusServer(tmp_path / "srv")
    settings = Settings.from_env(store=server.store)
    path = tmp_path / "idx"
    try:
        qa.index_paths([corpus], index=path, settings=settings)
        assert qa.answer("Who will be the spokesperson of the new political alliance?", index=path,
                         settings=settings).citations
    finally:
        server.server.stop()
    with pytest.raises(StoreUnavailable, match="did not answer .* is it running"):
        qa.answer("Which groups make up the alliance?", index=path, settings=settings)
    run = subprocess.run([sys.executable, "-m", "qa.cli", "ask", "Which groups make up the alliance?",
                          "--index", str(path), "--store", server.store], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "qa: error:" in run.stderr and "Milvus store" in run.stderr


def test_the_cli_indexes_into_milvus_lite_in_process(tmp_path):
    """``--store milvus:PATH.db``: no server at all, the engine runs inside the command."""
    store = f"milvus:{tmp_path}/lite.db"
    index = tmp_path / "idx"
    run = subprocess.run([sys.executable, "-m", "qa.cli", "index", str(SEEDS), "--index", str(index),
                          "--store", store], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "2 added" in run.stdout
    run = subprocess.run([sys.executable, "-m", "qa.cli", "ask", "Who will be the spokesperson of the new "
                          "political alliance?", "--index", str(index), "--store", store, "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    cite = answer["citations"][0]
    assert "Asadi" in answer["text"]
    assert (SEEDS / cite["doc_id"]).read_text(encoding="utf-8")[cite["start"]:cite["end"]] == cite["quote"]


def test_nothing_imports_ray_or_pymilvus_unless_asked():
    """The local store and an index without --ray never load the scale-out libraries."""
    code = ("import sys, qa, qa.api, qa.cli, qa.index, qa.retrieve, qa.ui; "
            "from qa.settings import Settings; import qa.index.milvus; "
            "bad = [m for m in ('ray', 'pymilvus', 'milvus_lite') if m in sys.modules]; "
            "assert not bad, bad")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


def test_passages_dropped_by_an_update_are_deleted_after_it_goes_live(milvus_server, tmp_path, corpus, monkeypatch):
    """The delete comes after the save; one cut short (the store failing right then) is finished next time."""
    settings = milvus_settings(milvus_server)
    path = tmp_path / "idx"
    qa.index_paths([corpus], index=path, settings=settings)
    gone = sorted(p.name for p in corpus.iterdir())[0]
    (corpus / gone).unlink()

    def store_down(self, ids, texts=()):
        raise StoreUnavailable("injected: the store stopped answering")

    with monkeypatch.context() as m:
        m.setattr(MilvusSearch, "delete", store_down)
        qa.index_paths([corpus], index=path, settings=settings)
    _, manifest = read_manifest(path)
    assert manifest["milvus_pending"]  # listed in the live generation
    index = load_index(path, settings)  # opens: the extra rows are the pending ones
    assert index.dense.count() == manifest["passages"] + len(manifest["milvus_pending"])
    assert all(h.doc_id != gone for h in qa.search("political alliance", index=path, settings=settings, k=20))
    (corpus / "extra.txt").write_text("A short extra report about river levels.", encoding="utf-8")
    qa.index_paths([corpus], index=path, settings=settings)
    index = load_index(path, settings)
    assert index.dense.count() == index.manifest["passages"]


def test_ray_embeds_each_passage_with_its_lead_as_the_local_build_does(ray_cluster, tmp_path, settings):
    """Passages embedded on Ray are read with their report's title exactly as a local build reads them."""
    corpus = tmp_path / "corpus"
    titled_report(corpus)
    local, ray_built = tmp_path / "local", tmp_path / "ray"
    qa.index_paths([corpus], index=local, settings=settings)
    qa.index_paths([corpus], index=ray_built, settings=settings, ray="auto")
    a, b = load_index(local, settings).store, load_index(ray_built, settings).store
    ids = a.ids_of_documents(["ferry.html"])
    assert any(t.startswith("Zanzibar ferry disaster\n") for t in a.embedded_texts(ids))
    # the int8 encoder scales activations per batch, and Ray batches other reports with it
    np.testing.assert_allclose(a.passage_vectors(ids), b.passage_vectors(b.ids_of_documents(["ferry.html"])),
                               atol=2e-2)
    assert (a.passage_vectors(ids) * b.passage_vectors(b.ids_of_documents(["ferry.html"]))).sum(axis=1).min() > 0.999
