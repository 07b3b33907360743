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

from qa.api import answer, answer_stream, document_titles, get_engine, index_paths
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
.qa-source:target, .qa-source.qa-hit { background: #fff7d6; color: #1a1a1a; }
.qa-source mark, .qa-source .qa-ctx { background: #ffe066; color: #1a1a1a; padding: 0 .1em; }
.dark .qa-source:target, .dark .qa-source.qa-hit { background: #3a3300; color: #f5f5f5; }
.dark .qa-source mark, .dark .qa-source .qa-ctx { background: #d9a400; color: #111111; }
.qa-source details { margin-top: .2em; } .qa-source summary { cursor: pointer; font-size: .9em; opacity: .8; }
.qa-notice { font-size: .85em; color: #8a5a00; }
.dark .qa-notice { color: #ffc857; }
a.qa-cite { text-decoration: none; font-weight: 600; }
"""
# Runs in the page: a marker click goes to its source in this page (a plain "#src-…" link resolves
# against Gradio's <base> and reloads the page when the URL has a query such as ?__theme=dark) and
# marks it; and Gradio's copy buttons get clean text instead of the message's HTML.
PAGE_JS = r"""() => {
  document.addEventListener("click", (e) => {
    const a = e.target.closest && e.target.closest("a.qa-cite");
    if (!a) return;
    const el = document.getElementById(a.getAttribute("href").slice(1));
    if (!el) return;
    e.preventDefault();  // the page's <base> would resolve "#src-…" to another URL and reload, losing ?__theme
    location.hash = el.id;
    el.scrollIntoView({block: "nearest"});
    document.querySelectorAll(".qa-source.qa-hit").forEach((s) => s.classList.remove("qa-hit"));
    el.classList.add("qa-hit");
  }, true);
  const clean = (html) => {
    const doc = new DOMParser().parseFromString(html, "text/html");
    doc.querySelectorAll(".qa-sources").forEach((box) => {
      const lines = [...box.querySelectorAll(".qa-source")].map((s) => s.dataset.copy);
      box.replaceWith(doc.createTextNode("\n\nSources:\n" + lines.join("\n")));
    });
    doc.querySelectorAll("br").forEach((b) => b.replaceWith("\n"));
    doc.querySelectorAll("div").forEach((d) => d.prepend("\n"));
    return doc.body.textContent.replace(/\n{3,}/g, "\n\n").trim();
  };
  const plain = (text) => {
    if (!/qa-(cite|sources|notice)/.test(text)) return text;
    try {
      const data = JSON.parse(text);
      const fix = (v) => typeof v === "string" ? clean(v) : Array.isArray(v) ? v.map(fix)
        : v && typeof v === "object" ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fix(x)])) : v;
      return JSON.stringify(fix(data), null, 2);
    } catch (err) { return clean(text); }
  };
  if (navigator.clipboard) {
    const write = navigator.clipboard.writeText.bind(navigator.clipboard);
    navigator.clipboard.writeText = (text) => write(plain(String(text)));
  }
}"""
SCROLL_TO_ANSWER = """() => {
  const msgs = document.querySelectorAll("#chat .message-row, #chat .message");
  const last = msgs[msgs.length - 1];
  if (last) last.scrollIntoView({block: "start"});
}"""


MAX_PASSAGES = 20  # the "Passages to retrieve" slider's top
LOGIN_FAILURES, LOGIN_WINDOW = 5, 60.0  # failed logins allowed per client per window (seconds)
# Characters that HTML, Markdown or its autolinker would turn into tags, links, emphasis or
# code: written as entities they show as themselves and do nothing.
_MARKDOWN_ACTIVE = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;", "[": "&#91;", "]": "&#93;", "(": "&#40;", ")": "&#41;", "*": "&#42;", "_": "&#95;",
                    "`": "&#96;", ":": "&#58;", "@": "&#64;", "!": "&#33;", "~": "&#126;", "#": "&#35;",
                    ".": "&#46;", "|": "&#124;", "\\": "&#92;", "$": "&#36;"}
_MARKER_SPLIT = re.compile(r"(\[\d+\])")


def inert(text: str) -> str:
    """Report text as HTML that renders as plain text: no live link, image or markup from a report."""
    return "".join(_MARKDOWN_ACTIVE.get(ch, ch) for ch in text.replace("\n", " "))


def merge_citations(result: Answer) -> tuple[str, list]:
    """The answer text and its citations with repeats of one passage span folded into the first marker."""
    first: dict[tuple, int] = {}
    renumber: dict[int, int] = {}
    kept = []
    for n, c in enumerate(result.citations, start=1):
        key = (c.doc_id, c.start, c.end)
        if key not in first:
            kept.append(c)
            first[key] = len(kept)
        renumber[n] = first[key]
    text = _MARKER_SPLIT.sub(lambda m: f"[{renumber.get(int(m.group(1)[1:-1]), int(m.group(1)[1:-1]))}]", result.text)
    text = re.sub(r"(\[\d+\])(\s*\1)+", r"\1", text)  # "[1] [1]" after merging says it once
    return text, kept


def render_answer(result: Answer, turn: str) -> str:
    """Answer text with clickable markers, then its own Sources: one line per distinct passage span.

    Each source shows its quote; the passage around it sits in a collapsed <details>. ``data-copy``
    holds the plain line the copy buttons use (see PAGE_JS).
    """
    answer_text, citations = merge_citations(result)
    text = "".join(f'<a class="qa-cite" href="#src-{turn}-{part[1:-1]}">{part}</a>' if _MARKER_SPLIT.fullmatch(part)
                   else inert(part) for part in _MARKER_SPLIT.split(answer_text))
    if result.notice and result.mode != "extractive":
        text += f'\n\n<div class="qa-notice">⚠️ {inert(result.notice)}</div>'
    if not citations:
        return text
    blocks = []
    for n, c in enumerate(citations, start=1):
        where = c.doc_id + (f", page {c.page}" if c.page is not None else "")
        plain = f"[{n}] “{' '.join(c.quote.split())}” — {where}, chars {c.start}–{c.end}"
        at = c.passage.find(c.quote)
        context = ""
        if at >= 0 and c.passage.strip() != c.quote.strip():
            context = (f'<details><summary>in context</summary>{inert(c.passage[:at])}<span class="qa-ctx">'
                       f'{inert(c.quote)}</span>{inert(c.passage[at + len(c.quote):])}</details>')
        blocks.append(f'<div class="qa-source" id="src-{turn}-{n}" data-copy="{inert(plain)}"><b>[{n}] {inert(where)}</b> '
                      f'<small>chars {c.start}–{c.end}</small><br><mark>{inert(c.quote)}</mark>{context}</div>')
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


def passages(k: object) -> int:
    """The slider's value as a passage count in 1..MAX_PASSAGES: a typed 0, 500 or "" cannot reach the engine."""
    try:
        return min(max(int(float(k)), 1), MAX_PASSAGES)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 1


def progress_label(stage: str, done: int, total: int) -> str:
    """What the upload shows while indexing: the stage and how far ("embedding 120/480")."""
    if "page" in stage:  # "reading report.pdf, page 7 of 13" says it all
        return stage
    return f"{stage} {done:,}/{total:,}"


def indexed_message(names: list[str], report) -> str:
    """What an upload did to the index; an upload that changed nothing says it was already indexed."""
    if not report.added and not report.changed:
        return f"{', '.join(names)}: already indexed (the same text is in the index), nothing new to add."
    return f"Added {', '.join(names)}: {len(report.added)} new, {len(report.changed)} changed document(s) indexed."


def document_label(doc_id: str, title: str) -> str:
    """A document as an analyst knows it: its title, with the file name to tell copies apart."""
    title = " ".join((title or "").split())
    return f"{title} ({doc_id})" if title and title != doc_id and title != Path(doc_id).stem else doc_id


def build_app(settings: Settings, index: Path | None = None):
    """The Gradio Blocks app over :func:`qa.answer`; ``index`` None means the default index."""
    import gradio as gr

    def documents() -> list[tuple[str, str]]:
        """(label, doc_id) choices read from the index now, so uploads show after a reload too."""
        try:
            return [(document_label(doc_id, title), doc_id) for doc_id, title in document_titles(index, settings)]
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
                                        doc_ids=doc_filter or None, top_k=passages(k)):
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
                notes.append(f"{path.name} was already indexed (as {kept.path.name}), nothing to add")
            else:
                stored.append(kept.path.name)
            if kept.status == "renamed":
                notes.append(f"a different {path.name} already exists, so this one was saved as {kept.path.name}")
        message = ""
        if stored:
            try:
                report, _ = index_paths(sources, index=index or settings.index, settings=settings,
                                        progress=lambda stage, done, total: progress(
                                            done / max(total, 1), desc=progress_label(stage, done, total)))
                message = indexed_message(stored, report)
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
                chatbot = gr.Chatbot(label="Chat", height=560, elem_id="chat", autoscroll=False)
                question = gr.Textbox(placeholder="Ask a question about the reports…", show_label=False,
                                      elem_id="question", max_length=settings.max_question_chars * 10)
                with gr.Row():
                    ask = gr.Button("Ask", variant="primary", elem_id="ask")
                    new = gr.Button("New conversation", elem_id="new-conversation")
            with gr.Column(scale=1):
                k = gr.Slider(1, MAX_PASSAGES, value=passages(settings.top_k), step=1, label="Passages to retrieve")
                modes = ["extractive"] + ([f"LLM ({settings.llm})"] if settings.llm != "none" else [])
                mode = gr.Radio(modes, value=modes[-1], label="Answer mode", interactive=len(modes) > 1,
                                elem_id="mode")
                doc_filter = gr.CheckboxGroup(choices=documents(), label="Documents (tick to restrict)",
                                              elem_id="documents")
                upload = gr.File(label=f"Add reports ({' '.join(UPLOAD_SUFFIXES)})", file_count="multiple",
                                 file_types=UPLOAD_SUFFIXES, elem_id="upload")
                status = gr.Markdown(elem_id="upload-status")

        for trigger in (question.submit, ask.click):
            trigger(respond, [question, chatbot, k, doc_filter, mode], [chatbot, question, saved], api_name=False
                    ).then(None, None, None, js=SCROLL_TO_ANSWER)  # the answer's start in view, not its last source
        new.click(lambda: ([], [], ""), None, [chatbot, saved, question], api_name=False)
        chatbot.clear(lambda: [], None, [saved], api_name=False)  # the trash icon forgets the stored chat too
        upload.upload(add_files, [upload], [status, doc_filter], api_name=False)
        app.load(lambda s: (s or [], gr.update(choices=documents())), [saved], [chatbot, doc_filter], api_name=False)

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

    app.launch(server_name=host, server_port=port, share=False, auth=auth, show_error=False, css=CSS, js=PAGE_JS,
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

