"""The on-disk index: round trip, incremental updates, atomic saves, refusing bad indexes."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import qa
from qa.index import IndexCorrupt, IndexMismatch, IndexNotFound, check_index, load_index, terms
from qa.retrieve import Query, Retriever
from qa.settings import Settings

from .conftest import titled_report

SEEDS = Path(__file__).resolve().parent.parent / "seeds"


def top_k(path, settings, embedder, question, k=5):
    index = load_index(path, settings)
    return [(p.doc_id, p.start, p.end) for p in Retriever(index, embedder, settings).search(Query(question), k)]


def test_manifest_and_round_trip(seeds_index, settings, embedder):
    gen = (seeds_index / "CURRENT").read_text()
    manifest = json.loads((seeds_index / gen / "manifest.json").read_text())
    assert manifest["params"]["model"] == settings.model and manifest["dimension"] == 384
    assert manifest["params"]["chunk_chars"] == settings.chunk_chars
    assert set(manifest["documents"]) == {"000_e8572f977ee04a7c.txt", "002_476c018fafa87246.txt"}
    index = load_index(seeds_index, settings)
    assert len(index.dense) == manifest["passages"] == len(index.store) == len(index.keyword)
    rows = np.arange(index.store.sentence_count)
    np.testing.assert_allclose(np.linalg.norm(index.store.sentence_vectors(rows), axis=1), 1, atol=1e-4)
    q = "Who will be the spokesperson of the new political alliance?"
    first = top_k(seeds_index, settings, embedder, q)
    assert first == top_k(seeds_index, settings, embedder, q) and len(first) == 5


def test_incremental_update_embeds_only_changes(corpus, tmp_path, settings):
    path = tmp_path / "idx"
    report, _ = qa.index_paths([corpus], index=path, settings=settings)
    assert len(report.added) == 2 and report.embedded_passages > 0
    report, _ = qa.index_paths([corpus], index=path, settings=settings)
    assert report.embedded_passages == report.embedded_sentences == 0 and report.unchanged == 2
    target = corpus / "002_476c018fafa87246.txt"
    target.write_text(target.read_text(encoding="utf-8") + "\n\nA new closing line about Basra ports.", encoding="utf-8")
    (corpus / "new.txt").write_text("The Basra port handled record cargo in March.", encoding="utf-8")
    (corpus / "000_e8572f977ee04a7c.txt").unlink()
    report, _ = qa.index_paths([corpus], index=path, settings=settings)
    assert report.changed == ["002_476c018fafa87246.txt"] and report.added == ["new.txt"]
    assert report.removed == ["000_e8572f977ee04a7c.txt"] and report.unchanged == 0
    index = load_index(path, settings)
    assert sorted(d.doc_id for d in index.documents) == ["002_476c018fafa87246.txt", "new.txt"]
    # embedded exactly the passages of the two touched documents
    assert report.embedded_passages == len(index.store)
    a = qa.answer("What did the Basra port handle in March?", index=path, settings=settings)
    assert not a.abstained and a.citations[0].doc_id == "new.txt"


def test_unchanged_documents_keep_their_vectors(corpus, tmp_path, settings):
    path = tmp_path / "idx"
    qa.index_paths([corpus], index=path, settings=settings)
    before = load_index(path, settings, mmap=False)
    (corpus / "extra.txt").write_text("An unrelated note.", encoding="utf-8")
    report, _ = qa.index_paths([corpus], index=path, settings=settings)
    assert report.unchanged == 2 and report.embedded_passages == 1
    after = load_index(path, settings)
    ids = before.store.ids
    np.testing.assert_array_equal(after.store.ids[:len(ids)], ids)
    np.testing.assert_array_equal(before.store.passage_vectors(ids), after.store.passage_vectors(ids))


KILL_SCRIPT = r"""
import sys, time, numpy as np
import qa.index
real_save = np.save
def slow_save(path, arr, *a, **k):
    real_save(path, arr, *a, **k)
    print("SAVING", flush=True)
    time.sleep(60)
qa.index.np.save = slow_save
import qa
from qa.settings import Settings
qa.index_paths([sys.argv[1]], index=sys.argv[2], settings=Settings.from_env(), rebuild=sys.argv[3] == "rebuild")
"""


@pytest.mark.parametrize("how", ["rebuild", "update"])
def test_killed_save_leaves_previous_index_loadable(corpus, tmp_path, settings, embedder, how):
    path = tmp_path / "idx"
    qa.index_paths([corpus], index=path, settings=settings)
    q = "Who will be the spokesperson of the new political alliance?"
    before = top_k(path, settings, embedder, q)
    (corpus / "000_e8572f977ee04a7c.txt").write_text("Replaced text that is different.", encoding="utf-8")
    # np.save slowed down only so the kill lands mid-save; everything else is the real code path.
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(corpus), str(path), how],
                            stdout=subprocess.PIPE, text=True, env=os.environ)
    assert proc.stdout.readline().strip() == "SAVING"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert top_k(path, settings, embedder, q) == before
    report, _ = qa.index_paths([corpus], index=path, settings=settings)  # the next run cleans up
    assert len(list(path.glob("gen-*"))) == 1 and report.changed == ["000_e8572f977ee04a7c.txt"]


def test_corrupt_and_mismatched_indexes_are_refused(corpus, tmp_path, settings):
    path = tmp_path / "idx"
    qa.index_paths([corpus], index=path, settings=settings)
    with pytest.raises(IndexMismatch, match="rebuild"):
        load_index(path, replace(settings, chunk_chars=300))
    gen = path / (path / "CURRENT").read_text()
    vectors = gen / "passage_vectors.npy"
    vectors.write_bytes(vectors.read_bytes()[:-100])
    with pytest.raises(IndexCorrupt, match="qa index .*--rebuild"):
        load_index(path, settings)
    (gen / "manifest.json").write_text("{not json")
    with pytest.raises(IndexCorrupt, match="rebuild"):
        load_index(path, settings)
    with pytest.raises(IndexNotFound, match="qa index"):
        load_index(tmp_path / "missing", settings)
    report, _ = qa.index_paths([corpus], index=path, settings=settings, rebuild=True)
    assert len(load_index(path, settings).dense) > 0


def test_llama_index_retriever(seeds_index, settings):
    from llama_index.core.schema import NodeWithScore

    retriever = qa.as_retriever(seeds_index, k=3, settings=settings)
    nodes = retriever.retrieve("Who will be the spokesperson of the new political alliance?")
    assert len(nodes) == 3 and all(isinstance(n, NodeWithScore) for n in nodes)
    index = qa.open_index(seeds_index, settings)
    for n in nodes:
        m = n.node.metadata
        assert index.store.document(m["doc_id"]).text[m["start"]:m["end"]] == n.node.get_content()
    assert "spokesperson for the new political alliance" in nodes[0].node.get_content()


def test_keyword_ranking_matches_bm25s(seeds_index, settings, embedder):
    """Our top-n over the scored passages only must equal bm25s' own full-array ranking."""
    index = load_index(seeds_index, settings)
    retriever = Retriever(index, embedder, settings)
    doc = index.doc_ids[0]
    allowed = index.store.ids_of_documents([doc])
    bm25, held = index.keyword.bm25, index.keyword.ids  # bm25s' document n is passage held[n]
    for question in ("Who will be the spokesperson of the new political alliance?",
                     "heavy and medium weapons Fars News Agency", "Shamkhani Western country France"):
        known = [t for t in terms(question) if t in bm25.vocab_dict]
        for n, filtered in ((3, None), (50, None), (3, allowed)):
            ours = retriever.keyword(terms(question), n, filtered)
            mask = None
            if filtered is not None:
                mask = np.isin(held, filtered).astype(np.float32)
            ids, scores = bm25.retrieve([known], k=min(n, len(held)), weight_mask=mask, show_progress=False,
                                        n_threads=0)
            theirs = [(int(held[i]), float(s)) for i, s in zip(ids[0], scores[0]) if s > 0]
            assert ours, question
            assert [s for _, s in ours] == pytest.approx([s for _, s in theirs])
            # the passages may differ only among those tied with the last score (we keep the lower ids)
            scores = dict(ours) | dict(theirs)
            assert all(scores[r] == pytest.approx(theirs[-1][1]) for r in {r for r, _ in ours} ^ {r for r, _ in theirs})
            if filtered is not None:
                assert all(index.store.passage(pid).doc_id == doc for pid, _ in ours)


A = "000_e8572f977ee04a7c.txt"
B = "002_476c018fafa87246.txt"


def _spans(index, doc_id):
    """(id, start, end) of each passage of ``doc_id``."""
    return [(int(pid), (p := index.store.passage(int(pid))).start, p.end) for pid in index.store.ids_of_documents([doc_id])]


@pytest.mark.parametrize("kind,limits,mode", [
    ("flat-ip", {}, "separate"),
    ("flat-ip", {}, "derived"),
    ("hnsw32", {"EXACT_MAX": 0}, "separate"),
    ("IVF", {"EXACT_MAX": 0, "HNSW_MAX": 0}, "separate"),
])
def test_update_keeps_passage_ids_and_forgets_changed_ones(corpus, tmp_path, settings, embedder, monkeypatch,
                                                           kind, limits, mode):
    """An unchanged document keeps its passage ids; a changed one's old ids leave dense and keyword search.

    Flat and IVF are updated in place (no rebuild); HNSW, which cannot delete, is rebuilt.
    """
    import qa.index.dense as dense_module

    for name, value in limits.items():
        monkeypatch.setattr(dense_module, name, value)
    settings = replace(settings, sentence_vectors=mode)
    path = tmp_path / "idx"
    qa.index_paths([corpus], index=path, settings=settings)
    before = load_index(path, settings)
    assert before.dense.kind.startswith(kind)
    kept, old_a = _spans(before, B), _spans(before, A)
    old_ids = {pid for pid, _, _ in old_a}
    old_vectors = before.store.passage_vectors(sorted(old_ids))
    next_id = before.manifest["next_id"]
    assert next_id == len(before.store)

    target = corpus / A  # the first document: FAISS positions after it shift
    target.write_text(target.read_text(encoding="utf-8") + "\n\nA new closing line about Basra ports.", encoding="utf-8")
    (corpus / "new.txt").write_text("The Basra port handled record cargo in March.", encoding="utf-8")
    rebuilds = []
    real_build = dense_module.FaissSearch.build.__func__
    monkeypatch.setattr(dense_module.FaissSearch, "build",
                        classmethod(lambda cls, *a, **k: rebuilds.append(1) or real_build(cls, *a, **k)))
    report, _ = qa.index_paths([corpus], index=path, settings=settings)
    assert report.changed == [A] and report.added == ["new.txt"] and report.unchanged == 1
    assert len(rebuilds) == (1 if kind == "hnsw32" else 0)

    after = load_index(path, settings)
    assert _spans(after, B) == kept, "an unchanged document keeps its passages' ids"
    new_ids = {pid for pid, _, _ in _spans(after, A) + _spans(after, "new.txt")}
    assert not new_ids & old_ids and min(new_ids) >= next_id
    assert after.manifest["next_id"] == next_id + len(new_ids)
    assert set(after.dense.ids().tolist()) == set(after.store.ids.tolist()) == set(after.keyword.ids.tolist())
    assert len(after.dense) == len(after.store) == len(after.keyword) == after.manifest["passages"]
    with pytest.raises(KeyError):
        after.store.passage(min(old_ids))
    retriever = Retriever(after, embedder, settings)
    for vector in old_vectors:
        assert not {pid for pid, _ in retriever.dense(vector, len(after.store))} & old_ids
    for pid, _, _ in kept + _spans(after, "new.txt"):  # each passage is its own nearest neighbour
        assert retriever.dense(after.store.passage_vectors([pid])[0], 1)[0][0] == pid
    words = terms(after.store.document(A).text)
    assert not {pid for pid, _ in retriever.keyword(words, len(after.store))} & old_ids
    assert {pid for pid, _ in retriever.keyword(words, len(after.store))} & new_ids

    for question in ("What did the Basra port handle in March?",
                     "Who will be the spokesperson of the new political alliance?"):
        a = qa.answer(question, index=path, settings=settings)
        assert not a.abstained and a.citations
        for c in a.citations:
            assert after.store.document(c.doc_id).text[c.start:c.end] == c.quote
    assert {p.passage_id for p in a.passages} <= set(after.store.ids.tolist())


def test_an_older_format_is_refused_with_the_rebuild_command(corpus, tmp_path, settings):
    path = tmp_path / "idx"
    qa.index_paths([corpus], index=path, settings=settings)
    manifest_file = path / (path / "CURRENT").read_text() / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    for key in ("next_id",):  # what a format-3 manifest did not have
        manifest.pop(key)
    manifest["format"] = 3
    manifest_file.write_text(json.dumps(manifest))
    rebuild = f"has format 3, this version reads 4: rebuild it with `qa index CORPUS --index {path} --rebuild`"
    with pytest.raises(IndexMismatch) as caught:
        load_index(path, settings)
    assert rebuild in str(caught.value)
    with pytest.raises(IndexMismatch, match="--rebuild"):
        qa.index_paths([corpus], index=path, settings=settings)
    assert any("format 3" in p for p in check_index(path))
    qa.index_paths([corpus], index=path, settings=settings, rebuild=True)
    assert load_index(path, settings).manifest["format"] == 4 and check_index(path) == []


@pytest.mark.parametrize("kind", ["flat-ip", "hnsw32", "IVF16,SQ8"])
def test_dense_search_by_id_on_every_kind(kind, tmp_path, monkeypatch):
    """Ids, not positions, come back from every kind, filtered through FAISS's selector or not, and after a delete."""
    import qa.index.dense as dense_module
    from qa.index import FaissSearch

    monkeypatch.setattr(dense_module, "EXACT_FILTER_MAX", 0)  # take the FAISS selector path
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((400, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = rng.permutation(10_000)[:400].astype(np.int64) + 7  # neither positions nor sorted
    table = dict(zip(ids.tolist(), vectors))
    vectors_of = lambda wanted: np.stack([table[int(i)] for i in wanted])
    dense = FaissSearch.build(ids, vectors, vectors_of, kind=kind)
    allowed = ids[::3]
    for i in (0, 5, 30):
        assert dense.search(vectors[i], 1)[0][0] == ids[i]
        hits = dense.search(vectors[i], 5, allowed)
        assert hits and all(pid in set(allowed.tolist()) for pid, _ in hits)
        best = allowed[np.argmax(vectors_of(allowed) @ vectors[i])]
        assert hits[0][0] == best
    dense.save(tmp_path)
    loaded = FaissSearch.load(tmp_path, vectors_of, kind)
    assert loaded.search(vectors[5], 3) == dense.search(vectors[5], 3)
    assert sorted(loaded.ids().tolist()) == sorted(ids.tolist())
    if loaded.removable:
        loaded.delete(ids[:10])
        assert len(loaded) == 390 and not set(loaded.ids().tolist()) & set(ids[:10].tolist())
        assert loaded.search(vectors[30], 1)[0][0] == ids[30]
        assert all(pid not in set(ids[:10].tolist()) for pid, _ in loaded.search(vectors[0], 20))


def test_sentence_vectors_on_demand_are_never_stored_and_match_their_definition(seeds_index, settings, embedder,
                                                                              tmp_path):
    """The default index stores no sentence vectors. Pooled in passage (the default), the ones
    computed when asked equal what a "derived" build stores for the same passage; embedded alone,
    they equal the sentence's own embedding. Both repeat from a bounded cache; the whole table is refused."""
    from qa.index.store import PassageStore

    assert settings.sentence_vectors == "ondemand" and settings.sentence_pooling == "passage"
    gen = seeds_index / (seeds_index / "CURRENT").read_text()
    assert not (gen / "sentence_vectors.npy").exists()
    store = load_index(seeds_index, settings).store
    assert not store.stores_sentence_vectors and store.context == settings.sentence_context
    rows = np.array([3, 0, 3, 7, 30])
    derived = replace(settings, sentence_vectors="derived", passage_precision="fp32")  # the same float model
    qa.index_paths([SEEDS], index=tmp_path / "derived", settings=derived)
    stored = load_index(tmp_path / "derived", derived).store
    assert stored.stores_sentence_vectors and (stored.sentence_owners() == store.sentence_owners()).all()
    got = store.sentence_vectors(rows)  # each in its first passage, as the derived build does
    assert (got * stored.sentence_vectors(rows)).sum(axis=1).min() > 0.999  # ONNX here, PyTorch there
    ids = store.ids.tolist()
    # an overlap sentence: the last of one passage and the first of the next
    pid, row = next((q, store.sentence_rows(q)[0]) for p, q in zip(ids, ids[1:])
                    if store.sentence_rows(q)[0] == store.sentence_rows(p)[-1])
    later = np.array([row])
    assert store.sentence_owners()[row] != pid
    other = store.sentence_vectors(later, within=[pid])  # read in the next passage's context instead
    assert float(other[0] @ store.sentence_vectors(later)[0]) < 0.999
    alone = embedder.encode([store.sentence_text(int(r)) for r in rows])
    assert (store.sentence_vectors(rows, alone=True) * alone).sum(axis=1).min() > 0.9999
    assert (got * alone).sum(axis=1).min() < 0.99, "pooled in passage is not the sentence alone"
    with pytest.raises(ValueError, match="on demand"):
        store.sentence_vectors(slice(None))
    own = load_index(seeds_index, replace(settings, sentence_pooling="sentence")).store
    assert own.context is None
    assert (own.sentence_vectors(rows) * alone).sum(axis=1).min() > 0.9999
    small = PassageStore(store.documents, store.table, store.ids, store.sentences,
                         store.passage_vectors(store.ids), None, store.encoder, cache_size=2, context=store.context)
    np.testing.assert_allclose(small.sentence_vectors([0, 1, 2, 0]), store.sentence_vectors([0, 1, 2, 0]), atol=1e-6)
    assert len(small._cache) == 2
    with pytest.raises(ValueError, match="QA_SENTENCE_POOLING"):
        load_index(seeds_index, replace(settings, sentence_pooling="tokens"))


def test_a_reports_title_leads_its_passages_in_the_embedding_not_in_bm25(tmp_path, embedder):
    """Every passage of a titled report is embedded after the title, so a question naming the story
    comes nearer its later passages; BM25 counts the passages as written (lead rule 6: a headline in
    every passage crowded the keyword ranking), also after an update; citations never quote the title."""
    corpus = tmp_path / "corpus"
    titled_report(corpus)
    vectors = {}
    for lead in ("title", "none"):
        s = Settings.from_env(passage_lead=lead)
        path = tmp_path / lead
        qa.index_paths([corpus], index=path, settings=s)
        index = load_index(path, s)
        ids = index.store.ids_of_documents(["ferry.html"])
        assert len(ids) >= 3 and not any("zanzibar" in t.lower() for t in index.store.passage_texts(ids))
        assert not index.keyword.search(["zanzibar"], 50)
        assert all(t.startswith("Zanzibar ferry disaster\n") == (lead == "title") for t in index.store.embedded_texts(ids))
        assert list(index.store.keyword_texts(ids)) == list(index.store.passage_texts(ids))
        vectors[lead] = index.store.passage_vectors(ids)
        (corpus / "other.txt").write_text("A bulletin about grain exports from Odesa.", encoding="utf-8")
        qa.index_paths([corpus], index=path, settings=s)  # the keyword index is rebuilt from the store's texts
        assert not load_index(path, s).keyword.search(["zanzibar"], 50)
        (corpus / "other.txt").unlink()
        result = qa.answer("What did the coast guard divers search through the night?", index=path, settings=s)
        assert result.citations and all("Zanzibar ferry disaster" not in c.quote for c in result.citations)
    asked = embedder.encode(["What happened in the Zanzibar ferry disaster?"])[0]
    assert (vectors["title"] @ asked > vectors["none"] @ asked).all()


def test_the_lead_changes_the_passage_vector_as_the_build_embeds_it(tmp_path, embedder):
    """A passage's stored vector is the embedding of its searched text (title, then passage)."""
    corpus = tmp_path / "corpus"
    titled_report(corpus)
    s = Settings.from_env(passage_lead="title")
    qa.index_paths([corpus], index=tmp_path / "idx", settings=s)
    store = load_index(tmp_path / "idx", s).store
    ids = store.ids_of_documents(["ferry.html"])
    texts = list(store.embedded_texts(ids))
    assert any(t.startswith("Zanzibar ferry disaster\n") for t in texts)
    # embedded by the int8 passage encoder, kept as float16: the float model's vectors of the same texts
    assert (store.passage_vectors(ids) * embedder.encode(texts)).sum(axis=1).min() > 0.98


# ---------------------------------------------------------------- keyword index updates


def _keyword_hits(index, question, k=50):
    """Keyword hits as (doc_id, start, end, score): comparable across indexes whose passage ids differ."""
    out = []
    for pid, score in index.keyword.search(terms(question), k):
        p = index.store.passage(pid)
        out.append((p.doc_id, p.start, p.end, score))
    return out


KEYWORD_QUESTIONS = ("Who will be the spokesperson of the new political alliance?", "Basra port cargo March",
                     "heavy and medium weapons Fars News Agency", "Shamkhani Western country France", "record")


def test_keyword_scores_are_those_of_bm25s_own_index():
    """Our vectorized build gives bm25s' matrix bit for bit (the formula is bm25s' own, run over counts)."""
    import bm25s

    from qa.index.keyword import BM25_B, BM25_K1, TermCounts

    docs = [terms(line) for line in (SEEDS / "000_e8572f977ee04a7c.txt").read_text(encoding="utf-8").splitlines()]
    docs = [d or [""] for d in docs] + [[""], ["basra", "basra", "basra", "port"]]
    theirs = bm25s.BM25(k1=BM25_K1, b=BM25_B)
    theirs.index(docs, show_progress=False)
    ours = TermCounts.empty().plus(docs).bm25()
    assert set(ours.vocab_dict) == set(theirs.vocab_dict)
    for term in ours.vocab_dict:
        assert np.array_equal(ours.get_scores([term]), theirs.get_scores([term])), term


def test_keyword_update_tokenizes_only_added_passages_and_equals_a_full_rebuild(corpus, tmp_path, settings,
                                                                                 monkeypatch):
    import qa.index.keyword as keyword_module

    path, fresh = tmp_path / "idx", tmp_path / "fresh"
    qa.index_paths([corpus], index=path, settings=settings)
    target = corpus / A
    target.write_text(target.read_text(encoding="utf-8") + "\n\nA new closing line about Basra ports.", encoding="utf-8")
    (corpus / "new.txt").write_text("The Basra port handled record cargo in March.", encoding="utf-8")
    tokenized = []
    real_terms = keyword_module.terms
    monkeypatch.setattr(keyword_module, "terms", lambda text: tokenized.append(text) or real_terms(text))
    report, _ = qa.index_paths([corpus], index=path, settings=settings)
    assert report.changed == [A] and report.added == ["new.txt"] and report.keyword == "updated"
    after = load_index(path, settings)
    added = after.store.ids_of_documents([A, "new.txt"])
    assert sorted(tokenized) == sorted(after.store.passage_texts(added)), "only the added passages are tokenized"

    report, _ = qa.index_paths([corpus], index=fresh, settings=settings)
    assert report.keyword == "built"
    rebuilt = load_index(fresh, settings)
    for question in KEYWORD_QUESTIONS:
        hits = _keyword_hits(after, question)
        assert hits and hits == _keyword_hits(rebuilt, question), question  # scores equal, not only close
    for term in {*after.keyword.vocab, *rebuilt.keyword.vocab}:
        assert after.keyword.doc_freq(term) == rebuilt.keyword.doc_freq(term), term
    assert len(np.asarray(after.keyword.tf)) == len(np.asarray(rebuilt.keyword.tf))


def _rewrite_manifest(gen: Path, name: str, drop: bool = False) -> None:
    """Make the manifest agree with ``name`` as it now is (or forget it), so only our own checks see the change."""
    from qa.index import file_digest

    manifest_file = gen / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    if drop:
        manifest["files"].pop(name)
        manifest["checksums"].pop(name)
    else:
        manifest["files"][name] = (gen / name).stat().st_size
        manifest["checksums"][name] = file_digest(gen / name)
    manifest_file.write_text(json.dumps(manifest))


def test_missing_or_damaged_term_counts_are_a_corrupt_index_with_the_rebuild_command(seeds_index, tmp_path,
                                                                                       settings):
    import shutil

    rebuild = r"corrupt: .*keyword_tf.npy.*qa index CORPUS --index .* --rebuild"
    cases = {
        "missing": lambda f: f.unlink(),
        "short": lambda f: np.save(f, np.load(f)[:-1]),
        "zero": lambda f: np.save(f, np.concatenate([np.load(f)[:-1], np.zeros(1, np.uint8)])),
        "garbage": lambda f: f.write_bytes(b"not a numpy file at all"),
        "floats": lambda f: np.save(f, np.load(f).astype(np.float32)),
    }
    for case, damage in cases.items():
        path = tmp_path / case
        shutil.copytree(seeds_index, path)
        gen = path / (path / "CURRENT").read_text()
        damage(gen / "keyword_tf.npy")
        with pytest.raises(IndexCorrupt, match=rebuild):
            load_index(path, settings)
        if case != "missing":  # past the checksums: the structural checks still catch it
            _rewrite_manifest(gen, "keyword_tf.npy")
            with pytest.raises(IndexCorrupt, match=rebuild):
                load_index(path, settings)
            assert any("keyword_tf.npy" in p for p in check_index(path))


def test_an_index_saved_without_term_counts_loads_and_its_first_update_rebuilds_keyword_search(
        corpus, tmp_path, settings, capsys):
    """A generation written before keyword_tf.npy existed: searchable as it is; its first update
    re-tokenizes every passage (and says so), later ones only the added passages."""
    from qa.cli import main

    path = tmp_path / "idx"
    qa.index_paths([corpus], index=path, settings=settings)
    gen = path / (path / "CURRENT").read_text()
    (gen / "keyword_tf.npy").unlink()
    _rewrite_manifest(gen, "keyword_tf.npy", drop=True)
    old = load_index(path, settings)
    assert old.keyword.tf is None and _keyword_hits(old, KEYWORD_QUESTIONS[0])
    assert check_index(path) == []

    (corpus / "new.txt").write_text("The Basra port handled record cargo in March.", encoding="utf-8")
    assert main(["index", str(corpus), "--index", str(path)]) == 0
    assert "keyword index rebuilt: the index predates keyword_tf.npy" in capsys.readouterr().err
    assert (path / (path / "CURRENT").read_text() / "keyword_tf.npy").exists()
    (corpus / "new2.txt").write_text("A second note about Basra.", encoding="utf-8")
    report, _ = qa.index_paths([corpus], index=path, settings=settings)
    assert report.keyword == "updated"
    fresh = tmp_path / "fresh"
    qa.index_paths([corpus], index=fresh, settings=settings)
    after, rebuilt = load_index(path, settings), load_index(fresh, settings)
    for question in KEYWORD_QUESTIONS:
        assert _keyword_hits(after, question) == _keyword_hits(rebuilt, question), question


def test_keyword_ties_at_the_cut_go_to_the_lower_ids_wherever_bm25s_holds_them():
    """Results depend on (score, id) only, so an updated index and a rebuilt one answer alike."""
    from qa.index import Bm25Search

    texts = ["Basra port cargo"] * 4 + ["unrelated words here"]
    forward = Bm25Search.build(np.array([1, 2, 3, 4, 5]), texts, lambda ids: iter(()))
    backward = Bm25Search.build(np.array([4, 3, 2, 1, 5]), texts, lambda ids: iter(()))
    for k in (1, 2, 3):
        hits = forward.search(terms("Basra cargo"), k)
        assert [pid for pid, _ in hits] == list(range(1, k + 1)) and hits == backward.search(terms("Basra cargo"), k)


def test_a_repeated_document_id_is_refused_before_anything_is_written(tmp_path, settings, embedder):
    """Two documents with one id would make an index that cannot be loaded: refuse them, write nothing."""
    from qa.index import update_index
    from qa.types import Document

    path = tmp_path / "idx"
    qa.index_paths([SEEDS], index=path, settings=settings)
    live = (path / "CURRENT").read_text()
    docs = [Document("a.txt", "The port opened.", fingerprint="1"), Document("a.txt", "The port closed.", fingerprint="2")]
    with pytest.raises(ValueError, match="'a.txt' is given twice"):
        update_index(path, docs, settings, embedder)
    assert (path / "CURRENT").read_text() == live and len(list(path.glob("gen-*"))) == 1
    assert check_index(path, settings) == []


def test_passage_vectors_are_kept_in_half_precision_and_older_float32_files_still_load(tmp_path, settings):
    """The store's copy of the passage vectors is float16 on disk (half the largest file of a big index);
    it reads back as float32, a search restricted to reports scores it within 1e-3 of FAISS's own score,
    and an index written with float32 vectors (before 2026-11-23) still loads and answers."""
    import json

    from qa.index.store import file_digest

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("000_e8572f977ee04a7c.txt", "002_476c018fafa87246.txt"):
        (corpus / name).write_text((SEEDS / name).read_text(encoding="utf-8"), encoding="utf-8")
    path = tmp_path / "idx"
    qa.index_paths([corpus], index=path, settings=settings)
    gen = path / (path / "CURRENT").read_text().strip()
    assert np.load(gen / "passage_vectors.npy").dtype == np.float16
    index = load_index(path, settings)
    ids = index.store.ids
    assert index.store.passage_vectors(ids).dtype == np.float32
    from qa.embed import get_embedder

    vec = get_embedder().encode(["Who will be the spokesperson of the new political alliance?"])[0]
    free = dict(index.dense.search(vec, len(ids)))
    restricted = index.dense.search(vec, 5, index.store.ids_of_documents(["000_e8572f977ee04a7c.txt"]))
    assert restricted and all(abs(score - free[pid]) < 1e-3 for pid, score in restricted)
    before = qa.answer("Who will be the spokesperson of the new political alliance?", index=path, settings=settings)
    # an older index: the same vectors as float32, the manifest's size and checksum to match
    full = np.load(gen / "passage_vectors.npy").astype(np.float32)
    np.save(gen / "passage_vectors.npy", full)
    manifest = json.loads((gen / "manifest.json").read_text())
    manifest["files"]["passage_vectors.npy"] = (gen / "passage_vectors.npy").stat().st_size
    manifest["checksums"]["passage_vectors.npy"] = file_digest(gen / "passage_vectors.npy")
    (gen / "manifest.json").write_text(json.dumps(manifest))
    old = load_index(path, settings)
    assert old.problem is None and old.store.passage_vectors(ids).dtype == np.float32
    after = qa.answer("Who will be the spokesperson of the new political alliance?", index=path, settings=settings)
    assert after.text == before.text and not after.abstained


def test_a_generation_being_loaded_is_not_removed_under_its_reader(corpus, tmp_path, settings):
    """A writer that makes a new generation live leaves the one a reader is still loading; the
    reader removes it when done. (Before: the writer removed it at once and the load failed.)"""
    from qa.index.store import leased, live

    path = tmp_path / "idx"
    qa.index_paths([corpus], index=path, settings=settings)
    first = path / live(path)
    assert (first / "READERS").is_file() and "READERS" not in json.loads((first / "manifest.json").read_text())["files"]
    with leased(first):
        (corpus / "extra.txt").write_text("The Basra port handled 12 ships.", encoding="utf-8")
        qa.index_paths([corpus], index=path, settings=settings)
        assert live(path) != first.name and first.is_dir(), "the writer left the generation being read"
    assert sorted(p.name for p in path.glob("gen-*")) == sorted([first.name, live(path)])
    load_index(path, settings)  # the live one; the stale one waits for the next writer
    (corpus / "extra.txt").write_text("The Basra port handled 13 ships.", encoding="utf-8")
    qa.index_paths([corpus], index=path, settings=settings)
    assert [p.name for p in path.glob("gen-*")] == [live(path)] and check_index(path, settings) == []


def test_a_reader_whose_generation_was_replaced_while_it_loaded_removes_it(corpus, tmp_path, settings, monkeypatch):
    """The reader that held the last lease on a replaced generation removes it after loading."""
    import qa.index as index_module
    from qa.index.store import live

    path = tmp_path / "idx"
    qa.index_paths([corpus], index=path, settings=settings)
    first = live(path)
    real = index_module._load_generation

    def load_while_a_writer_replaces_it(*args, **kwargs):
        loaded = real(*args, **kwargs)
        monkeypatch.setattr(index_module, "_load_generation", real)  # the writer's own load is plain
        (corpus / "extra.txt").write_text("The Basra port handled 12 ships.", encoding="utf-8")
        qa.index_paths([corpus], index=path, settings=settings)
        return loaded

    monkeypatch.setattr(index_module, "_load_generation", load_while_a_writer_replaces_it)
    index = load_index(path, settings)
    assert sorted(d.doc_id for d in index.documents) == sorted(p.name for p in corpus.iterdir() if p.name != "extra.txt")
    assert [p.name for p in path.glob("gen-*")] == [live(path)] and live(path) != first


STATEMENT_QUESTION = "Using the balance sheet, what were the inventories at year end?"
STATEMENT_PAGE = 6


def statement_filing(folder: Path) -> Path:
    """A filing whose balance sheet (page 6) sits among twenty pages of prose about the balance sheet."""
    from tests.pdfs import write_pdf

    folder.mkdir(parents=True, exist_ok=True)
    prose = [f"Note {i}. Our balance sheet discussion: management reviews the inventories on the balance sheet "
             f"at year end, and the balance sheet shows how inventories at year end compare with last year."
             for i in range(1, 21)]
    sheet = "ACME Corp.\nConsolidated Balance Sheets\n(in millions)\nMerchandise inventories\t5,409\t5,209\nTotal assets\t12,901\t13,049"
    write_pdf(folder / "ACME_10K.pdf", prose[:5] + [sheet] + prose[5:])
    return folder


def test_a_question_about_a_financial_statement_reads_the_statement_page(tmp_path, settings, embedder):
    """A filing's balance sheet is numbers under one heading: pages of prose that talk about the
    balance sheet out-rank it. A question that names the statement, or asks for one of its line
    items, gets the statement's passage among the five it reads; other questions are untouched."""
    path = tmp_path / "idx"
    qa.index_paths([statement_filing(tmp_path / "filings")], index=path, settings=settings)
    index = load_index(path, settings)

    def pages(question: str, statement_pages: int, k: int | None = None) -> list[int]:
        chosen = replace(settings, statement_pages=statement_pages)
        return [p.page for p in Retriever(index, embedder, chosen).search(Query(question), k)]

    assert STATEMENT_PAGE not in pages(STATEMENT_QUESTION, 0)  # ranked by its words alone, the statement is not read
    with_rule = pages(STATEMENT_QUESTION, 2)
    assert STATEMENT_PAGE in with_rule and len(with_rule) == len(set(with_rule)) == 5
    assert with_rule[0] == pages(STATEMENT_QUESTION, 0)[0]  # the best passage found stays first
    assert pages(STATEMENT_QUESTION, 2, k=1) == pages(STATEMENT_QUESTION, 0, k=1)
    assert STATEMENT_PAGE in pages(STATEMENT_QUESTION, 2, k=10)
    assert STATEMENT_PAGE in pages("What were ACME's merchandise inventories at year end?", 2)  # implied by its line item
    other = "Who reviews the discussion at year end?"  # no statement named or implied: nothing added
    assert pages(other, 2) == pages(other, 0)
