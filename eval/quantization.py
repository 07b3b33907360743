"""Which passage encoder: float32, or an int8 form of the bundled model? Measured on a BEIR set (SciFact).

    python eval/quantization.py ../shared/data/scifact            # speed, fidelity and nDCG@10
    python eval/quantization.py ../shared/data/scifact --no-ndcg  # speed and fidelity only (a minute)

Uses the cached index that `qa eval DIR` builds (same passages as searched, same BM25). Each
encoder embeds the same 1,000 passages (batch 16) for its speed and its mean cosine to the
float32 model; then (unless --no-ndcg) re-embeds every passage and reports dense and hybrid
nDCG@10 with queries always embedded in float32, as answering does. Encoders: PyTorch
float32; ONNX Runtime int8 (the default passage encoder, `qa.embed.passage_encoder`); and
PyTorch's deprecated `torch.ao` dynamic int8 with per-channel weights, for comparison. The
indexing issue's rule: int8 only if nDCG@10 stays within 0.01.
"""
from __future__ import annotations

import copy
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from qa.api import get_engine
from qa.embed import get_embedder, passage_encoder
from qa.evaluation.beir import qrels_file as _qrels_file
from qa.evaluation.corpora import cache_dir as _cache_dir
from qa.evaluation.metrics import ndcg, read_qrels
from qa.index import terms
from qa.retrieve import reciprocal_rank_fusion
from qa.settings import Settings


def encoders(settings: Settings) -> dict:
    """name -> callable(texts) giving unit vectors."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    embedder = get_embedder(settings.model)
    int8 = passage_encoder(embedder, settings.model_cache, "int8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao = quantize_dynamic(copy.deepcopy(embedder._model), {torch.nn.Linear: per_channel_dynamic_qconfig},
                              dtype=torch.qint8)
    return {
        "torch_fp32": lambda t: embedder.encode(t, batch_size=16),
        "onnxruntime_int8": lambda t: int8.encode(t, batch_size=16),
        "torch_ao_int8": lambda t: ao.encode(list(t), batch_size=16, normalize_embeddings=True),
    }


def main(path: Path, with_ndcg: bool = True) -> dict:
    settings = Settings.from_env()
    engine = get_engine(_cache_dir(path, settings), settings)
    store = engine.index.store
    texts = list(store.searched_texts(store.ids))
    sample = texts[:1000]
    out: dict = {"passages": len(texts)}
    runs = encoders(settings)
    reference = runs["torch_fp32"](sample)
    for name, encode in runs.items():
        encode(sample[:32])
        t0 = time.perf_counter()
        vectors = encode(sample)
        out[f"{name}_passages_per_s"] = round(len(sample) / (time.perf_counter() - t0), 1)
        out[f"{name}_mean_cosine_to_fp32"] = round(float(np.mean(np.sum(vectors * reference, axis=1))), 4)
    if not with_ndcg:
        return out
    import faiss

    qrels = read_qrels(_qrels_file(path))
    queries = {q["_id"]: q["text"] for q in map(json.loads, open(path / "queries.jsonl", encoding="utf-8"))
               if q["_id"] in qrels}
    ids = sorted(queries)
    query_vectors = runs["torch_fp32"]([queries[i] for i in ids])
    for name, encode in runs.items():
        flat = faiss.IndexFlatIP(query_vectors.shape[1])
        flat.add(np.ascontiguousarray(encode(texts), dtype=np.float32))
        scores, rows = flat.search(np.ascontiguousarray(query_vectors, dtype=np.float32), 1000)
        dense_ndcg, hybrid_ndcg = [], []
        for qid, row_ids, row_scores in zip(ids, rows, scores):
            dense = [(int(store.ids[r]), float(s)) for r, s in zip(row_ids, row_scores) if r >= 0]
            bm25 = engine.retriever.keyword(terms(queries[qid]), 1000)
            for ranking, bucket in ((dense, dense_ndcg), (reciprocal_rank_fusion([dense, bm25], settings.rrf_k),
                                                          hybrid_ndcg)):
                docs: list[str] = []
                for pid, _ in ranking:
                    d = store.passage(pid).doc_id
                    if d not in docs:
                        docs.append(d)
                bucket.append(ndcg(docs, qrels[qid], 10))
        out[f"{name}_dense_ndcg@10"] = round(statistics.fmean(dense_ndcg), 4)
        out[f"{name}_hybrid_ndcg@10"] = round(statistics.fmean(hybrid_ndcg), 4)
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), with_ndcg="--no-ndcg" not in sys.argv[2:])))
