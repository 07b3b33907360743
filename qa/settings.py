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


def _default_model_cache() -> Path:
    """The user's cache folder: one ONNX export per model, shared by every index."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qa" / "models"


@dataclass(frozen=True)
class AnswerRules:
    """Weights of the extractive answer's rules (qa/extractive.py), each chosen on dev data.

    Grids and figures are in eval/README.md; none was fitted per question.
    """

    # Score = cosine(question, sentence) + lexical_weight * IDF-weighted share of question terms;
    # grid {0.25, 0.5, 0.8} on the seeds set.
    lexical_weight: float = 0.8
    # Terms brought in by the chat history count this much of a question term.
    context_term_weight: float = 0.2
    # Sentences within this share of the best score are kept as near ties (lists: more).
    keep_ratio: float = 0.95
    list_keep_ratio: float = 0.85
    # A sentence the previous answer already quoted counts this much; grid {0.7, 0.5, 0.3}.
    repeat_factor: float = 1.0
    # A follow-up's "He …" sentence whose antecedent is someone else; grid {0.1, 0.2, 0.3}.
    referent_penalty: float = 0.2
    # ... and one that names none of those the last exchange named. Grid {0.03, 0.06, 0.1} with
    # sentences embedded alone (0.1 cost seeds precision); {0.05, 0.1, 0.15} with sentences pooled
    # in passage: seeds and news dev identical, 0.1 the least that keeps "What did he ask …?" on
    # Khazali rather than on the Sistani sentence beside it (tests/test_answer.py).
    unnamed_penalty: float = 0.1
    # Support lost per question name the candidate's passage never mentions; grid {0, 0.1, 0.2}
    # on the dev splits of seeds and news (0.2: news citation precision +0.02, seeds unchanged).
    absent_name_penalty: float = 0.2
    # A list question favours sentences that enumerate names.
    list_shape_bonus: float = 0.15
    # A many-part question adds a sentence scoring at least cover_ratio of the best one
    # when it covers at least cover_gain of the question's term weight not yet covered.
    cover_ratio: float = 0.6
    cover_gain: float = 0.25
    # Support lost per name of the question the reports never mention; grid {0.12, 0.17, 0.25, 0.4}.
    unknown_name_penalty: float = 0.25
    # A question about several reports adds each other report's best sentence above this share.
    multidoc_keep_ratio: float = 0.75
    # A question about a financial statement favours that statement's table row whose label it
    # asks for ("Merchandise inventories\t5,409\t5,209" for "…total amount of inventories…"),
    # times the share of the label's terms the question uses (at least half). Grid {0, .1, .2, .3, .5,
    # .7} on FinanceBench page citation precision: 0.339 / 0.398 / 0.473 / 0.495 / 0.547 / 0.537
    # (eval/README.md, "A question about a statement reads the statement"); no other set has such rows.
    statement_row_bonus: float = 0.5


# Version of the rule that picks a passage's lead (qa.chunk.passage_leads): a new rule rebuilds indexes
# (6: the title, then the page's heading in a paginated report, with only the heading counted by BM25;
# 5: both counted by BM25 too; 4: the title alone; 1-3 tried a first sentence or a headline line,
# measured and dropped).
LEAD_RULE = 6


@dataclass(frozen=True)
class Settings:
    """Everything that shapes indexing and answering."""

    corpus: Path = _default_root() / "seeds"
    index: Path = _default_root() / "indexes" / "default"
    model_cache: Path = _default_model_cache()
    model: str = DEFAULT_MODEL
    # Chunking: passages are runs of whole sentences of at most `chunk_chars`
    # characters, consecutive passages sharing `chunk_overlap` sentences.
    chunk_chars: int = 600
    chunk_overlap: int = 1
    # Each passage is embedded and keyword-indexed with its document's title before it ("title"), so
    # a passage that never names its story is still found by a question that does; "none" searches
    # passages as written. Citations never include the title. Measured 2026-11-23 (eval/README.md,
    # "Passages read with their title"): SciFact nDCG@10 0.728 -> 0.729, BM25 alone 0.658 -> 0.681,
    # recall@100 0.944 -> 0.954; news evidence@5 dev 0.828 -> 0.821, test 0.765 -> 0.794, @10 dev
    # 0.866 -> 0.903; answers: test identical, dev within one item. Seeds have no titles: unchanged.
    # A report's first sentence as a lead when it has no title cost the seeds 0.03-0.05 answer recall.
    # Since 2026-11-23 a paginated report's passages also carry their page's heading (lead rule 5):
    # FinanceBench evidence recall@5 within the filing 0.617 -> 0.638, @3 0.511 -> 0.574, page citation
    # precision 0.288 -> 0.323; unpaginated reports (seeds, news, SciFact) are searched as before.
    passage_lead: str = "title"
    # What embeds passages at index time: "int8" (ONNX Runtime dynamic quantization, per-channel
    # weights) or "fp32". Questions and the sentences an answer scores are always embedded in float32.
    # Measured 2026-11-23 (eval/README.md, "An int8 passage encoder"): 76 against 47 passages/s; SciFact
    # nDCG@10 hybrid 0.7318 -> 0.7284, dense 0.6869 -> 0.6815; seeds identical; news dev answer recall
    # 0.627 -> 0.642, held-out test 0.632 -> 0.662; FinanceBench evidence@5 0.638 -> 0.660.
    passage_precision: str = "int8"
    batch_size: int = DEFAULT_BATCH
    top_k: int = 5
    rrf_k: int = 60
    # Hybrid search keeps each retriever's best this many passages among the top_k whatever their fused
    # rank (qa.retrieve.keep_best). Grid {0, 1, 2} on the news and seeds dev sets: 1 lifts news dev
    # evidence@5 0.821 -> 0.866, answer recall 0.619 -> 0.627, citation precision 0.642 -> 0.661,
    # abstention 0.444 -> 0.556, seeds unchanged, SciFact nDCG@10 0.7292 -> 0.7318; 2 finds more (0.873)
    # but answers worse (0.597). Held-out news test: evidence@5 0.794 -> 0.809, citation precision 0.634 -> 0.667.
    # Measured in eval/README.md, "Fusion that keeps each retriever's best".
    keep_best: int = 1
    # A question about a financial statement (named: "...using the balance sheet"; or implied by its
    # line item: "COGS") gets this many of that statement's passages (pages headed "Consolidated
    # Balance Sheets" etc. in the reports found) among its top_k, in place of the last ones (0: off).
    # Grid {0, 1, 2, 3} on FinanceBench, evidence@5 within the filing 0.681 / 0.830 / 0.851 / 0.851, over
    # all filings 0.447 / 0.596 / 0.660 / 0.617
    # (eval/README.md, "A question about a statement reads the statement"); seeds, news and SciFact
    # have no statement pages (unchanged).
    statement_pages: int = 2
    candidates: int = 50
    # Hybrid retrieval also ranks passages by their best sentence (dense, over sentence vectors),
    # fused with this RRF weight (0: off). Off until measured on SciFact: on the news dev split it
    # lifts paraphrases 0.33 -> 0.47 and evidence@5 +0.015, on the seeds it costs one multidoc item.
    sentence_weight: float = 0.0
    # Sentence vectors: "ondemand" computes the vectors of the retrieved passages' sentences when a
    # question first needs them (cached; nothing stored, no sentence pass at build: half the
    # build, a third of the disk); "separate" embeds and stores every sentence at build time (the
    # default until 2026-11-22); "derived" stores each sentence's tokens pooled out of its
    # passage's forward pass. Measured in eval/README.md "Sentence vectors".
    sentence_vectors: str = "ondemand"
    # Pooled sentence vectors carry their passage's context; this share of the passage vector
    # is taken out so sentences of one passage stay apart. Grid {0, .15, .3, .45, .6} on the
    # seeds and the news dev split (stored, derived); {.3, .45, .6} again pooled on demand: .3 best.
    sentence_context: float = 0.3
    # On demand, a sentence's vector is pooled out of one forward pass over the retrieved passage
    # that holds it ("passage", default since 2026-11-23: news dev answer recall +0.04, citation
    # precision +0.06, seeds citation precision +0.02, same latency) or embedded alone
    # ("sentence"). An answer-time choice: the index is the same.
    sentence_pooling: str = "passage"
    # Extractive answering: below this support the answer abstains; one threshold, never per
    # question. Grid {.55, .57, .6, .65, .7} on seeds + news dev with pooled vectors: abstention
    # recall is flat; .57 trades one seeds answer (-0.01) for citation precision (+0.02 seeds,
    # +0.01 news dev) and declines the report-restricted near miss (.563) that .55 answered.
    abstain_below: float = 0.57
    max_sentences: int = 4
    rules: AnswerRules = AnswerRules()
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
    # Where passages are searched: "" (local FAISS + bm25s files, the default), "milvus:PATH.db"
    # (milvus-lite in this process) or "milvus://HOST:PORT" (a Milvus server or cluster, reached
    # with the token and TLS settings below); see README "Scaling out".
    store: str = ""
    milvus_token: str = ""
    milvus_tls: bool = False
    milvus_server_pem: str = ""
    milvus_server_name: str = ""
    # A new collection's shards, and the replicas loaded for search (a cluster only; README "Scaling out").
    milvus_shards: int = 1
    milvus_replicas: int = 1
    auth: str | None = None
    upload_max_bytes: int = 20 * 1024 * 1024
    # A corpus folder's symlinks that lead outside it are refused unless this is set.
    follow_symlinks: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> "Settings":
        """Build settings from ``QA_*`` variables, then explicit overrides (CLI flags)."""
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            if field.name == "rules":
                continue
            raw = env.get("QA_" + field.name.upper())
            if raw is None:
                continue
            values[field.name] = _parse(field.type, raw, field.name)
        if "llm_api_key" not in values and env.get("OPENAI_API_KEY"):
            values["llm_api_key"] = env["OPENAI_API_KEY"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("corpus", "index", "model_cache"):
            if key in values:
                values[key] = Path(values[key]).expanduser()  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]

    def index_params(self) -> dict[str, object]:
        """What shapes an index on disk: a change to any of these needs a rebuild."""
        return {
            "model": self.model,
            "chunk_chars": self.chunk_chars,
            "chunk_overlap": self.chunk_overlap,
            "segmenter": "sentencex+rules/3",
            "sentence_vectors": self.sentence_vectors,
        } | ({"passage_lead": f"{self.passage_lead}/{LEAD_RULE}"} if self.passage_lead != "none" else {}) \
          | ({"sentence_context": self.sentence_context} if self.sentence_vectors == "derived" else {}) \
          | ({"passage_precision": self.passage_precision} if self.passage_precision != "fp32" else {}) \
          | ({"store": "milvus"} if self.store.strip() not in ("", "local", "faiss") else {})

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
