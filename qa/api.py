"""The public entry points; the only module that wires the stages together."""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from qa.cite import verify
from qa.extractive import answer_extractive, not_found
from qa.generate import LLMError, clean_text, get_generator, parse_backend, prompt_messages
from qa.embed import Embedder, QueryEncoder, get_query_encoder, onnx_cache
from qa.index import (BuildReport, Index, IndexNotFound, IndexProblem, StoreUnavailable, exclude_documents,
                      excluded_ids, load_index, read_manifest, update_index)
from qa.load import Skipped, load_corpus
from qa.retrieve import Query, Retriever, as_llama_retriever, resolve_query
from qa.settings import Settings
from qa.text import is_instruction
from qa.types import Answer

log = logging.getLogger("qa")


@dataclass
class Engine:
    """A loaded index with a retriever for one set of retrieval settings."""

    settings: Settings
    index: Index
    embedder: Embedder | QueryEncoder
    retriever: Retriever
    generation: str


@dataclass
class _Loaded:
    index: Index
    embedder: Embedder | QueryEncoder
    generation: str


# Loaded indexes are shared by every settings object that reads them the same way;
# engines (cheap: a retriever) are keyed by everything that shapes retrieval too.
_loaded: dict[tuple[str, str], _Loaded] = {}
_engines: dict[tuple, Engine] = {}
_engines_lock = threading.Lock()


def answer(
    question: str,
    history: list[dict] | None = None,
    *,
    index: str | os.PathLike | None = None,
    settings: Settings | None = None,
    doc_ids: Sequence[str] | None = None,
    top_k: int | None = None,
) -> Answer:
    """Answer ``question`` from the reports with ``[n]``-marked, verbatim citations.

    ``history`` is the chat so far in messages format. With no ``index`` the default
    index of the seed corpus is used, built or refreshed on first use. ``doc_ids``
    restricts the answer to those documents. With ``settings.llm`` set, an LLM drafts
    the answer and every sentence of the draft is verified before it is kept.
    """
    result = None
    for result in answer_stream(question, history, index=index, settings=settings, doc_ids=doc_ids, top_k=top_k):
        pass
    assert isinstance(result, Answer)
    return result


def answer_stream(
    question: str,
    history: list[dict] | None = None,
    *,
    index: str | os.PathLike | None = None,
    settings: Settings | None = None,
    doc_ids: Sequence[str] | None = None,
    top_k: int | None = None,
) -> Iterator[str | Answer]:
    """Like :func:`answer`, but yields the unverified draft as it grows, then the final Answer.

    One path for every mode: clean the question, read the history once, retrieve once,
    then answer extractively or draft with the LLM and verify; a failed LLM answer falls
    back to the extractive answer over the same query and passages. The draft strings
    are for display while the model writes; only the final :class:`Answer` (always the
    last item) carries verified citations.
    """
    settings = settings or Settings.from_env()
    question = clean_question(question, settings.max_question_chars)
    history = check_history(history)
    use_llm = settings.llm.strip().lower() not in {"", "none"}
    if use_llm:
        parse_backend(settings.llm)  # a misspelt backend is a usage error, not a fallback
    engine = get_engine(index, settings)
    generator, why = None, ""
    if use_llm:
        try:
            generator = get_generator(settings)
        except LLMError as exc:
            why = str(exc)
    query = resolve_query(question, history)
    if generator is not None and query.context:
        try:
            standalone = generator.condense(question, history or [])
            if 3 <= len(standalone) <= 4 * len(question) + 200:
                query = Query(standalone, query.context, query.referents)
        except LLMError as exc:
            log.warning("could not condense the follow-up, using the history instead: %s", exc)
    vector, bare = engine.retriever.embed_parts(query)
    k = top_k or settings.top_k
    # Passages that are nothing but instructions to a model are never shown or quoted.
    found = retrieve(engine, query, k + 3, doc_ids, vector)
    passages = [p for p in found if has_content(p.text)][:k]
    if not passages:
        yield not_found(question, query=query.text, why="no indexed passage matches")
        return
    said = last_answer(history) if query.context else ""

    def extractive(reason: str = "") -> Answer:
        result = answer_extractive(question, query, vector, passages, engine.index, settings, said, bare)
        if not reason:
            return result
        log.warning("LLM answer not used: %s", reason)
        return dataclasses.replace(result, mode="extractive-fallback",
                                   notice=f"{reason}; showing the extractive answer instead"
                                   + (f" ({result.notice})" if result.notice else ""))

    if generator is None:
        yield extractive(why)
        return
    draft = ""
    try:
        for delta in generator.stream(prompt_messages(question, passages)):
            draft += delta
            yield draft
    except LLMError as exc:
        yield extractive(str(exc))
        return
    verified, _ = verify(question, draft, passages, engine.index, engine.embedder, settings,
                         query=query.text, mode=f"llm:{settings.llm}")
    yield verified if verified is not None else extractive(
        "no sentence of the model's answer is supported by the reports")


def has_content(text: str) -> bool:
    """Whether a passage holds anything but instructions to a model (the sentence split that
    tells is needed only when some instruction-like text is there at all)."""
    return bool(text.strip()) and (not is_instruction(text) or bool(clean_text(text)))


def last_answer(history: Sequence[dict] | None) -> str:
    """The previous assistant message (a follow-up asks for something it did not say)."""
    return next((str(m.get("content")) for m in reversed(history or []) if m.get("role") == "assistant"), "")


def clean_question(question: str, limit: int) -> str:
    """Reject an empty question; cut a huge one at a word boundary so it can still be answered."""
    if not isinstance(question, str):
        raise ValueError(f"the question must be text, not {type(question).__name__}")
    question = " ".join(question.split())
    if not question:
        raise ValueError("the question is empty: ask something about the reports")
    if len(question) > limit:
        cut = question.rfind(" ", 0, limit)
        question = question[: cut if cut > limit // 2 else limit]
        log.warning("question truncated to %d characters", len(question))
    return question


def retrieve(engine: Engine, query: Query, k: int, doc_ids: Sequence[str] | None, vector) -> list:
    """The passages an answer is made from (the eval measures retrieval through this too)."""
    return engine.retriever.search(query, k, doc_ids=doc_ids, vector=vector)


def check_history(history: object) -> list[dict]:
    """The chat history as a list of messages, or a ValueError saying what is wrong with it."""
    if history is None:
        return []
    if not isinstance(history, (list, tuple)):
        raise ValueError(f"history must be a list of {{'role': ..., 'content': ...}} messages, "
                         f"not {type(history).__name__}")
    for i, m in enumerate(history):
        if not isinstance(m, dict):
            raise ValueError(f"history[{i}] must be a {{'role': ..., 'content': ...}} message, "
                             f"not {type(m).__name__}")
        if m.get("role") not in ("user", "assistant", "system"):
            raise ValueError(f"history[{i}] has role {m.get('role')!r}: use 'user', 'assistant' or 'system'")
        if not isinstance(m.get("content"), (str, list, type(None))):
            raise ValueError(f"history[{i}] content must be text, not {type(m.get('content')).__name__}")
    return list(history)


def get_engine(index: str | os.PathLike | None, settings: Settings) -> Engine:
    """The cached engine for an index and these settings, reloaded when the index on disk changed."""
    path = Path(index) if index is not None else settings.index
    # how on-demand sentence vectors are pooled lives in the loaded store (and its cache)
    loaded_key = (str(path.resolve()), settings.fingerprint(), settings.sentence_pooling, settings.sentence_context)
    engine_key = (*loaded_key, settings.rrf_k, settings.keep_best, settings.candidates, settings.top_k,
                  settings.sentence_weight)
    with _engines_lock:
        live = _generation(path)
        engine = _engines.get(engine_key)
        if engine is not None and engine.generation == live:
            return engine
        loaded = _loaded.get(loaded_key)
        if loaded is None or loaded.generation != live:
            if index is None and loaded is None:
                ensure_default_index(settings)
                live = _generation(path)
            if live is None:
                raise IndexNotFound(f"no index at {path}: build it with `qa index CORPUS --index {path}`")
            embedder = get_query_encoder(settings.model, settings.model_cache, settings.batch_size)
            if isinstance(embedder, Embedder):  # no shared ONNX export of this model yet: write it for next time
                _export_query_encoder(embedder, path, settings)
            loaded = _loaded[loaded_key] = _Loaded(load_index(path, settings), embedder, live)
        engine = Engine(settings, loaded.index, loaded.embedder,
                        Retriever(loaded.index, loaded.embedder, settings), loaded.generation)
        _engines[engine_key] = engine
        return engine


def ensure_default_index(settings: Settings) -> BuildReport | None:
    """Build the default index of ``settings.corpus``, or refresh it if the corpus changed.

    The default index is a cache of the corpus: when it is corrupt or was built under
    other settings it is rebuilt rather than refused.
    """
    documents, _ = load_corpus([settings.corpus], follow_symlinks=settings.follow_symlinks)
    left_out = excluded_ids(settings.index)
    documents = [d for d in documents if d.doc_id not in left_out]
    try:
        _, manifest = read_manifest(settings.index)
        if (manifest.get("documents") == {d.doc_id: d.fingerprint for d in documents}
                and manifest.get("params") == settings.index_params()):
            return None
    except IndexProblem:
        pass
    embedder = _build_encoder(settings)
    sources = [str(settings.corpus)]
    try:
        report = update_index(settings.index, documents, settings, embedder, sources=sources)[1]
    except StoreUnavailable:
        raise  # the store is down, not the index broken: a rebuild would re-embed everything
    except IndexProblem as exc:
        log.warning("rebuilding the default index: %s", exc)
        report = update_index(settings.index, documents, settings, embedder, rebuild=True, sources=sources)[1]
    _export_query_encoder(embedder, settings.index, settings)
    return report


def index_paths(
    paths: Sequence[str | os.PathLike],
    *,
    index: str | os.PathLike | None = None,
    settings: Settings | None = None,
    rebuild: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    ray: str | None = None,
) -> tuple[BuildReport, list[Skipped]]:
    """Index (or incrementally update) the reports under ``paths``.

    ``ray``: load, chunk and embed on Ray (``""`` a local cluster, ``auto`` or ``ray://HOST:PORT``
    a running one) instead of in this process; unchanged files are not even read.
    """
    settings = settings or Settings.from_env()
    path = Path(index) if index is not None else settings.index
    prepared = None
    if ray is not None:
        documents, prepared, skipped = _prepare_on_ray(paths, path, settings, rebuild, ray or None, progress)
    else:
        pages = None
        if progress is not None:
            pages = lambda file, page, total: progress(f"reading {Path(file).name}, page {page} of {total}",
                                                       page, total)
        documents, skipped = load_corpus(list(paths), follow_symlinks=settings.follow_symlinks, progress=pages)
    if not documents:
        raise ValueError("no readable documents under " + ", ".join(str(p) for p in paths))
    embedder = _build_encoder(settings)
    _, report = update_index(path, documents, settings, embedder, rebuild=rebuild,
                             sources=[str(Path(p).resolve()) for p in paths], progress=progress,
                             prepared=prepared)
    _export_query_encoder(embedder, path, settings)
    return report, skipped


def _prepare_on_ray(paths: Sequence[str | os.PathLike], path: Path, settings: Settings, rebuild: bool,
                    address: str | None, progress: Callable[[str, int, int], None] | None):
    """Documents for :func:`update_index`: changed files read on Ray, unchanged ones from the live index."""
    from qa.index.parallel import prepare_on_ray

    if settings.sentence_vectors != "ondemand":
        raise ValueError("--ray embeds passages only: use QA_SENTENCE_VECTORS=ondemand (the default)")
    previous = None
    if not rebuild:
        try:
            previous = load_index(path, settings, check_store=False)
        except IndexNotFound:
            previous = None
    known = dict(zip(previous.doc_ids, previous.fingerprints)) if previous is not None else {}
    fresh, prepared, skipped, unchanged = prepare_on_ray(list(paths), settings, known, address, progress)
    kept = [previous.store.document(d) for d in sorted(unchanged)] if previous is not None else []
    documents = sorted(kept + fresh, key=lambda d: d.doc_id)
    return documents, prepared, skipped


def open_index(index: str | os.PathLike | None = None, settings: Settings | None = None) -> Index:
    """The loaded index (for listing documents and reading their text)."""
    settings = settings or Settings.from_env()
    return get_engine(index, settings).index


def as_retriever(index: str | os.PathLike | None = None, *, k: int | None = None, settings: Settings | None = None):
    """The index as a llama-index ``BaseRetriever`` yielding ``NodeWithScore`` with offsets."""
    settings = settings or Settings.from_env()
    return as_llama_retriever(get_engine(index, settings).retriever, k)


def search(question: str, *, index: str | os.PathLike | None = None, settings: Settings | None = None,
           k: int | None = None, mode: str = "hybrid", doc_ids: Sequence[str] | None = None):
    """Retrieved passages only (no answer), for evaluation and inspection."""
    settings = settings or Settings.from_env()
    engine = get_engine(index, settings)
    return engine.retriever.search(Query(question), k or settings.top_k, mode=mode, doc_ids=doc_ids)


def _build_encoder(settings: Settings) -> Embedder | QueryEncoder:
    """The ONNX encoder once its export is in the model cache: a build then never loads PyTorch
    (about 400 MB less at its peak); the first build uses PyTorch and writes the export."""
    return get_query_encoder(settings.model, settings.model_cache, settings.batch_size)


def _export_query_encoder(embedder: Embedder | QueryEncoder, index: Path, settings: Settings) -> None:
    """Leave the ONNX query encoder in the shared model cache, so answering starts without PyTorch."""
    if not isinstance(embedder, Embedder):  # the export is what it runs
        return
    try:
        embedder.export_onnx(onnx_cache(settings.model, settings.model_cache))
    except Exception as exc:  # answering still works, only with a slower start
        log.warning("could not export the ONNX query encoder: %s", exc)


def _generation(path: Path) -> str | None:
    try:
        return (path / "CURRENT").read_text().strip()
    except OSError:
        return None


def tqdm_progress() -> Callable[[str, int, int], None]:
    """A progress callback drawing one tqdm bar per indexing stage on stderr."""
    import sys

    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="doc" if stage == "chunking" else "char" if stage.endswith("(characters)") else "text",
                                     unit_scale=True,
                                     file=sys.stderr)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def verify_text(text: str, *, index: str | os.PathLike | None = None, settings: Settings | None = None):
    """Check every sentence of ``text`` against the reports: supported, unsupported or contradicted.

    Why: the check the LLM path runs on its drafts, offered for any text (a summary, a
    memo, another model's answer). Each sentence is checked against the passages
    retrieved for it; the result lists a :class:`qa.cite.SentenceCheck` per sentence with
    the citing sentence and its offsets. With no ``index`` the default index of the seeds.
    """
    from qa.cite import check_text

    settings = settings or Settings.from_env()
    engine = get_engine(index, settings)
    k = settings.top_k
    return check_text(text, lambda sentence: engine.retriever.search(Query(sentence), k), engine.index,
                      engine.embedder, settings)


def document_titles(index: str | os.PathLike | None = None, settings: Settings | None = None) -> list[tuple[str, str]]:
    """(doc_id, title) of every indexed document, read from the index as it is now (for a UI's list).

    The title is the one the loader found, else the document's first Markdown heading, else "".
    """
    docs = get_engine(index, settings or Settings.from_env()).index.documents
    # A saved index keeps ids and titles in memory: no document text is decoded for them.
    titles = getattr(docs, "titles", None) or [d.title for d in docs]
    out = []
    for i, doc_id in enumerate(getattr(docs, "ids", None) or [d.doc_id for d in docs]):
        title = titles[i] or ""
        if not title:
            head = docs[i].text[:500].lstrip()
            if head.startswith("#"):
                title = head.splitlines()[0].lstrip("#").strip()
        out.append((doc_id, title))
    return out


@dataclass(frozen=True)
class DocumentInfo:
    """An indexed report as a document manager lists it; ``file`` is where it is read from now (None: gone)."""

    doc_id: str
    title: str
    pages: int
    text_bytes: int
    indexed: str
    file: Path | None


def document_list(index: str | os.PathLike | None = None, settings: Settings | None = None) -> list[DocumentInfo]:
    """Every indexed report with what an analyst asks of it: title, pages, size, when indexed, its file.

    Read from the index as it is now (no document text is decoded for a saved index).
    """
    settings = settings or Settings.from_env()
    idx = get_engine(index, settings).index
    docs = idx.documents
    pages = getattr(docs, "page_counts", None) or [len(d.pages) for d in docs]
    sizes = getattr(docs, "text_bytes", None) or [len(d.text.encode("utf-8")) for d in docs]
    when = idx.manifest.get("indexed") if isinstance(idx.manifest.get("indexed"), dict) else {}
    built = str(idx.manifest.get("built") or "")
    sources = [str(s) for s in idx.manifest.get("sources") or []]
    return [DocumentInfo(doc_id, title, pages[i], sizes[i], str(when.get(doc_id) or built), source_file(doc_id, sources))
            for i, (doc_id, title) in enumerate(document_titles(index, settings))]


def source_file(doc_id: str, sources: Sequence[str | os.PathLike]) -> Path | None:
    """The file under ``sources`` that a document id was read from (an attachment's id names its e-mail)."""
    parts = doc_id.split("/")
    for root in (Path(s) for s in sources):
        if root.is_file():
            if parts[0] == root.name:
                return root
            continue
        for n in range(len(parts), 0, -1):
            candidate = root.joinpath(*parts[:n])
            if ".." not in parts[:n] and candidate.is_file():
                return candidate
    return None


def remove_from_index(doc_ids: Sequence[str], *, index: str | os.PathLike | None = None,
                      settings: Settings | None = None, restore: bool = False) -> set[str]:
    """Leave reports out of the index from its next update on, keeping their files (``restore`` undoes it).

    Why not just drop them: the next re-index of their folder would add them back.
    Returns every id now left out; the caller re-indexes (:func:`index_paths`) to apply it.
    """
    settings = settings or Settings.from_env()
    path = Path(index) if index is not None else settings.index
    if restore:
        return exclude_documents(path, restore=doc_ids)
    return exclude_documents(path, add=doc_ids)


def excluded_documents(index: str | os.PathLike | None = None, settings: Settings | None = None) -> list[str]:
    """The reports removed from this index whose files were kept (see :func:`remove_from_index`)."""
    settings = settings or Settings.from_env()
    return sorted(excluded_ids(Path(index) if index is not None else settings.index))
