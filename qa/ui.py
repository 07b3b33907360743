"""The Gradio chat: cited answers whose sources sit under each answer, plus uploads.

Each answer carries its own Sources block with ids unique to that turn, so markers
never point at another answer's sources, and the chat is kept in the browser's
storage so a reload shows the same answers with the same citations.
"""
from __future__ import annotations

import dataclasses
import filecmp
import html
import logging
import os
import re
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple

from qa.api import answer, answer_stream, get_engine, index_paths
from qa.index import IndexProblem
from qa.load import SUPPORTED_SUFFIXES, LoadError, load_file
from qa.settings import Settings
from qa.types import Answer

log = logging.getLogger("qa")
UPLOAD_SUFFIXES = list(SUPPORTED_SUFFIXES)  # the loader table: a new format is one entry in qa.load
SOURCES_OPEN = '<div class="qa-sources">'
CSS = """
.qa-sources { margin-top: .6em; border-top: 1px solid #ddd; padding-top: .4em; font-size: .92em; }
.qa-source { margin: .4em 0; padding: .3em .5em; border-left: 3px solid #8aa4ff; scroll-margin-top: 80px; }
.qa-source:target { background: #fff7d6; }
.qa-source mark { background: #ffe066; padding: 0 .1em; }
.qa-notice { font-size: .85em; color: #8a5a00; }
a.qa-cite { text-decoration: none; font-weight: 600; }
"""


LOGIN_FAILURES, LOGIN_WINDOW = 5, 60.0  # failed logins allowed per client per window (seconds)
# Characters that Markdown (and its autolinker) would turn into links, emphasis or code:
# written as entities they show as themselves and do nothing.
_MARKDOWN_ACTIVE = {"[": "&#91;", "]": "&#93;", "(": "&#40;", ")": "&#41;", "*": "&#42;", "_": "&#95;",
                    "`": "&#96;", ":": "&#58;", "@": "&#64;", "!": "&#33;", "~": "&#126;", "#": "&#35;",
                    ".": "&#46;", "|": "&#124;", "\\": "&#92;", "$": "&#36;"}
_MARKER_SPLIT = re.compile(r"(\[\d+\])")


def inert(text: str) -> str:
    """Report text as HTML that renders as plain text: no live link, image or markup from a report."""
    return "".join(_MARKDOWN_ACTIVE.get(ch, ch) for ch in html.escape(text, quote=True)).replace("\n", " ")


def render_answer(result: Answer, turn: str) -> str:
    """Answer text with clickable markers, then its own Sources block."""
    text = "".join(f'<a class="qa-cite" href="#src-{turn}-{part[1:-1]}">{part}</a>' if _MARKER_SPLIT.fullmatch(part)
                   else inert(part) for part in _MARKER_SPLIT.split(result.text))
    if result.notice and result.mode != "extractive":
        text += f'\n\n<div class="qa-notice">⚠️ {inert(result.notice)}</div>'
    if not result.citations:
        return text
    blocks = []
    for n, c in enumerate(result.citations, start=1):
        where = inert(c.doc_id) + (f", page {c.page}" if c.page is not None else "")
        at = c.passage.find(c.quote)
        if at >= 0:
            body = (inert(c.passage[:at]) + "<mark>" + inert(c.quote) + "</mark>"
                    + inert(c.passage[at + len(c.quote):]))
        else:
            body = "<mark>" + inert(c.quote) + "</mark>"
        blocks.append(f'<div class="qa-source" id="src-{turn}-{n}"><b>[{n}] {where}</b> '
                      f'<small>chars {c.start}–{c.end}</small><br>{body}</div>')
    return f"{text}\n\n{SOURCES_OPEN}<b>Sources</b>{''.join(blocks)}</div>"


def plain_history(messages: list[dict]) -> list[dict]:
    """The chat as the engine wants it: answer text only, no markup or sources."""
    out = []
    for m in messages or []:
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(c.get("text", "") if isinstance(c, dict) else str(c) for c in content)
        text = str(content or "").split(SOURCES_OPEN, 1)[0]
        out.append({"role": m.get("role", "user"), "content": html.unescape(re.sub(r"<[^>]+>", "", text)).strip()})
    return out


class Stored(NamedTuple):
    """Where an upload was put; ``status`` is "new", "renamed" (a different file had its name) or "identical"."""

    path: Path
    status: str


def store_upload(src: Path, corpus: Path, limit: int) -> Stored:
    """Copy an uploaded file into the corpus, after checking it loads; never replace a file there.

    A different file already holding the name keeps it, and the upload gets the first
    free ``name-2.txt``, ``name-3.txt``…; a byte-identical file already there is a no-op.
    """
    name = Path(src.name).name
    if not name or name.startswith(".") or Path(name).suffix.lower() not in UPLOAD_SUFFIXES:
        raise LoadError(f"{name or 'file'}: only {', '.join(UPLOAD_SUFFIXES)} files can be added")
    if src.stat().st_size > limit:
        raise LoadError(f"{name}: larger than the {limit // 2**20} MiB upload limit")
    list(load_file(src, name))  # raises LoadError for empty, binary or broken files
    corpus.mkdir(parents=True, exist_ok=True)
    stem, suffix = Path(name).stem, Path(name).suffix
    partial = corpus / f".upload-{uuid.uuid4().hex}{suffix}"  # a dot-file: the loader skips it
    shutil.copyfile(src, partial)
    try:
        for n in range(1, 1000):
            target = corpus / (name if n == 1 else f"{stem}-{n}{suffix}")
            if target.exists():
                if filecmp.cmp(partial, target, shallow=False):
                    return Stored(target, "identical")
                continue
            try:
                _place(partial, target)
            except FileExistsError:  # taken meanwhile: try the next name
                continue
            return Stored(target, "new" if n == 1 else "renamed")
        raise LoadError(f"{name}: too many files with this name in {corpus}")
    finally:
        partial.unlink(missing_ok=True)


def _place(src: Path, target: Path) -> None:
    """Give ``src`` the name ``target`` only if that name is free (FileExistsError otherwise)."""
    try:
        os.link(src, target)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links
        with open(src, "rb") as fin, open(target, "xb") as fout:
            shutil.copyfileobj(fin, fout)


def upload_target(index: Path | None, settings: Settings) -> tuple[Path, list[str]]:
    """Where uploads go (``settings.corpus``, i.e. QA_CORPUS), and every source to re-index."""
    sources = list(get_engine(index, settings).index.manifest.get("sources") or [])
    folder = Path(settings.corpus).resolve()
    if str(folder) not in {str(Path(s).resolve()) for s in sources}:
        sources.append(str(folder))
    return folder, sources


def build_app(settings: Settings, index: Path | None = None):
    """The Gradio Blocks app over :func:`qa.answer`; ``index`` None means the default index."""
    import gradio as gr

    def documents() -> list[str]:
        try:
            return list(get_engine(index, settings).index.doc_ids)
        except (IndexProblem, OSError) as exc:
            log.warning("no documents: %s", exc)
            return []

    def respond(question, history, k, doc_filter, mode):
        history = list(history or [])
        if not (question or "").strip():
            gr.Warning("Type a question first.")
            yield history, "", history
            return
        history.append({"role": "user", "content": question})
        chosen = settings if mode != "extractive" else dataclasses.replace(settings, llm="none")
        try:
            result = None
            for result in answer_stream(question, plain_history(history[:-1]), index=index, settings=chosen,
                                        doc_ids=doc_filter or None, top_k=int(k)):
                if isinstance(result, str):
                    draft = inert(result) + "\n\n<small><i>checking citations…</i></small>"
                    yield history + [{"role": "assistant", "content": draft}], "", history
            assert isinstance(result, Answer)
            final = render_answer(result, uuid.uuid4().hex[:8])
            if chosen.llm == "none":
                words = result.text.split(" ")
                for i in range(0, len(words), 6):
                    yield (history + [{"role": "assistant", "content": inert(" ".join(words[:i + 6]))}],
                           "", history)
        except ValueError as exc:
            final = f"⚠️ {html.escape(str(exc))}"
        except Exception as exc:  # never a traceback in the chat
            log.exception("answer failed")
            final = f"⚠️ Could not answer: {html.escape(type(exc).__name__)}: {html.escape(str(exc))}"
        history.append({"role": "assistant", "content": final})
        yield history, "", history

    def add_files(files, progress=gr.Progress()):
        if not files:
            return "No file chosen.", gr.update()
        stored, rejected, notes = [], [], []
        folder, sources = upload_target(index, settings)
        for f in files:
            path = Path(getattr(f, "name", f))
            try:
                kept = store_upload(path, folder, settings.upload_max_bytes)
            except (LoadError, OSError) as exc:
                rejected.append(str(exc))
                continue
            finally:
                path.unlink(missing_ok=True)  # Gradio's temporary copy: the corpus has its own now
            if kept.status == "identical":
                notes.append(f"{path.name} is already in the corpus as {kept.path.name}")
            else:
                stored.append(kept.path.name)
            if kept.status == "renamed":
                notes.append(f"a different {path.name} already exists, so this one was saved as {kept.path.name}")
        message = ""
        if stored:
            try:
                report, _ = index_paths(sources, index=index or settings.index, settings=settings,
                                        progress=lambda stage, done, total: progress(done / max(total, 1), desc=stage))
                message = (f"Added {', '.join(stored)}: {len(report.added)} new, {len(report.changed)} changed "
                           f"document(s) indexed.")
            except Exception as exc:
                log.exception("indexing uploads failed")
                message = f"⚠️ Indexing failed: {html.escape(str(exc))}"
        if notes:
            message += (" " if message else "") + "; ".join(notes) + "."
        if rejected:
            message += (" " if message else "") + "Rejected: " + "; ".join(rejected)
        return message, gr.update(choices=documents())

    # delete_cache: Gradio's temporary upload copies older than an hour go, and all of them at shutdown.
    with gr.Blocks(title="Report QA", delete_cache=(3600, 3600)) as app:
        saved = gr.BrowserState([], storage_key="qa-chat-v1")
        gr.Markdown("## Ask the reports\nEvery claim cites the sentence it comes from; click a marker to see it.")
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", height=560, elem_id="chat")
                question = gr.Textbox(placeholder="Ask a question about the reports…", show_label=False,
                                      elem_id="question", max_length=settings.max_question_chars * 10)
                with gr.Row():
                    ask = gr.Button("Ask", variant="primary", elem_id="ask")
                    new = gr.Button("New conversation", elem_id="new-conversation")
            with gr.Column(scale=1):
                k = gr.Slider(1, 20, value=settings.top_k, step=1, label="Passages to retrieve")
                modes = ["extractive"] + ([f"LLM ({settings.llm})"] if settings.llm != "none" else [])
                mode = gr.Radio(modes, value=modes[-1], label="Answer mode", interactive=len(modes) > 1,
                                elem_id="mode")
                doc_filter = gr.CheckboxGroup(choices=documents(), label="Documents (tick to restrict)",
                                              elem_id="documents")
                upload = gr.File(label=f"Add reports ({' '.join(UPLOAD_SUFFIXES)})", file_count="multiple",
                                 file_types=UPLOAD_SUFFIXES, elem_id="upload")
                status = gr.Markdown(elem_id="upload-status")

        for trigger in (question.submit, ask.click):
            trigger(respond, [question, chatbot, k, doc_filter, mode], [chatbot, question, saved], api_name=False)
        new.click(lambda: ([], [], ""), None, [chatbot, saved, question], api_name=False)
        upload.upload(add_files, [upload], [status, doc_filter], api_name=False)
        app.load(lambda s: s or [], [saved], [chatbot], api_name=False)

        def chat(question: str) -> str:
            """Answer one question; the text keeps its [n] markers."""
            try:
                return answer(question, index=index, settings=settings).text
            except (ValueError, IndexProblem) as exc:
                return f"Error: {exc}"
            except Exception as exc:  # an API client gets the reason, not "upstream Gradio app has raised"
                log.exception("answer failed")
                return f"Error: could not answer ({type(exc).__name__}: {exc})"

        gr.api(chat, api_name="chat")
    return app


def serve(settings: Settings, index: Path | None = None, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Start the chat server (blocking); loads the model and index once, up front."""
    get_engine(index, settings)
    app = build_app(settings, index)
    auth = None
    if settings.auth:
        user, _, password = settings.auth.partition(":")
        if not user or not password:
            raise ValueError("QA_AUTH must look like user:password")
        auth = (user, password)
    app.queue(default_concurrency_limit=4, max_size=128)
    from starlette.middleware import Middleware

    def stop(signum, frame) -> None:
        raise KeyboardInterrupt  # Gradio then shuts down cleanly, deleting its temporary upload copies

    signal.signal(signal.SIGTERM, stop)

    app.launch(server_name=host, server_port=port, share=False, auth=auth, show_error=False, css=CSS,
               allowed_paths=[], footer_links=["api"], max_file_size=settings.upload_max_bytes,
               app_kwargs={"middleware": [Middleware(LoginThrottle)]})


class LoginThrottle:
    """ASGI middleware: after ``LOGIN_FAILURES`` failed logins in ``LOGIN_WINDOW`` s, a client gets 429."""

    def __init__(self, app, failures: int = LOGIN_FAILURES, window: float = LOGIN_WINDOW) -> None:
        self.app, self.failures, self.window = app, failures, window
        self._failed: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope["path"].rstrip("/").endswith("/login"):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown",))[0]
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failed.pop(client, []) if now - t < self.window]
            if recent:
                self._failed[client] = recent
            wait = self.window - (now - recent[0]) if len(recent) >= self.failures else 0.0
        if wait > 0:
            body = b'{"detail": "Too many failed logins from this address: try again in a minute."}'
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", str(int(wait) + 1).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        status = {}

        async def watch(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if status.get("code", 500) >= 400:
            with self._lock:
                self._failed.setdefault(client, []).append(time.monotonic())

