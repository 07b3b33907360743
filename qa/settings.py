"""One frozen settings object, built once at the entry point and passed down.

This is the only module that reads the environment (``QA_*`` variables); CLI flags
are applied on top with :func:`dataclasses.replace`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Measured: MiniLM on 2 cores embeds 600-character passages fastest in batches of 8-16.
DEFAULT_BATCH = 16


def _default_root() -> Path:
    """The repository root for an editable install, else the working directory."""
    return PROJECT_ROOT if (PROJECT_ROOT / "pyproject.toml").exists() else Path.cwd()


@dataclass(frozen=True)
class Settings:
    """Everything that shapes indexing and answering."""

    corpus: Path = _default_root() / "seeds"
    index: Path = _default_root() / "indexes" / "default"
    model: str = DEFAULT_MODEL
    # Chunking: passages are runs of whole sentences of at most `chunk_chars`
    # characters, consecutive passages sharing `chunk_overlap` sentences.
    chunk_chars: int = 600
    chunk_overlap: int = 1
    batch_size: int = DEFAULT_BATCH
    top_k: int = 5
    rrf_k: int = 60
    candidates: int = 50
    # Extractive answering; the threshold is calibrated on eval/seeds.jsonl
    # (see eval/README.md), never per question.
    abstain_below: float = 0.55
    max_sentences: int = 4
    max_question_chars: int = 2000
    llm: str = "none"
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_timeout: float = 60.0
    llm_max_tokens: int = 200
    # Generative answers: a draft sentence is kept only when its best source sentence
    # is at least this similar (bundled embedder, cosine) and holds its facts.
    support_min: float = 0.55
    # A draft sentence whose source says it in other words (no shared predicate) is kept,
    # flagged as uncertain in the notice, only when at least this similar; below, removed.
    # Chosen on `qa eval --verifier all` (eval/README.md, "Verifier").
    paraphrase_min: float = 0.75
    auth: str | None = None
    upload_max_bytes: int = 20 * 1024 * 1024

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> "Settings":
        """Build settings from ``QA_*`` variables, then explicit overrides (CLI flags)."""
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = env.get("QA_" + field.name.upper())
            if raw is None:
                continue
            values[field.name] = _parse(field.type, raw, field.name)
        if "llm_api_key" not in values and env.get("OPENAI_API_KEY"):
            values["llm_api_key"] = env["OPENAI_API_KEY"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("corpus", "index"):
            if key in values:
                values[key] = Path(values[key]).expanduser()  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]

    def index_params(self) -> dict[str, object]:
        """What shapes an index on disk: a change to any of these needs a rebuild."""
        return {
            "model": self.model,
            "chunk_chars": self.chunk_chars,
            "chunk_overlap": self.chunk_overlap,
            "segmenter": "pysbd+rules/1",
        }

    def fingerprint(self) -> str:
        """A short hash of :meth:`index_params`."""
        blob = json.dumps(self.index_params(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _parse(kind: object, raw: str, name: str) -> object:
    kind = str(kind)
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("bool"):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if "Path" in kind:
            return Path(raw).expanduser()
    except ValueError as exc:
        raise ValueError(f"QA_{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw
