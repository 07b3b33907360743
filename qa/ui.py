"""The Gradio chat: cited answers whose sources sit under each answer, plus uploads.

Each answer carries its own Sources block with ids unique to that turn, so markers
never point at another answer's sources, and the chat is kept in the browser's
storage so a reload shows the same answers with the same citations.
"""
from __future__ import annotations

import dataclasses
import html
import logging
import re
import shutil
import uuid
from pathlib import Path

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


def render_answer(result: Answer, turn: str) -> str:
    """Answer text with clickable markers, then its own Sources block."""
    text = html.escape(result.text, quote=False)
    text = re.sub(r"\[(\d+)\]", lambda m: f'<a class="qa-cite" href="#src-{turn}-{m.group(1)}">[{m.group(1)}]</a>', text)
    if result.notice and result.mode != "extractive":
        text += f'\n\n<div class="qa-notice">⚠️ {html.escape(result.notice)}</div>'
    if not result.citations:
        return text
    blocks = []
    for n, c in enumerate(result.citations, start=1):
        where = html.escape(c.doc_id) + (f", page {c.page}" if c.page is not None else "")
        at = c.passage.find(c.quote)
        if at >= 0:
            body = (html.escape(c.passage[:at]) + "<mark>" + html.escape(c.quote) + "</mark>"
                    + html.escape(c.passage[at + len(c.quote):]))
        else:
            body = "<mark>" + html.escape(c.quote) + "</mark>"
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


def store_upload(src: Path, corpus: Path, limit: int) -> Path:
    """Copy an uploaded file into the corpus under its base name, after checking it loads."""
    name = Path(src.name).name
    if not name or name.startswith(".") or Path(name).suffix.lower() not in UPLOAD_SUFFIXES:
        raise LoadError(f"{name or 'file'}: only {', '.join(UPLOAD_SUFFIXES)} files can be added")
    if src.stat().st_size > limit:
        raise LoadError(f"{name}: larger than the {limit // 2**20} MiB upload limit")
    list(load_file(src, name))  # raises LoadError for empty, binary or broken files
    corpus.mkdir(parents=True, exist_ok=True)
    target = corpus / name
    shutil.copyfile(src, target)
    return target


def upload_target(index: Path | None, settings: Settings) -> tuple[Path, list[str]]:
    """Where uploads go, and every source to re-index: the index's own corpus folder."""
    sources = list(get_engine(index, settings).index.manifest.get("sources") or [str(settings.corpus)])
    folder = next((Path(s) for s in sources if Path(s).is_dir()), settings.corpus)
    if str(folder) not in sources:
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
                    draft = html.escape(result) + "\n\n<small><i>checking citations…</i></small>"
                    yield history + [{"role": "assistant", "content": draft}], "", history
            assert isinstance(result, Answer)
            final = render_answer(result, uuid.uuid4().hex[:8])
            if chosen.llm == "none":
                words = result.text.split(" ")
                for i in range(0, len(words), 6):
                    yield (history + [{"role": "assistant", "content": html.escape(" ".join(words[:i + 6]))}],
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
        stored, rejected = [], []
        folder, sources = upload_target(index, settings)
        for f in files:
            path = Path(getattr(f, "name", f))
            try:
                stored.append(store_upload(path, folder, settings.upload_max_bytes).name)
            except (LoadError, OSError) as exc:
                rejected.append(str(exc))
        message = ""
        if stored:
            try:
                report, _ = index_paths(sources, index=index or settings.index, settings=settings,
                                        progress=lambda stage, done, total: progress(done / max(total, 1), desc=stage))
                message = (f"Added {', '.join(stored)}: {len(report.added)} new, {len(report.changed)} changed "
                           f"document(s) indexed.")
            except Exception as exc:
                log.exception("indexing uploads failed")
                message = f"⚠️ Indexing failed: {exc}"
        if rejected:
            message += (" " if message else "") + "Rejected: " + "; ".join(rejected)
        return message, gr.update(choices=documents())

    with gr.Blocks(title="Report QA") as app:
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
            except ValueError as exc:
                return f"Error: {exc}"

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
    app.launch(server_name=host, server_port=port, share=False, auth=auth, show_error=False, css=CSS,
               allowed_paths=[], footer_links=["api"])

