"""``qa bench``: our pipeline and llama-index's stock pipeline, measured in the same run.

Each phase runs in its own fresh process, so that peak memory and cold start are
those of that phase alone. The stock pipeline is SimpleDirectoryReader (or the same
loaded documents, for a ``.jsonl`` corpus) + SentenceSplitter at our passage size +
VectorStoreIndex over a FaissVectorStore with HuggingFaceEmbedding of the same
bundled model, queried through its retriever at the same top-k.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from qa.settings import PROJECT_ROOT, Settings

STOCK_CHUNK_TOKENS = 128  # ≈ our 600-character passages, so both embed the same granularity
STOCK_OVERLAP_TOKENS = 16


def run_bench(corpus: Path, questions: Sequence[str], settings: Settings, *, k: int = 5,
              work: Path | None = None, stock: bool = True, store: str = "") -> dict:
    """Build, cold-start and query both pipelines on ``corpus``; the figures and their ratios.

    With ``store`` (a Milvus store), the local index is also written to it (the same chunks
    and vectors, through :func:`qa.index.update_index`) and queried there, side by side.
    """
    own_tmp = work is None
    work = Path(work or tempfile.mkdtemp(prefix="qa-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    qfile = work / "questions.json"
    qfile.write_text(json.dumps(list(questions)))
    try:
        ours_dir, stock_dir = work / "ours", work / "stock"
        for d in (ours_dir, stock_dir):
            shutil.rmtree(d, ignore_errors=True)
        out: dict = {"corpus": str(corpus), "questions": len(questions), "k": k, "cpus": os.cpu_count(),
                     "model": settings.model}
        ours_build = _phase("ours-build", str(corpus), str(ours_dir))
        t0 = time.perf_counter()
        cold = subprocess.run([sys.executable, "-m", "qa.cli", "ask", questions[0], "--index", str(ours_dir),
                               "--json"], capture_output=True, text=True, env=_env(), cwd=PROJECT_ROOT)
        cold_s = time.perf_counter() - t0
        if cold.returncode != 0:
            raise RuntimeError(f"cold start failed: {cold.stderr[-1000:]}")
        ours_query = _phase("ours-query", str(ours_dir), str(qfile), str(k))
        out["ours"] = {**ours_build, **ours_query, "cold_start_s": round(cold_s, 2),
                       "build_peak_rss_mb": ours_build["peak_rss_mb"], "query_peak_rss_mb": ours_query["peak_rss_mb"]}
        out.update(
            build_passages_per_s=ours_build["passages_per_s"],
            cold_start_s=round(cold_s, 2),
            answer_p50_ms=ours_query["answer_p50_ms"],
            answer_p95_ms=ours_query["answer_p95_ms"],
            retrieve_p50_ms=ours_query["retrieve_p50_ms"],
            peak_rss_mb=max(ours_build["peak_rss_mb"], ours_query["peak_rss_mb"]),
            index_disk_mb=_disk_mb(ours_dir),
        )
        if store:
            milvus_dir = work / "milvus"
            shutil.rmtree(milvus_dir, ignore_errors=True)
            m_build = _phase("milvus-build", str(ours_dir), store, str(milvus_dir))
            t0 = time.perf_counter()
            cold = subprocess.run([sys.executable, "-m", "qa.cli", "ask", questions[0], "--index", str(milvus_dir),
                                   "--store", store, "--json"], capture_output=True, text=True, env=_env(),
                                  cwd=PROJECT_ROOT)
            m_cold = time.perf_counter() - t0
            if cold.returncode != 0:
                raise RuntimeError(f"cold start on {store} failed: {cold.stderr[-1000:]}")
            m_query = _phase("ours-query", str(milvus_dir), str(qfile), str(k), store)
            out["milvus"] = {**m_build, **m_query, "store": store,
                             "seconds": round(ours_build["seconds"] + m_build["store_s"], 2), "cold_start_s": round(m_cold, 2),
                             "build_peak_rss_mb": m_build["peak_rss_mb"], "query_peak_rss_mb": m_query["peak_rss_mb"],
                             "index_disk_mb": round(_disk_mb(milvus_dir) + m_build.get("engine_disk_mb", 0), 2)}
        if stock:
            stock_build = _phase("stock-build", str(corpus), str(stock_dir), str(settings.chunk_chars))
            t0 = time.perf_counter()
            _phase("stock-cold", str(stock_dir), str(qfile), str(k))
            stock_cold = time.perf_counter() - t0
            stock_query = _phase("stock-query", str(stock_dir), str(qfile), str(k))
            out["llamaindex"] = {**stock_build, **stock_query, "cold_start_s": round(stock_cold, 2),
                                 "index_disk_mb": _disk_mb(stock_dir), "build_peak_rss_mb": stock_build["peak_rss_mb"],
                                 "query_peak_rss_mb": stock_query["peak_rss_mb"]}
            out["build_speedup_vs_llamaindex"] = round(stock_build["seconds"] / ours_build["seconds"], 2)
            out["query_speedup_vs_llamaindex"] = round(stock_query["retrieve_p50_ms"] / ours_query["answer_p50_ms"], 2)
            out["retrieve_speedup_vs_llamaindex"] = round(
                stock_query["retrieve_p50_ms"] / ours_query["retrieve_p50_ms"], 2)
            out["cold_start_speedup_vs_llamaindex"] = round(stock_cold / cold_s, 2)
        return out
    finally:
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)


def default_questions(corpus: Path, limit: int = 50) -> list[str]:
    """A fixed question list: the seeds eval set, or a benchmark's own questions beside the corpus."""
    for candidate in (corpus.parent / "questions.jsonl", corpus / "questions.jsonl", corpus.parent / "queries.jsonl"):
        if candidate.is_file():
            rows = [json.loads(line) for line in candidate.open(encoding="utf-8") if line.strip()]
            return [r.get("question") or r.get("text") for r in rows if r.get("question") or r.get("text")][:limit]
    rows = [json.loads(line) for line in (PROJECT_ROOT / "eval" / "seeds.jsonl").open(encoding="utf-8")]
    return [r["question"] for r in rows if not r.get("history")][:limit]


def format_bench(result: dict) -> str:
    """A small human-readable table of one run."""
    ours, stock, milvus = result.get("ours", {}), result.get("llamaindex", {}), result.get("milvus")
    rows = [("passages", "passages"), ("build s", "seconds"), ("build passages/s", "passages_per_s"),
            ("build peak RSS MB", "build_peak_rss_mb"), ("query peak RSS MB", "query_peak_rss_mb"),
            ("cold start s", "cold_start_s"),
            ("retrieve p50 ms", "retrieve_p50_ms"), ("retrieve p95 ms", "retrieve_p95_ms"),
            ("answer p50 ms", "answer_p50_ms"), ("answer p95 ms", "answer_p95_ms"), ("index disk MB", "index_disk_mb")]
    lines = [f"corpus {result['corpus']} · {result['questions']} questions · top-k {result['k']}",
             f"{'':22}{'qa':>12}{'llama-index':>14}" + (f"{'qa + Milvus':>14}" if milvus else "")]
    for label, key in rows:
        lines.append(f"{label:22}{_fmt(ours.get(key, result.get(key))):>12}{_fmt(stock.get(key)):>14}"
                     + (f"{_fmt(milvus.get(key)):>14}" if milvus else ""))
    if milvus:
        lines.append(f"qa + Milvus: {milvus['store']}; its build writes the local build's chunks and vectors to the "
                     f"engine (store s {milvus['store_s']}), so its build s is the local embedding plus that")
    for key in ("build_speedup_vs_llamaindex", "query_speedup_vs_llamaindex", "retrieve_speedup_vs_llamaindex",
                "cold_start_speedup_vs_llamaindex"):
        if key in result:
            lines.append(f"{key}: {result[key]}×")
    return "\n".join(lines)


# ---------------------------------------------------------------- scale: 10k … 1M passages


def run_scale(sizes: Sequence[int], texts_from: Path, work: Path | None = None, queries: int = 100,
              store: str = "", update_docs: int = 100) -> list[dict]:
    """Build a real on-disk index of ``n`` passages per size and measure it in a fresh process.

    Passage texts are real sentences (from ``texts_from``) recombined, so BM25 sees real
    vocabulary; vectors are synthetic (clustered, unit length), since embedding a
    million passages takes hours on 2 cores. Recall@10 is measured against exact search.
    Then ``update_docs`` documents (10 passages each; half changed, half new) go into it
    through the real incremental update, their vectors given, so no embedding is timed.
    """
    own_tmp = work is None
    work = Path(work or tempfile.mkdtemp(prefix="qa-scale-"))
    results = []
    try:
        for n in sizes:
            target = work / f"scale-{n}"
            shutil.rmtree(target, ignore_errors=True)
            built = _phase("scale-build", str(texts_from), str(target), str(n))
            served = _phase("scale-query", str(target), str(queries))
            disk = _disk_mb(target)
            updated = _phase("scale-update", str(target), str(update_docs)) if update_docs else {}
            results.append({"passages": n, **built, **served, **updated, "disk_mb": disk})
            if store:
                results.append({"passages": n, **_phase("scale-milvus", str(target), store, str(queries))})
            shutil.rmtree(target, ignore_errors=True)
        return results
    finally:
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)


def format_scale(rows: Sequence[dict]) -> str:
    """The README's growth table (and the Milvus store's, when measured)."""
    engine = [r for r in rows if r.get("store")]
    rows = [r for r in rows if not r.get("store")]
    if engine:
        table = format_scale(rows) + "\n\n"
        table += ("| passages | store | insert s | rows/s | dense p50 ms | recall@10 vs exact | BM25 p50 ms | "
                  "hybrid p50 ms (engine RRF) | engine RSS MB | engine disk MB |\n" + "|" + "---|" * 10)
        for r in engine:
            table += (f"\n| {r['passages']:,} | {r['store']} | {r['insert_s']:.1f} | {r['rows_per_s']:.0f} | "
                      f"{r['dense_p50_ms']:.2f} | {r['recall@10']:.3f} | {r['bm25_p50_ms']:.2f} | "
                      f"{r['hybrid_p50_ms']:.2f} | {r['engine_rss_mb']:.0f} | {r['engine_disk_mb']:.0f} |")
        return table
    head = ("| passages | dense index | build s (FAISS + BM25) | open s | dense p50 ms | recall@10 vs exact | "
            "BM25 p50 ms | hybrid p50 ms | RSS after queries MB | disk MB | update 100 docs s (BM25) | "
            "update peak RSS MB |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        update = (f"{r['update_s']:.1f} ({r['update_keyword_s']:.1f}) | {r['update_peak_rss_mb']:.0f}"
                  if "update_s" in r else "– | –")
        lines.append(f"| {r['passages']:,} | {r['dense_kind']} | {r['build_s']:.1f} ({r['dense_build_s']:.1f} + "
                     f"{r['bm25_build_s']:.1f}) | {r['open_s']:.2f} | {r['dense_p50_ms']:.2f} | {r['recall@10']:.3f} | "
                     f"{r['bm25_p50_ms']:.2f} | {r['hybrid_p50_ms']:.2f} | {r['rss_mb']:.0f} | {r['disk_mb']:.0f} | "
                     f"{update} |")
    return "\n".join(lines)


def _scale_build(texts_from: str, target: str, n: str) -> dict:
    import numpy as np

    from qa.index import BM25_B, BM25_K1, FORMAT_VERSION, Bm25Search, FaissSearch, Index, PassageStore, reads_lead, save_index
    from qa.types import Document

    n = int(n)
    settings = Settings()
    rng = np.random.default_rng(0)
    pool = _sentence_pool(texts_from)
    per_doc = SCALE_PER_DOC
    documents, p_rows, s_rows = [], [], []
    per_passage = SCALE_PER_PASSAGE
    picks = rng.integers(0, len(pool), size=(n, per_passage))
    for d0 in range(0, n, per_doc):
        parts, at = [], 0
        doc_i = len(documents)
        for i in range(d0, min(n, d0 + per_doc)):
            p_rows.append((doc_i, at, -1, -1, len(s_rows), len(s_rows) + per_passage))
            for j in picks[i]:
                s_rows.append((doc_i, at, at + len(pool[j]), -1))
                parts.append(pool[j])
                at += len(pool[j]) + 1
            p_rows[-1] = (doc_i, p_rows[-1][1], at - 1, -1, *p_rows[-1][4:])
        documents.append(Document(f"synthetic/{doc_i:07d}.txt", " ".join(parts), fingerprint=str(doc_i)))
    passages = np.array(p_rows, dtype=np.int64)
    sentences = np.array(s_rows, dtype=np.int64)
    centers = rng.standard_normal((1024, 384)).astype(np.float32)
    # as stored (half precision), so the exact search the recall is measured against sees what FAISS sees
    vectors = _synthetic_vectors(rng, n, centers).astype(np.float16).astype(np.float32)
    # sentence vectors are embedded on demand (the default): none are stored
    store = PassageStore(documents, passages, np.arange(n, dtype=np.int64), sentences, vectors.astype(np.float16),
                         None, lead=reads_lead(settings.index_params()))
    t0 = time.perf_counter()
    dense = FaissSearch.build(store.ids, vectors, store.passage_vectors)
    kind = dense.kind
    dense_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    keyword = Bm25Search.build(store.ids, store.keyword_texts(store.ids), store.keyword_texts)
    bm25_s = time.perf_counter() - t0
    manifest = {"format": FORMAT_VERSION, "params": settings.index_params(), "dimension": 384,
                "documents": {d.doc_id: d.fingerprint for d in documents}, "passages": n, "sentences": len(sentences),
                "next_id": n, "dense": kind, "bm25": {"k1": BM25_K1, "b": BM25_B}, "synthetic_vectors": True}
    index = Index(manifest, store, dense, keyword)
    t0 = time.perf_counter()
    save_index(index, Path(target))
    return {"dense_kind": kind, "dense_build_s": round(dense_s, 2), "bm25_build_s": round(bm25_s, 2),
            "save_s": round(time.perf_counter() - t0, 2), "build_s": round(dense_s + bm25_s, 2),
            "build_peak_rss_mb": _peak_rss_mb()}


SCALE_PER_DOC = 10  # passages a synthetic document holds
SCALE_PER_PASSAGE = 3  # sentences a synthetic passage holds, as real news passages (RealTimeQA: 3.5)


def _sentence_pool(texts_from: str) -> list[str]:
    """Real sentences to recombine into synthetic passages (so BM25 sees real vocabulary)."""
    from qa.chunk import split_sentences
    from qa.load import load_corpus

    pool = []
    for doc in load_corpus([Path(texts_from)])[0]:
        pool.extend(doc.text[a:b] for a, b in split_sentences(doc.text))
        if len(pool) > 200_000:
            break
    return [" ".join(p.split()) for p in pool if len(p) > 20]


def _synthetic_vectors(rng, n: int, centers):
    """Unit vectors clustered around ``centers``."""
    import numpy as np

    vectors = centers[rng.integers(0, 1024, n)] + 0.6 * rng.standard_normal((n, 384)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _scale_update(target: str, n_docs: str) -> dict:
    """Update a scale index with ``n_docs`` synthetic documents (half changed, half new) through
    :func:`qa.index.update_index`, vectors given (:class:`qa.index.Prepared`), so no embedding is timed.

    Their sentences are drawn from the index itself: real text, and no corpus to re-split.
    """
    import numpy as np

    from qa.index import Bm25Search, Prepared, load_index, update_index
    from qa.types import Document

    n_docs = int(n_docs)
    settings = Settings()
    t0 = time.perf_counter()
    current = load_index(Path(target), settings)
    stamp = int(current.manifest["next_id"])  # a different update on every run
    rng = np.random.default_rng(stamp)
    documents = list(current.documents)  # what `qa index` would have loaded from the corpus files
    centers = current.store.passage_vectors(current.store.ids[rng.integers(0, len(current.store), 1024)])
    rows = rng.integers(0, current.store.sentence_count, n_docs * SCALE_PER_DOC * SCALE_PER_PASSAGE)
    pool = [" ".join(current.store.sentence_text(int(r)).split()) for r in rows]
    gather_s = time.perf_counter() - t0
    del current
    changed = rng.choice(len(documents), n_docs // 2, replace=False)
    edits = [(int(i), documents[i].doc_id) for i in changed]
    edits += [(len(documents) + j, f"synthetic/new-{stamp}-{j:05d}.txt") for j in range(n_docs - len(edits))]
    prepared = {}
    for slot, doc_id in edits:
        parts, sentences, spans, at = [], [], [], 0
        for _ in range(SCALE_PER_DOC):
            first = len(sentences)
            for j in rng.integers(0, len(pool), SCALE_PER_PASSAGE):
                sentences.append((at, at + len(pool[j]), -1))
                parts.append(pool[j])
                at += len(pool[j]) + 1
            spans.append((sentences[first][0], at - 1, -1, first, len(sentences)))
        doc = Document(doc_id, " ".join(parts), fingerprint=f"updated-{stamp}-{slot}")
        if slot < len(documents):
            documents[slot] = doc
        else:
            documents.append(doc)
        prepared[doc_id] = Prepared.from_rows(doc_id, sentences, spans, _synthetic_vectors(rng, len(spans), centers))
    keyword_s = []
    refresh = Bm25Search.refresh

    def timed(self) -> None:
        t = time.perf_counter()
        refresh(self)
        keyword_s.append(time.perf_counter() - t)

    Bm25Search.refresh = timed  # type: ignore[method-assign]
    t0 = time.perf_counter()
    index, report = update_index(Path(target), documents, settings, _NoEmbedder(), prepared=prepared)
    seconds = time.perf_counter() - t0
    assert report.embedded_passages == n_docs * SCALE_PER_DOC and len(report.changed) == n_docs // 2
    return {"update_docs": n_docs, "update_s": round(seconds, 2), "update_keyword_s": round(sum(keyword_s), 2),
            "update_keyword": getattr(report, "keyword", ""), "update_gather_s": round(gather_s, 2),
            "update_peak_rss_mb": _peak_rss_mb()}


class _NoEmbedder:
    """Stands in for the model when every changed document comes with its vectors."""

    dim = 384

    def encode(self, texts, **_):
        raise AssertionError("the scale update embeds nothing")

    encode_with_spans = encode


def _scale_query(target: str, queries: str) -> dict:
    import numpy as np
    import psutil

    from qa.embed import get_embedder
    from qa.index import load_index, terms
    from qa.retrieve import Query, Retriever

    settings = Settings()
    embedder = get_embedder()  # loaded before the clock: the index open is what is timed
    rss0 = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    index = load_index(Path(target), settings)
    open_s = time.perf_counter() - t0
    index.verified.wait(600)  # big files are hashed in the background; timed separately, before queries
    verified_s = time.perf_counter() - t0
    retriever = Retriever(index, embedder, settings)
    rng = np.random.default_rng(1)
    store = index.store
    n = len(store)
    picks = store.ids[np.sort(rng.integers(0, n, int(queries)))]
    vectors = store.passage_vectors(picks) + (0.3 / np.sqrt(384)) * rng.standard_normal((len(picks), 384)).astype(np.float32)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    dense_ms, bm25_ms, hybrid_ms, found = [], [], [], []
    for pid, vec in zip(picks.tolist(), vectors):
        question = " ".join(store.passage(pid).text.split()[:8])
        t = time.perf_counter()
        found.append({i for i, _ in retriever.dense(vec, 10)})
        dense_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        retriever.keyword(terms(question), 50)
        bm25_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        retriever.search(Query(question), 10, vector=vec)
        hybrid_ms.append((time.perf_counter() - t) * 1000)
    rss = psutil.Process().memory_info().rss
    # Exact top-10 by brute force, after the memory reading (it reads every vector).
    exact_best = np.full((len(vectors), 10), -np.inf, dtype=np.float32)
    exact_ids = np.zeros((len(vectors), 10), dtype=np.int64)
    for lo in range(0, n, 100_000):
        chunk = store.ids[lo:lo + 100_000]
        scores = vectors @ store.passage_vectors(chunk).T
        k = min(10, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        cand_s = np.concatenate([exact_best, np.take_along_axis(scores, top, 1)], axis=1)
        cand_i = np.concatenate([exact_ids, chunk[top]], axis=1)
        keep = np.argsort(-cand_s, axis=1)[:, :10]
        exact_best, exact_ids = np.take_along_axis(cand_s, keep, 1), np.take_along_axis(cand_i, keep, 1)
    recall = float(np.mean([len(set(e.tolist()) & f) / 10 for e, f in zip(exact_ids, found)]))
    return {"open_s": round(open_s, 3), "verified_s": round(verified_s, 3), **_percentiles("dense", dense_ms), **_percentiles("bm25", bm25_ms),
            **_percentiles("hybrid", hybrid_ms), "recall@10": round(recall, 4),
            "rss_mb": round(rss / 2**20, 1), "rss_before_open_mb": round(rss0 / 2**20, 1)}


def _scale_milvus(target: str, store: str, queries: str) -> dict:
    """A scale index's passages and vectors written to a Milvus store, then searched there."""
    import numpy as np

    from qa.index import MilvusSearch, fixed_params, load_index, parse_store, terms

    settings = Settings.from_env(store=store)
    local = load_index(Path(target), Settings())
    st = local.store
    n = len(st)
    spec = parse_store(store)
    search = MilvusSearch.create(spec, f"qa_scale_{n}_{time.time_ns():x}", 384, fixed_params(settings, 384))
    try:
        t0 = time.perf_counter()
        for lo in range(0, n, 20_000):
            ids = st.ids[lo:lo + 20_000]
            search.add_passages([st.passage(int(i)) for i in ids], st.passage_vectors(ids), list(st.keyword_texts(ids)))
        search.flush()
        search.count()  # loaded and indexed: the first query is not the one that waits
        insert_s = time.perf_counter() - t0
        rng = np.random.default_rng(1)
        picks = st.ids[np.sort(rng.integers(0, n, int(queries)))]
        vectors = st.passage_vectors(picks) + (0.3 / np.sqrt(384)) * rng.standard_normal((len(picks), 384)).astype(np.float32)
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        dense_ms, bm25_ms, hybrid_ms, recalls = [], [], [], []
        for pid, vec in zip(picks.tolist(), vectors):
            words = terms(" ".join(st.passage(pid).text.split()[:8]))
            t = time.perf_counter()
            found = {i for i, _ in search.dense_search(vec, 10)}
            dense_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            search.keyword_search(words, 50)
            bm25_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            search.hybrid(vec, words, 10, 50, settings.rrf_k)
            hybrid_ms.append((time.perf_counter() - t) * 1000)
            exact = local.dense.search(vec, 10) if n <= 50_000 else None
            if exact is not None:
                recalls.append(len(found & {i for i, _ in exact}) / 10)
            else:
                scores = np.concatenate([st.passage_vectors(st.ids[lo:lo + 200_000]) @ vec
                                         for lo in range(0, n, 200_000)])
                best = st.ids[np.argpartition(-scores, 9)[:10]]
                recalls.append(len(found & set(best.tolist())) / 10)
        engine_rss = _engine_rss_mb()
        db = Path(spec.uri)
        disk = (_disk_mb(db) if db.is_dir() else round(db.stat().st_size / 2**20, 2)) if spec.local else None
        return {"store": store.split(":", 1)[0] + (" (lite)" if spec.local else ""), "insert_s": round(insert_s, 1),
                "rows_per_s": round(n / insert_s, 1), **_percentiles("dense", dense_ms),
                **_percentiles("bm25", bm25_ms), **_percentiles("hybrid", hybrid_ms),
                "recall@10": round(float(np.mean(recalls)), 4), "engine_rss_mb": engine_rss,
                "engine_disk_mb": disk if disk is not None else float("nan")}
    finally:
        search.drop()


# ---------------------------------------------------------------- phases (each in a fresh process)


def _phase(name: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "qa.bench", name, *args], capture_output=True, text=True,
                          env=_env(), cwd=PROJECT_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"bench phase {name} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _env() -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("QA_INDEX", None)
    env.pop("QA_STORE", None)  # phases are given their store explicitly
    return env


def _ours_build(corpus: str, index_dir: str) -> dict:
    from qa.api import index_paths

    settings = Settings.from_env(index=index_dir)
    t0 = time.perf_counter()
    report, _ = index_paths([corpus], index=index_dir, settings=settings)
    seconds = time.perf_counter() - t0
    passages = report.embedded_passages
    return {"seconds": round(seconds, 2), "passages": passages, "sentences": report.embedded_sentences,
            "passages_per_s": round(passages / seconds, 1), "peak_rss_mb": _peak_rss_mb()}


def _milvus_build(local_dir: str, store: str, target: str) -> dict:
    """The local index's documents, chunks and vectors written to a Milvus store (no second embedding)."""
    import numpy as np

    from qa.embed import get_embedder
    from qa.index import Prepared, load_index, update_index

    local = load_index(Path(local_dir), Settings.from_env())
    settings = Settings.from_env(index=target, store=store)
    st = local.store
    t0 = time.perf_counter()
    documents, prepared = [], {}
    for doc in st.documents:
        part = st.part(doc.doc_id)
        prepared[doc.doc_id] = Prepared.from_rows(doc.doc_id, part.sentences[:, 1:4].tolist(),
                                                  part.passages[:, 1:6].tolist(),
                                                  np.asarray(st.passage_vectors(part.ids), dtype=np.float32))
        documents.append(doc)
    gather_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, report = update_index(Path(target), documents, settings, get_embedder(), prepared=prepared, rebuild=True)
    seconds = time.perf_counter() - t0
    out = {"store_s": round(seconds, 2), "gather_s": round(gather_s, 2), "passages": report.embedded_passages,
           "peak_rss_mb": _peak_rss_mb(), "engine_rss_mb": _engine_rss_mb()}
    if store.startswith("milvus:") and not store.startswith("milvus://"):
        db = Path(store[len("milvus:"):])
        out["engine_disk_mb"] = _disk_mb(db) if db.is_dir() else round(db.stat().st_size / 2**20, 2)
    return out


def _engine_rss_mb() -> float:
    """Resident memory of engine processes this one started (milvus-lite runs Milvus as a child)."""
    import psutil

    return round(sum(c.memory_info().rss for c in psutil.Process().children(recursive=True)) / 2**20, 1)


def _ours_query(index_dir: str, qfile: str, k: str, store: str = "") -> dict:
    from qa.api import answer, search

    settings = Settings.from_env(index=index_dir, top_k=int(k), store=store or None)
    questions = json.loads(Path(qfile).read_text())
    answer(questions[0], index=index_dir, settings=settings)  # load model and index
    answer_ms, retrieve_ms = [], []
    for q in questions:
        t0 = time.perf_counter()
        search(q, index=index_dir, settings=settings, k=int(k))
        retrieve_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        answer(q, index=index_dir, settings=settings)
        answer_ms.append((time.perf_counter() - t0) * 1000)
    return {**_percentiles("answer", answer_ms), **_percentiles("retrieve", retrieve_ms), "peak_rss_mb": _peak_rss_mb(),
            **({"engine_rss_mb": _engine_rss_mb()} if store else {})}


def _stock_embed():
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from qa.embed import model_path

    return HuggingFaceEmbedding(model_name=str(model_path(Settings().model)), device="cpu")


def _stock_build(corpus: str, persist: str, chunk_chars: str) -> dict:
    import faiss
    from llama_index.core import Document, SimpleDirectoryReader, StorageContext, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.vector_stores.faiss import FaissVectorStore

    t0 = time.perf_counter()
    embed = _stock_embed()
    path = Path(corpus)
    if path.is_dir():
        docs = SimpleDirectoryReader(str(path), recursive=True).load_data()
    else:  # a .jsonl corpus: the same documents our loader reads
        from qa.load import load_corpus

        docs = [Document(text=d.text, id_=d.doc_id) for d in load_corpus([path])[0]]
    nodes = SentenceSplitter(chunk_size=STOCK_CHUNK_TOKENS, chunk_overlap=STOCK_OVERLAP_TOKENS).get_nodes_from_documents(docs)
    store = FaissVectorStore(faiss_index=faiss.IndexFlatL2(embed._model.get_sentence_embedding_dimension()))
    storage = StorageContext.from_defaults(vector_store=store)
    VectorStoreIndex(nodes, storage_context=storage, embed_model=embed)
    storage.persist(persist_dir=persist)
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 2), "passages": len(nodes), "passages_per_s": round(len(nodes) / seconds, 1),
            "peak_rss_mb": _peak_rss_mb()}


def _stock_retriever(persist: str, k: int):
    from llama_index.core import StorageContext, load_index_from_storage
    from llama_index.vector_stores.faiss import FaissVectorStore

    store = FaissVectorStore.from_persist_dir(persist)
    storage = StorageContext.from_defaults(vector_store=store, persist_dir=persist)
    return load_index_from_storage(storage, embed_model=_stock_embed()).as_retriever(similarity_top_k=k)


def _stock_cold(persist: str, qfile: str, k: str) -> dict:
    retriever = _stock_retriever(persist, int(k))
    nodes = retriever.retrieve(json.loads(Path(qfile).read_text())[0])
    return {"retrieved": len(nodes)}


def _stock_query(persist: str, qfile: str, k: str) -> dict:
    retriever = _stock_retriever(persist, int(k))
    questions = json.loads(Path(qfile).read_text())
    retriever.retrieve(questions[0])
    ms = []
    for q in questions:
        t0 = time.perf_counter()
        retriever.retrieve(q)
        ms.append((time.perf_counter() - t0) * 1000)
    return {**_percentiles("retrieve", ms), "peak_rss_mb": _peak_rss_mb()}


def _percentiles(name: str, ms: list[float]) -> dict:
    ordered = sorted(ms)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {f"{name}_p50_ms": round(statistics.median(ordered), 2), f"{name}_p95_ms": round(p95, 2)}


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _disk_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20, 2)


def _fmt(value) -> str:
    return "–" if value is None else f"{value:g}" if isinstance(value, (int, float)) else str(value)


_PHASES = {"milvus-build": _milvus_build, "scale-milvus": _scale_milvus, "scale-build": _scale_build, "scale-query": _scale_query, "scale-update": _scale_update, "ours-build": _ours_build, "ours-query": _ours_query, "stock-build": _stock_build,
           "stock-cold": _stock_cold, "stock-query": _stock_query}

if __name__ == "__main__":
    print(json.dumps(_PHASES[sys.argv[1]](*sys.argv[2:])))
