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
              work: Path | None = None, stock: bool = True) -> dict:
    """Build, cold-start and query both pipelines on ``corpus``; the figures and their ratios."""
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
        out["ours"] = {**ours_build, **ours_query, "cold_start_s": round(cold_s, 2)}
        out.update(
            build_passages_per_s=ours_build["passages_per_s"],
            cold_start_s=round(cold_s, 2),
            answer_p50_ms=ours_query["answer_p50_ms"],
            answer_p95_ms=ours_query["answer_p95_ms"],
            retrieve_p50_ms=ours_query["retrieve_p50_ms"],
            peak_rss_mb=max(ours_build["peak_rss_mb"], ours_query["peak_rss_mb"]),
            index_disk_mb=_disk_mb(ours_dir),
        )
        if stock:
            stock_build = _phase("stock-build", str(corpus), str(stock_dir), str(settings.chunk_chars))
            t0 = time.perf_counter()
            _phase("stock-cold", str(stock_dir), str(qfile), str(k))
            stock_cold = time.perf_counter() - t0
            stock_query = _phase("stock-query", str(stock_dir), str(qfile), str(k))
            out["llamaindex"] = {**stock_build, **stock_query, "cold_start_s": round(stock_cold, 2),
                                 "index_disk_mb": _disk_mb(stock_dir)}
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
    ours, stock = result.get("ours", {}), result.get("llamaindex", {})
    rows = [("passages", "passages"), ("build s", "seconds"), ("build passages/s", "passages_per_s"),
            ("build peak RSS MB", "peak_rss_mb"), ("cold start s", "cold_start_s"),
            ("retrieve p50 ms", "retrieve_p50_ms"), ("retrieve p95 ms", "retrieve_p95_ms"),
            ("answer p50 ms", "answer_p50_ms"), ("answer p95 ms", "answer_p95_ms"), ("index disk MB", "index_disk_mb")]
    lines = [f"corpus {result['corpus']} · {result['questions']} questions · top-k {result['k']}",
             f"{'':22}{'qa':>12}{'llama-index':>14}"]
    for label, key in rows:
        lines.append(f"{label:22}{_fmt(ours.get(key, result.get(key))):>12}{_fmt(stock.get(key)):>14}")
    for key in ("build_speedup_vs_llamaindex", "query_speedup_vs_llamaindex", "retrieve_speedup_vs_llamaindex",
                "cold_start_speedup_vs_llamaindex"):
        if key in result:
            lines.append(f"{key}: {result[key]}×")
    return "\n".join(lines)


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


def _ours_query(index_dir: str, qfile: str, k: str) -> dict:
    from qa.api import answer, search

    settings = Settings.from_env(index=index_dir, top_k=int(k))
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
    return {**_percentiles("answer", answer_ms), **_percentiles("retrieve", retrieve_ms), "peak_rss_mb": _peak_rss_mb()}


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


_PHASES = {"ours-build": _ours_build, "ours-query": _ours_query, "stock-build": _stock_build,
           "stock-cold": _stock_cold, "stock-query": _stock_query}

if __name__ == "__main__":
    print(json.dumps(_PHASES[sys.argv[1]](*sys.argv[2:])))
