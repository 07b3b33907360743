"""Indexing on Ray: files loaded, chunked and embedded in parallel Ray Data tasks.

``qa index PATH --ray [ADDRESS]``: the driver walks the files and leaves out those whose
bytes are unchanged since the live generation (same fingerprint), Ray Data loads and
chunks each remaining file in a task and embeds its passages in a pool of actors (one
model per actor), and the driver streams the results into :func:`qa.index.build_index`,
which gives stable ids and writes the store in batches. Ids are given on the driver as
results arrive, so a task Ray retries after a worker failed cannot duplicate passages.

Without an address a local cluster is started (``num_cpus`` = this machine's cores, a
small object store); ``auto`` joins the cluster this machine belongs to and
``ray://HOST:10001`` a remote one. Nothing here is imported unless ``--ray`` is given.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from qa.chunk import chunk_document, passage_leads, searched_text
from qa.index import Prepared
from qa.index.store import reads_lead
from qa.load import LoadError, Skipped, corpus_files, file_fingerprint, load_path
from qa.settings import Settings
from qa.types import Document, Page

log = logging.getLogger("qa")

Progress = Callable[[str, int, int], None]
LOCAL_OBJECT_STORE = 256 * 2**20  # bytes: texts and vectors of one batch of files, not a corpus
EMBED_BATCH = 64  # passages per actor call
TASK_RETRIES = 3


def start_ray(address: str | None) -> None:
    """Join the cluster at ``address`` or start a local one (idempotent)."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ValueError("--ray needs the scale-out extra: pip install -e \".[scale]\"") from exc

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours is drawn from the rows as they arrive
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, object_store_memory=LOCAL_OBJECT_STORE, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)


def load_and_chunk(batch: dict, chunk_chars: int, chunk_overlap: int) -> dict:
    """Ray task: read each file of ``batch`` and chunk its documents (rows: one per document or refusal)."""
    if os.environ.get("QA_RAY_FAIL_ONCE"):  # tests: make the first attempt of a task fail, once per marker file
        marker = Path(os.environ["QA_RAY_FAIL_ONCE"])
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
            raise RuntimeError("injected worker failure (QA_RAY_FAIL_ONCE)")
        except FileExistsError:
            pass
    out: dict[str, list] = {k: [] for k in ("doc_id", "text", "pages", "title", "fingerprint", "sentences",
                                            "spans", "skipped")}
    for path, doc_id in zip(batch["path"], batch["doc_id"]):
        try:
            items = load_path(Path(path), str(doc_id))
        except LoadError as exc:
            items = [Skipped(str(path), str(exc))]
        for item in items:
            if isinstance(item, Skipped):  # a row of the same types, its reason in "skipped"
                for key, empty in (("doc_id", str(doc_id)), ("text", ""), ("pages", []), ("title", ""),
                                   ("fingerprint", ""), ("sentences", []), ("spans", []),
                                   ("skipped", f"{item.path}\t{item.reason}")):
                    out[key].append(empty)
                continue
            sentences, spans = chunk_document(item, chunk_chars, chunk_overlap)
            out["doc_id"].append(item.doc_id)
            out["text"].append(item.text)
            out["pages"].append([[p.number, p.start, p.end] for p in item.pages])
            out["title"].append(item.title)
            out["fingerprint"].append(item.fingerprint)
            out["sentences"].append([[s.start, s.end, -1 if s.page is None else s.page] for s in sentences])
            out["spans"].append([[p.start, p.end, -1 if p.page is None else p.page, p.first, p.last] for p in spans])
            out["skipped"].append("")
    return out


class EmbedPassages:
    """Ray actor: the bundled model loaded once, embedding the passages of each document row."""

    def __init__(self, model: str, batch_size: int, lead: int = 0, precision: str = "fp32",
                 model_cache: str = "") -> None:
        from qa.embed import get_query_encoder, passage_encoder

        # the ONNX export when the cache has it: no PyTorch in the actor
        self.embedder = passage_encoder(get_query_encoder(model, Path(model_cache), batch_size),
                                        Path(model_cache), precision)
        self.batch_size = batch_size
        self.lead = lead

    def __call__(self, batch: dict) -> dict:
        texts, owners = [], []
        for i, (text, title, pages, spans) in enumerate(zip(batch["text"], batch["title"], batch["pages"],
                                                             batch["spans"])):
            text = str(text)
            doc = Document("", text, tuple(Page(*map(int, p)) for p in pages), str(title or ""))
            numbers = [None if int(page) < 0 else int(page) for _, _, page, *_ in spans]
            leads = passage_leads(doc, numbers, self.lead) if self.lead else [""] * len(spans)  # as build_index
            for (start, end, *_), lead in zip(spans, leads):
                texts.append(searched_text(lead, text[int(start):int(end)]) if lead else text[int(start):int(end)])
                owners.append(i)
        vectors = self.embedder.encode(texts, batch_size=self.batch_size) if texts else np.zeros((0, 1), np.float32)
        per_row: list[list[bytes]] = [[] for _ in batch["text"]]
        for owner, vec in zip(owners, vectors):
            per_row[owner].append(np.asarray(vec, dtype=np.float32).tobytes())
        batch["vectors"] = per_row
        return batch


def prepare_on_ray(paths: Sequence[str | os.PathLike], settings: Settings, known: dict[str, str],
                   address: str | None = None, progress: Progress | None = None
                   ) -> tuple[list[Document], dict[str, Prepared], list[Skipped], set[str]]:
    """Load, chunk and embed on Ray the files under ``paths`` whose bytes changed.

    ``known`` maps each indexed document id to its fingerprint. Returns the documents read
    on Ray, their chunks and vectors, the files skipped, and the ids of files left unread
    because unchanged (their documents are carried over from the index).
    """
    skipped: list[Skipped] = []
    todo: list[dict] = []
    unchanged: set[str] = set()
    # a file's documents: its own id, and "id/attachment" for what it carries
    by_file: dict[str, list[str]] = {}
    for doc_id in known:
        by_file.setdefault(doc_id, []).append(doc_id)
        at = doc_id.find("/")
        while at > 0:
            by_file.setdefault(doc_id[:at], []).append(doc_id)
            at = doc_id.find("/", at + 1)
    claimed: set[str] = set()
    for file, doc_id, refusal in corpus_files(list(paths), follow_symlinks=settings.follow_symlinks):
        if refusal:
            skipped.append(Skipped(str(file), refusal))
            continue
        if doc_id in claimed:  # as load_corpus: the first root holding a relative path wins
            skipped.append(Skipped(str(file), f"duplicate document id {doc_id!r}"))
            continue
        claimed.add(doc_id)
        try:
            fp = file_fingerprint(file)
        except OSError as exc:
            skipped.append(Skipped(str(file), f"unreadable: {exc.strerror or exc}"))
            continue
        if known.get(doc_id) == fp:  # unchanged bytes: the document and its attachments are kept
            unchanged.update(by_file.get(doc_id, [doc_id]))
            continue
        todo.append({"path": str(file), "doc_id": doc_id})
    documents: list[Document] = []
    prepared: dict[str, Prepared] = {}
    if not todo:
        return documents, prepared, skipped, unchanged

    import ray

    start_ray(address)
    started = time.perf_counter()
    # one CPU stays free for the loading tasks: actors holding every CPU starve them (a deadlock)
    actors = max(1, min(len(todo), int(ray.available_resources().get("CPU", 1)) - 1))
    ds = ray.data.from_items(todo, override_num_blocks=min(len(todo), 64 * actors))
    ds = ds.map_batches(load_and_chunk, batch_size=1, fn_kwargs={"chunk_chars": settings.chunk_chars,
                                                                "chunk_overlap": settings.chunk_overlap},
                        num_cpus=1, max_retries=TASK_RETRIES, retry_exceptions=True)
    ds = ds.map_batches(EmbedPassages, batch_size=4, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1,
                        fn_constructor_kwargs={"model": settings.model, "batch_size": settings.batch_size,
                                               "lead": reads_lead(settings.index_params()),
                                               "precision": settings.passage_precision,
                                               "model_cache": str(settings.model_cache)})
    done = 0
    seen: set[str] = set(unchanged)
    rows = iter(ds.iter_rows())
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except Exception as exc:  # a task that failed past its retries, a lost node, an actor out of memory
            raise RuntimeError(f"indexing on Ray failed: {type(exc).__name__}: {str(exc).splitlines()[0][:500]}") from exc
        done += 1
        if row["skipped"]:
            path, reason = str(row["skipped"]).split("\t", 1)
            skipped.append(Skipped(path, reason))
        elif row["doc_id"] in seen:
            skipped.append(Skipped(str(row["doc_id"]), f"duplicate document id {row['doc_id']!r}"))
        else:
            seen.add(row["doc_id"])
            doc = Document(row["doc_id"], row["text"], tuple(Page(*map(int, p)) for p in row["pages"]),
                           row["title"], row["fingerprint"])
            vectors = (np.stack([np.frombuffer(v, dtype=np.float32) for v in row["vectors"]])
                       if row["vectors"] else np.zeros((0, 0), np.float32))
            documents.append(doc)
            prepared[doc.doc_id] = Prepared.from_rows(doc.doc_id, row["sentences"], row["spans"], vectors)
        if progress:
            progress("loading, chunking and embedding on Ray (documents)", done, max(done, len(todo)))
    log.info("Ray prepared %d documents in %.1fs on %d actors", len(documents), time.perf_counter() - started, actors)
    return documents, prepared, skipped, unchanged
