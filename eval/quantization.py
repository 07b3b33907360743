"""Would an int8-quantized MiniLM keep retrieval quality? Measured on a BEIR set (SciFact).

    python eval/quantization.py ../shared/data/scifact

Uses the cached index that `qa eval DIR` builds (same passages, same BM25), re-embeds
every passage and query with PyTorch dynamic int8 quantization of the bundled model's
Linear layers, and reports nDCG@10 for dense and hybrid retrieval with both models,
plus embedding throughput of each on the same passages. The issue's rule: adopt int8
only if nDCG@10 stays within 0.01.
"""
from __future__ import annotations

import copy
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from qa.api import get_engine
from qa.embed import get_embedder
from qa.evaluation.beir import qrels_file as _qrels_file
from qa.evaluation.corpora import cache_dir as _cache_dir
from qa.evaluation.metrics import ndcg, read_qrels
from qa.index import terms
from qa.retrieve import reciprocal_rank_fusion
from qa.settings import Settings


def main(path: Path) -> dict:
    import torch

    settings = Settings.from_env()
    engine = get_engine(_cache_dir(path, settings), settings)
    index, embedder = engine.index, get_embedder(settings.model)
    qrels = read_qrels(_qrels_file(path))
    queries = {q["_id"]: q["text"] for q in map(json.loads, open(path / "queries.jsonl", encoding="utf-8"))
               if q["_id"] in qrels}
    ids = sorted(queries)
    store = index.store
    texts = list(store.passage_texts(store.ids))
    fp32_model = embedder._model
    int8_model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32_model), {torch.nn.Linear}, dtype=torch.qint8)
    out: dict = {"passages": len(texts), "queries": len(ids)}
    sample = texts[:2000]
    for name, model in (("fp32", fp32_model), ("int8", int8_model)):
        t0 = time.perf_counter()
        model.encode(sample, batch_size=64, normalize_embeddings=True)
        out[f"{name}_passages_per_s"] = round(len(sample) / (time.perf_counter() - t0), 1)
    import faiss

    for name, model in (("fp32", fp32_model), ("int8", int8_model)):
        if name == "fp32":
            vectors = store.passage_vectors(store.ids)
        else:
            vectors = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
        qv = model.encode([queries[i] for i in ids], batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        scores, rows = flat.search(np.ascontiguousarray(qv, dtype=np.float32), 1000)
        dense_ndcg, hybrid_ndcg = [], []
        for qid, row_ids, row_scores in zip(ids, rows, scores):
            dense = [(int(store.ids[r]), float(s)) for r, s in zip(row_ids, row_scores) if r >= 0]
            bm25 = engine.retriever.keyword(terms(queries[qid]), 1000)
            for ranking, bucket in ((dense, dense_ndcg), (reciprocal_rank_fusion([dense, bm25], settings.rrf_k), hybrid_ndcg)):
                docs: list[str] = []
                for pid, _ in ranking:
                    d = store.passage(pid).doc_id
                    if d not in docs:
                        docs.append(d)
                bucket.append(ndcg(docs, qrels[qid], 10))
        out[f"{name}_dense_ndcg@10"] = round(statistics.fmean(dense_ndcg), 4)
        out[f"{name}_hybrid_ndcg@10"] = round(statistics.fmean(hybrid_ndcg), 4)
    out["adopt_int8"] = abs(out["int8_hybrid_ndcg@10"] - out["fp32_hybrid_ndcg@10"]) <= 0.01 and \
        abs(out["int8_dense_ndcg@10"] - out["fp32_dense_ndcg@10"]) <= 0.01
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
