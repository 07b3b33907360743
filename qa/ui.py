"""The Gradio chat: cited answers whose sources sit under each answer, plus uploads.

Each answer carries its own Sources block with ids unique to that turn, so markers
never point at another answer's sources. Conversations are kept in the browser's
storage (with each answer's citations as data, for the Markdown export), so a reload
or a server restart shows the same answers with the same citations. The reports
manager lists the index and removes reports: the app's own uploads with their files,
anything else from the index only (see :func:`remove_report`).

A marker click opens its report in the source panel (:mod:`qa.sources`: the text from the index
store, a PDF's page rendered with the sentence boxed). Stop ends the answer being written through a
per-session flag the answer's generator checks (:class:`StopFlags`). Thumbs and the "Wrong citation"
flag append to ``<index>/feedback.jsonl`` (:mod:`qa.feedback`).
"""
from __future__ import annotations

import dataclasses
import filecmp
import hashlib
import html
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from qa.api import (DocumentInfo, answer, answer_stream, document_list, document_titles, excluded_documents,
                    get_engine, index_paths, remove_from_index, source_file)
from qa.feedback import WRONG_CITATION, RepeatFilter, append_feedback, feedback_path, make_feedback, verdict_of
from qa.index import IndexProblem
from qa.load import SUPPORTED_SUFFIXES, LoadError, load_file
from qa.retrieve import NOT_FOUND_PREFIX
from qa.settings import Settings
from qa.sources import (parse_source_request, render_page, render_page_html, render_panel_message, render_source,
                        source_view)
from qa.types import Answer, Citation

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
.qa-docs { overflow-x: auto; max-width: 100%; }
.qa-docs table { border-collapse: collapse; width: 100%; font-size: .9em; }
.qa-docs th, .qa-docs td { text-align: left; padding: .25em .5em; border-bottom: 1px solid #ddd; white-space: nowrap; }
.qa-docs td:first-child { white-space: normal; min-width: 12em; }
.qa-left-out { font-size: .85em; opacity: .8; }
#scope { font-size: .9em; opacity: .85; min-height: 1.2em; }
.qa-skip { position: absolute; left: -9999px; }
.qa-skip:focus { position: static; display: inline-block; padding: .3em .6em; }
@media (max-width: 640px) {  /* a marker is a finger's width on a phone */
  a.qa-cite { display: inline-block; min-width: 44px; min-height: 44px; line-height: 44px; text-align: center; }
}
.qa-preview { position: fixed; z-index: 10000; max-width: min(420px, 90vw); background: #ffffff; color: #1a1a1a;
  border: 1px solid #8aa4ff; border-radius: 6px; padding: .4em .6em; box-shadow: 0 2px 10px rgba(0,0,0,.25);
  font-size: .9em; pointer-events: none; }
.qa-preview small { display: block; margin-top: .2em; color: #444444; }
.dark .qa-preview { background: #1f2937; color: #f5f5f5; border-color: #8aa4ff; }
.dark .qa-preview small { color: #d0d0d0; }
#source-panel { border-left: 3px solid #8aa4ff; padding-left: .6em; align-self: flex-start; flex-wrap: nowrap; }
.qa-panel-title { margin: 0; font-size: 1.05em; } .qa-panel-where { margin: .1em 0 .4em; font-size: .85em; opacity: .85; }
#source-text .qa-doc { max-height: 340px; overflow-y: auto; position: relative; line-height: 1.5; padding: .4em .6em;
  border: 1px solid #cccccc; border-radius: 4px; font-size: .92em; }
#source-text mark.qa-panel-hit { background: #ffe066; color: #1a1a1a; outline: 2px solid #b07d00; padding: 0 .1em; }
.dark #source-text mark.qa-panel-hit { background: #d9a400; color: #111111; outline-color: #ffe066; }
.qa-page-mark { display: block; font-size: .8em; opacity: .75; border-top: 1px dashed #999999; margin: .4em 0; }
.qa-page-label { font-size: .85em; margin: .4em 0 .2em; }
.qa-page-frame { position: relative; }
.qa-page-frame img { display: block; width: 100%; height: auto; border: 1px solid #cccccc; background: #ffffff; }
.qa-box { position: absolute; background: rgba(255, 200, 0, .30); outline: 2px solid #d97706; pointer-events: none; }
@media (max-width: 640px) {  /* the panel is a drawer over the lower part of a phone's screen */
  #source-panel { position: fixed; left: 0; right: 0; bottom: 0; max-height: 80vh; overflow-y: auto; z-index: 1000;
    background: var(--background-fill-primary); border-left: none; border-top: 3px solid #8aa4ff;
    border-radius: 12px 12px 0 0; box-shadow: 0 -4px 16px rgba(0,0,0,.3); padding: .6em; margin: 0; }
  #source-text .qa-doc { max-height: 38vh; }
}
"""
# Runs in the page: a marker click goes to its source in this page (a plain "#src-…" link resolves
# against Gradio's <base> and reloads the page when the URL has a query such as ?__theme=dark), marks
# it and opens it in the source panel (the marker's stored doc/start/end go to the server through the
# hidden #source-request box; a reload with that source in the address opens it again); hovering or
# focusing a marker previews its quote; and Gradio's copy buttons get clean text instead of the HTML.
PAGE_JS = r"""() => {
  const sourceOf = (a) => document.getElementById((a.getAttribute("href") || "").slice(1));
  const cited = (src) => { try { return JSON.parse(src.getAttribute("data") || "{}"); } catch (err) { return {}; } };
  const openSource = (src) => {
    const box = document.querySelector("#source-request textarea, #source-request input");
    const go = document.querySelector("#source-open");
    const c = cited(src);
    if (!box || !go || !c.doc) return false;
    const mark = src.querySelector("mark");
    box.value = JSON.stringify({...c, quote: mark ? mark.textContent : ""});
    box.dispatchEvent(new Event("input", {bubbles: true}));
    setTimeout(() => go.click(), 0);
    return true;
  };
  document.addEventListener("click", (e) => {
    const a = e.target.closest && e.target.closest("a.qa-cite");
    if (!a) return;
    const el = sourceOf(a);
    if (!el) return;
    e.preventDefault();  // the page's <base> would resolve "#src-…" to another URL and reload, losing ?__theme
    location.hash = el.id;
    el.scrollIntoView({block: "nearest"});
    document.querySelectorAll(".qa-source.qa-hit").forEach((s) => s.classList.remove("qa-hit"));
    el.classList.add("qa-hit");
    hideTip();
    openSource(el);
  }, true);
  let tip = null;
  const hideTip = () => {
    if (!tip) return;
    tip.remove();
    document.querySelectorAll("a.qa-cite[aria-describedby]").forEach((a) => a.removeAttribute("aria-describedby"));
  };
  const showTip = (a) => {
    const src = sourceOf(a);
    if (!src) return;
    const mark = src.querySelector("mark");
    tip = tip || document.createElement("div");
    tip.id = "qa-preview"; tip.className = "qa-preview"; tip.setAttribute("role", "tooltip");
    const quote = document.createElement("div");
    quote.textContent = "“" + (mark ? mark.textContent : "") + "”";
    const where = document.createElement("small");
    const c = cited(src);
    where.textContent = (c.doc || "") + (c.page != null ? ", page " + c.page : "");
    tip.replaceChildren(quote, where);
    document.body.appendChild(tip);
    const r = a.getBoundingClientRect(), t = tip.getBoundingClientRect();
    const left = Math.max(4, Math.min(r.left, window.innerWidth - t.width - 4));
    const top = r.top - t.height - 6 >= 0 ? r.top - t.height - 6 : r.bottom + 6;
    tip.style.left = left + "px"; tip.style.top = top + "px";
    a.setAttribute("aria-describedby", "qa-preview");
  };
  const cite = (e) => e.target.closest && e.target.closest("a.qa-cite");
  document.addEventListener("mouseover", (e) => { const a = cite(e); if (a) showTip(a); });
  document.addEventListener("mouseout", (e) => { const a = cite(e); if (a && !a.contains(e.relatedTarget)) hideTip(); });
  document.addEventListener("focusin", (e) => { const a = cite(e); if (a) showTip(a); else hideTip(); });
  document.addEventListener("focusout", (e) => { if (cite(e)) hideTip(); });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") hideTip(); });
  if (location.hash.startsWith("#src-")) {  // a reload opens the source that was open
    const id = location.hash.slice(1);
    let tries = 0;
    const again = setInterval(() => {
      const el = document.getElementById(id);
      if ((el && openSource(el)) || ++tries > 60) { clearInterval(again); if (el) el.classList.add("qa-hit"); }
    }, 500);
  }
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
# After the panel shows a source: its text box scrolls to the highlighted quote (the page does not
# jump), and focus moves to the panel's title so a keyboard or screen reader user is taken there.
SCROLL_TO_SOURCE = """() => {
  let tries = 0;
  const show = () => {
    const box = document.querySelector("#source-text .qa-doc");
    const hit = box && box.querySelector("#qa-panel-hit");
    if (!hit) { if (++tries < 40) setTimeout(show, 50); return; }
    box.scrollTop = Math.max(0, hit.offsetTop - box.clientHeight / 3);
    const title = document.getElementById("source-title");
    if (title) title.focus({preventScroll: true});
    const panel = document.querySelector("#source-panel");
    if (panel) panel.scrollIntoView({block: "nearest"});
  };
  requestAnimationFrame(show);
}"""
FORGET_SOURCE = """() => { if (location.hash.startsWith("#src-")) history.replaceState(null, "", location.pathname + location.search); }"""
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
    holds the plain line the copy buttons use (see PAGE_JS); ``data`` (JSON: doc, start, end, page; the
    one such attribute the chat's HTML sanitizer keeps) is what a marker click asks the source panel
    for, kept with the stored answer so the panel opens the same after a reload.
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
        plain = f"[{n}] {source_text(c.doc_id, c.quote, c.start, c.end, c.page)}"
        at = c.passage.find(c.quote)
        context = ""
        if at >= 0 and c.passage.strip() != c.quote.strip():
            context = (f'<details><summary>in context</summary>{inert(c.passage[:at])}<span class="qa-ctx">'
                       f'{inert(c.quote)}</span>{inert(c.passage[at + len(c.quote):])}</details>')
        cited = json.dumps({"doc": c.doc_id, "start": c.start, "end": c.end, "page": c.page}, ensure_ascii=False)
        blocks.append(f'<div class="qa-source" id="src-{turn}-{n}" data-copy="{inert(plain)}" data="{inert(cited)}">'
                      f'<b>[{n}] {inert(where)}</b> '
                      f'<small>chars {c.start}–{c.end}</small><br><mark>{inert(c.quote)}</mark>{context}</div>')
    return f"{text}\n\n{SOURCES_OPEN}<b>Sources</b>{''.join(blocks)}</div>"


def source_text(doc_id: str, quote: str, start: int, end: int, page: int | None) -> str:
    """One source as plain text; the copy buttons and the Markdown export both say it this way."""
    where = doc_id + (f", page {page}" if page is not None else "")
    return f"“{' '.join(quote.split())}” — {where}, chars {start}–{end}"


def message_text(message: dict) -> str:
    """A chat message's content as one string (Gradio may hand it back as a list of parts)."""
    content = message.get("content")
    if isinstance(content, list):
        content = " ".join(c.get("text", "") if isinstance(c, dict) else str(c) for c in content)
    return str(content or "")


def plain_history(messages: list[dict]) -> list[dict]:
    """The chat as the engine wants it: answer text only, no markup or sources; a stopped answer and its
    question are left out (nothing of a stopped answer is kept)."""
    out: list[dict] = []
    for m in messages or []:
        content = message_text(m)
        if STOPPED_CLASS in content:
            if out and out[-1]["role"] == "user":
                out.pop()
            continue
        text = content.split(SOURCES_OPEN, 1)[0]
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


# ---------------------------------------------------------------- conversations, kept in the browser
#
# The browser keeps {"current": id, "items": [conversation, ...]}, newest first. A conversation is
# {"id", "title", "created", "turns"}; a turn is {"role", "content"} as the chat shows it, and an
# answer's turn also keeps "text" (the answer with its [n] markers) and "citations" (doc_id, quote,
# start, end, page per marker), so an export never has to read the rendered HTML.

NEW_TITLE = "New conversation"
TITLE_MAX = 80


FIRST = "first"  # the id of the conversation a browser with none starts: the same on every read


def new_conversation(conversation_id: str | None = None) -> dict:
    """An empty conversation with a fresh id."""
    return {"id": conversation_id or uuid.uuid4().hex[:12], "title": NEW_TITLE,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "turns": []}


def conversations(state: object) -> dict:
    """The stored conversations, repaired: whatever the browser sent, one current conversation exists."""
    items = []
    if isinstance(state, dict) and isinstance(state.get("items"), list):
        for c in state["items"]:
            if isinstance(c, dict) and isinstance(c.get("id"), str) and isinstance(c.get("turns"), list):
                turns = [t for t in c["turns"] if isinstance(t, dict) and t.get("role") in ("user", "assistant")]
                items.append({**c, "title": str(c.get("title") or NEW_TITLE)[:TITLE_MAX], "turns": turns})
    current = state.get("current") if isinstance(state, dict) else None
    if not any(c["id"] == current for c in items):
        if not items:  # the same id each time, so an answer finds the conversation it was asked in
            items.append(new_conversation(FIRST))
        current = items[0]["id"]
    return {"current": current, "items": items}


def current_conversation(state: dict) -> dict:
    """The conversation being shown (``state`` comes from :func:`conversations`)."""
    return next(c for c in state["items"] if c["id"] == state["current"])


def conversation_choices(state: dict) -> list[tuple[str, str]]:
    """(title, id) of every conversation for the list, with a turn count to tell same titles apart."""
    return [(f"{c['title']} ({sum(t['role'] == 'user' for t in c['turns'])})", c["id"]) for c in state["items"]]


def chat_messages_of(conversation: dict) -> list[dict]:
    """What the Chatbot shows for a stored conversation."""
    return [{"role": t["role"], "content": str(t.get("content") or "")} for t in conversation["turns"]]


def add_turns(state: object, answered: dict) -> dict:
    """The stored conversations with a finished question and answer added to the one it was asked in.

    ``state`` is read when the answer is done, so a switch, rename or delete made while it
    was coming stands; a conversation deleted meanwhile stays deleted (the answer is dropped).
    """
    state = conversations(state)
    conv = next((c for c in state["items"] if c["id"] == answered.get("conversation")), None)
    if conv is not None:
        conv["turns"] += answered["turns"]
        if conv["title"] == NEW_TITLE:
            conv["title"] = title_from(str(answered["turns"][0].get("content") or ""))
    return state


STOPPED = "Stopped: nothing of this answer was kept."
STOPPED_CLASS = "qa-stopped"


def stopped_chat(asked: list[dict]) -> list[dict]:
    """The chat after Stop: the question asked, then a note in place of the unchecked draft."""
    return list(asked) + [{"role": "assistant", "content": f'<span class="{STOPPED_CLASS}">⏹ {STOPPED}</span>'}]


class StopFlags:
    """Stop requests for the answers being written, one per browser session (Gradio's session hash).

    The answer's generator checks :meth:`stopped` between yields and ends itself with the note, so no
    late draft can follow (cancelling the event from outside could still deliver one).
    """

    def __init__(self) -> None:
        self._running: dict[str, str] = {}
        self._stopped: set[str] = set()
        self._lock = threading.Lock()

    def start(self, session: str) -> str:
        """Register an answer being written for ``session``; its token."""
        token = uuid.uuid4().hex
        with self._lock:
            self._running[session] = token
        return token

    def stop(self, session: str) -> bool:
        """Ask the session's answer being written to stop; False when none is."""
        with self._lock:
            token = self._running.get(session)
            if token is not None:
                self._stopped.add(token)
            return token is not None

    def stopped(self, token: str) -> bool:
        """Whether Stop was pressed for this answer."""
        with self._lock:
            return token in self._stopped

    def finish(self, session: str, token: str) -> None:
        """The answer is done (shown, stopped or failed): forget it."""
        with self._lock:
            if self._running.get(session) == token:
                del self._running[session]
            self._stopped.discard(token)


_SOURCE_DATA = re.compile(r'<div class="qa-source"[^>]*? data="([^"]*)">.*?<mark>(.*?)</mark>', re.S)


def citations_in_html(content: str) -> list[dict]:
    """The citations a rendered answer shows (doc_id, quote as shown, start, end, page), read from its HTML."""
    out = []
    for data, quote in _SOURCE_DATA.findall(content):
        try:
            cited = json.loads(html.unescape(data))
            out.append({"doc_id": str(cited["doc"]), "quote": html.unescape(quote), "start": int(cited["start"]),
                        "end": int(cited["end"]), "page": cited.get("page")})
        except (ValueError, KeyError, TypeError):
            continue
    return out


class FeedbackSubject(NamedTuple):
    """The answer a verdict is about: its question, text with [n] markers, and citations."""

    question: str
    answer: str
    citations: list


def feedback_subject(shown: list[dict], at: int, conversation: dict) -> FeedbackSubject | None:
    """What the chat message at ``at`` answered, with its stored text and citations when the conversation
    has it (exact quotes), else as its HTML shows them. None when ``at`` is not an answer."""
    if not 0 <= at < len(shown) or shown[at].get("role") != "assistant":
        return None
    content = message_text(shown[at])
    if STOPPED_CLASS in content:
        return None
    question = next((plain_history([m])[0]["content"] for m in reversed(shown[:at]) if m.get("role") == "user"), "")
    stored = next((t for t in conversation.get("turns") or [] if t.get("role") == "assistant"
                   and str(t.get("content") or "") == content and "text" in t), None)
    if stored is not None:
        return FeedbackSubject(question, str(stored["text"]), list(stored.get("citations") or []))
    return FeedbackSubject(question, plain_history([shown[at]])[0]["content"], citations_in_html(content))


def title_from(question: str) -> str:
    """A conversation's default title: its first question, cut at a word."""
    text = " ".join(question.split())
    if len(text) <= 60:
        return text or NEW_TITLE
    return text[:60].rsplit(" ", 1)[0] + "…"


def answer_turn(result: Answer, content: str) -> dict:
    """An answer as stored: shown HTML, plus the text and citations the export is made from."""
    text, citations = merge_citations(result)
    if result.notice and result.mode != "extractive":
        text += f"\n\n⚠️ {result.notice}"
    return {"role": "assistant", "content": content, "text": text,
            "citations": [{"doc_id": c.doc_id, "quote": c.quote, "start": c.start, "end": c.end, "page": c.page}
                          for c in citations]}


# what makes a link, emphasis, code or HTML; an underscore inside a word (file_name.txt) makes nothing
_MD_ACTIVE = re.compile(r"([\\`*\[\]<>]|(?<!\w)_|_(?!\w))")


def md_text(text: str) -> str:
    """Text that Markdown shows as itself (a report's brackets or asterisks make no link or emphasis)."""
    return _MD_ACTIVE.sub(r"\\\1", text)


def conversation_markdown(conversation: dict) -> str:
    """A stored conversation as Markdown: each answer's [n] becomes a footnote [^k] numbered through the
    whole conversation, and each footnote holds the quote, document and location, as the copy button says it.
    """
    lines = [f"# {md_text(conversation.get('title') or NEW_TITLE)}", ""]
    notes: list[str] = []
    for turn in conversation.get("turns") or []:
        if turn.get("role") == "user":
            lines += [f"**Question:** {md_text(' '.join(str(turn.get('content') or '').split()))}", ""]
            continue
        cites = turn.get("citations") or []
        text = turn.get("text")
        if text is None:  # an answer stored before citations were kept: its shown text, no footnotes
            text = plain_history([turn])[0]["content"]
        first = len(notes)
        for c in cites:
            notes.append(source_text(str(c.get("doc_id")), str(c.get("quote") or ""), int(c.get("start") or 0),
                                     int(c.get("end") or 0), c.get("page")))
        parts = []
        for part in _MARKER_SPLIT.split(str(text)):
            n = int(part[1:-1]) if _MARKER_SPLIT.fullmatch(part) else 0
            parts.append(f"[^{first + n}]" if 1 <= n <= len(cites) else md_text(part))
        lines += ["**Answer:** " + "".join(parts).replace("\n", "  \n"), ""]
    if notes:
        lines += ["---", ""] + [f"[^{k}]: {md_text(note)}" for k, note in enumerate(notes, start=1)]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------- the report manager

UPLOADS_LEDGER = ".qa-uploads.json"  # in the upload folder: the files this app put there, with their SHA-256
_ledger_lock = threading.Lock()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_ledger(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / UPLOADS_LEDGER).read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_ledger(folder: Path, ledger: dict[str, str]) -> None:
    partial = folder / f"{UPLOADS_LEDGER}.{uuid.uuid4().hex}"
    partial.write_text(json.dumps(ledger, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(partial, folder / UPLOADS_LEDGER)


def record_upload(path: Path, folder: Path) -> None:
    """Note that the app wrote ``path`` into its upload folder (only such files may ever be deleted)."""
    with _ledger_lock:
        ledger = _read_ledger(folder)
        ledger[path.name] = _sha256(path)
        _write_ledger(folder, ledger)


def is_app_upload(path: Path | None, folder: Path) -> bool:
    """Whether ``path`` is a file this app uploaded into ``folder``, unchanged since: the only files it deletes.

    A user's own file in that folder (a seed, a file copied there by hand, or an upload the user has
    since overwritten) is not one.
    """
    if path is None or path.is_symlink() or not path.is_file() or path.parent.resolve() != folder.resolve():
        return False
    recorded = _read_ledger(folder).get(path.name)
    return recorded is not None and recorded == _sha256(path)


def delete_upload(path: Path, folder: Path) -> None:
    """Delete an uploaded file and its ledger entry (callers check :func:`is_app_upload` first)."""
    with _ledger_lock:
        path.unlink(missing_ok=True)
        ledger = _read_ledger(folder)
        if ledger.pop(path.name, None) is not None:
            _write_ledger(folder, ledger)


def human_size(n: int) -> str:
    """A byte count as people read it: 812 B, 14.2 KB, 3.1 MB."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def documents_table(infos: Sequence[DocumentInfo], folder: Path, left_out: Sequence[str] = ()) -> str:
    """The indexed reports as an HTML table (report text inert), with the ones removed but kept on disk.

    "upload" here is the ledger's word (no file is hashed to draw the table); a removal checks the bytes.
    """
    uploads = set(_read_ledger(folder))
    if not infos:
        rows = '<tr><td colspan="7">No reports are indexed.</td></tr>'
    else:
        rows = ""
        for d in infos:
            name = d.doc_id.rsplit("/", 1)[-1]
            kind = Path(name).suffix.lstrip(".").upper() or "?"
            size = human_size(d.file.stat().st_size) if d.file is not None and d.file.exists() else \
                f"{human_size(d.text_bytes)} text"
            mine = d.file is not None and d.file.name in uploads and d.file.parent.resolve() == folder.resolve()
            origin = "upload" if mine else "source folder" if d.file else "file gone"
            when = d.indexed.replace("T", " ").replace("Z", " UTC") if d.indexed else "?"
            title = " ".join(d.title.split()) or Path(name).stem
            rows += (f'<tr data-doc="{html.escape(d.doc_id)}"><td>{inert(title)}</td><td>{inert(d.doc_id)}</td>'
                     f'<td>{kind}</td><td>{d.pages or "–"}</td><td>{size}</td><td>{when}</td><td>{origin}</td></tr>')
    table = ('<div class="qa-docs"><table><thead><tr><th>Report</th><th>File</th><th>Type</th><th>Pages</th>'
             f'<th>Size</th><th>Indexed</th><th>Origin</th></tr></thead><tbody>{rows}</tbody></table></div>')
    if left_out:
        table += ('<p class="qa-left-out">Removed from the index, files kept: '
                  + ", ".join(inert(d) for d in left_out) + ". Put back below, or upload the file again.</p>")
    return table


def scope_line(chosen: Sequence[str], total: int) -> str:
    """What the next question searches, said above the input."""
    if not chosen:
        return f"Searching all {total} report{'s' if total != 1 else ''}."
    names = ", ".join(chosen[:3]) + (f" and {len(chosen) - 3} more" if len(chosen) > 3 else "")
    return f"Searching {len(chosen)} of {total} reports: {inert(names)}."


def restricted(result: Answer, chosen: Sequence[str]) -> Answer:
    """An abstention under a restriction says the chosen reports do not answer, not that no report does."""
    if not chosen or not result.abstained:
        return result
    which, them = ("the chosen report", "it") if len(chosen) == 1 else (f"the {len(chosen)} chosen reports", "them")
    return dataclasses.replace(result, text=f"{NOT_FOUND_PREFIX}: nothing in {which} ({', '.join(chosen)}) answers "
                                            f"this question. Untick {them} under Documents to search every report.")


def removal_plan(info: DocumentInfo | None, folder: Path) -> str:
    """What removing a report will do, said before it is done."""
    if info is None:
        return "That report is no longer in the index."
    name = inert(info.doc_id)
    if is_app_upload(info.file, folder):
        return (f"Delete **{name}**? It leaves the index and its uploaded copy is deleted from the app's upload "
                "folder. This cannot be undone.")
    if info.file is None:
        return f"Remove **{name}** from the index? Its file is already gone."
    return (f"Remove **{name}** from the index? It was not uploaded here: its file "
            f"({inert(str(info.file))}) is the owner's and stays where it is. The report is left out of every "
            "re-index of this index until it is put back.")


def remove_report(doc_id: str, index: Path | None, settings: Settings,
                  progress: Callable[[str, int, int], None] | None = None) -> str:
    """Remove one report: delete the app's own upload, or leave a user's file in place and exclude it; re-index."""
    folder, sources = upload_target(index, settings)
    info = next((d for d in document_list(index, settings) if d.doc_id == doc_id), None)
    if info is None:
        return f"{inert(doc_id)} is no longer in the index."
    if is_app_upload(info.file, folder):
        delete_upload(info.file, folder)  # type: ignore[arg-type]
        how = "its uploaded copy was deleted"
    else:
        remove_from_index([doc_id], index=index, settings=settings)
        how = "its file was kept" if info.file else "its file was already gone"
    report, _ = index_paths(sources, index=index or settings.index, settings=settings, progress=progress)
    gone = sorted(set(report.removed) | set(report.excluded) & {doc_id})
    return f"Removed {inert(', '.join(gone) or doc_id)} from the index; {how}."


def restore_report(doc_id: str, index: Path | None, settings: Settings,
                   progress: Callable[[str, int, int], None] | None = None) -> str:
    """Put a report removed from the index (its file kept) back in, and re-index."""
    _, sources = upload_target(index, settings)
    remove_from_index([doc_id], index=index, settings=settings, restore=True)
    report, _ = index_paths(sources, index=index or settings.index, settings=settings, progress=progress)
    if doc_id not in report.added:
        return f"{inert(doc_id)} is no longer removed, but its file was not found to index again."
    return f"Put {inert(doc_id)} back in the index."


def browser_secret(index: Path | None, settings: Settings) -> str | None:
    """The key the browser's stored conversations are encrypted with, kept beside the index so a server
    restart can still read them (Gradio's default is a new key per start). None: a key per start."""
    path = Path(index or settings.index) / ".ui-secret"
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(uuid.uuid4().hex + uuid.uuid4().hex)
        return path.read_text().strip() or None
    except FileExistsError:
        return path.read_text().strip() or None
    except OSError as exc:
        log.warning("conversations will not survive a server restart: %s", exc)
        return None


DOWNLOAD_MARKDOWN = r"""(md) => {
  if (!md) return;
  const head = (md.match(/^# (.*)$/m) || [null, "conversation"])[1].replace(/\\(.)/g, "$1");
  const name = head.replace(/[^\w\- ]+/g, "").trim().replace(/\s+/g, "-").slice(0, 60) || "conversation";
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([md], {type: "text/markdown;charset=utf-8"}));
  a.download = name + ".md";
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 2000);
}"""


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

    def library(chosen: Sequence[str] | None) -> tuple:
        """The restriction list, the reports table, the remove choice and the scope line, read from the index now."""
        try:
            infos, left_out = document_list(index, settings), excluded_documents(index, settings)
            table = documents_table(infos, Path(settings.corpus).resolve(), left_out)
        except (IndexProblem, OSError) as exc:
            log.warning("no documents: %s", exc)
            infos, left_out, table = [], [], f"<p>⚠️ Could not read the index: {inert(str(exc))}</p>"
        choices = [(document_label(d.doc_id, d.title), d.doc_id) for d in infos]
        ids = {d.doc_id for d in infos}
        kept = [d for d in (chosen or []) if d in ids]
        return (gr.update(choices=choices, value=kept), table, gr.update(choices=choices, value=None),
                scope_line(kept, len(infos)), gr.update(visible=bool(left_out)),
                gr.update(choices=left_out, value=None))

    def listing(state: dict) -> tuple:
        """The conversation list and the current title, for a state from :func:`conversations`."""
        conv = current_conversation(state)
        return gr.update(choices=conversation_choices(state), value=conv["id"]), conv["title"]

    stops = StopFlags()

    def respond(question, history, state, k, doc_filter, mode, request):
        """Stream the answer into the chat; the finished turn goes to ``answered`` for :func:`keep_turn`.

        The chat as shown is the history: the previous answer may not be in the stored state yet.
        Between yields it checks this session's Stop: a stopped answer ends with a note, stored nowhere.
        """
        conv = current_conversation(conversations(state))
        shown = list(history or [])
        if not (question or "").strip():
            gr.Warning("Type a question first.")
            yield shown, gr.skip(), None
            return
        session = getattr(request, "session_hash", None) or "?"
        token = stops.start(session)
        try:
            yield from answer_turns(question, shown, conv, k, doc_filter, mode, token)
        finally:
            stops.finish(session, token)

    def answer_turns(question, shown, conv, k, doc_filter, mode, token):
        chosen_docs = list(doc_filter or [])
        asked = shown + [{"role": "user", "content": question}]
        yield asked, "", None  # the question shows at once
        chosen = settings if mode != "extractive" else dataclasses.replace(settings, llm="none")
        stream = answer_stream(question, plain_history(shown), index=index, settings=chosen,
                               doc_ids=chosen_docs or None, top_k=passages(k))
        try:
            result = None
            for result in stream:
                if stops.stopped(token):
                    break
                if isinstance(result, str):
                    draft = inert(result) + "\n\n<small><i>checking citations…</i></small>"
                    yield asked + [{"role": "assistant", "content": draft}], "", None
            if stops.stopped(token):
                stream.close()  # the model stops writing
                yield stopped_chat(asked), "", None
                return
            assert isinstance(result, Answer)
            result = restricted(result, chosen_docs)
            turn = answer_turn(result, render_answer(result, uuid.uuid4().hex[:8]))
            if chosen.llm == "none":
                words = result.text.split(" ")
                for i in range(0, len(words), 6):
                    if stops.stopped(token):
                        yield stopped_chat(asked), "", None
                        return
                    yield asked + [{"role": "assistant", "content": inert(" ".join(words[:i + 6]))}], "", None
            if stops.stopped(token):
                yield stopped_chat(asked), "", None
                return
        except ValueError as exc:
            turn = {"role": "assistant", "content": f"⚠️ {html.escape(str(exc))}", "text": f"⚠️ {exc}"}
        except Exception as exc:  # never a traceback in the chat
            log.exception("answer failed")
            why = f"{type(exc).__name__}: {exc}"
            turn = {"role": "assistant", "content": f"⚠️ Could not answer: {html.escape(why)}",
                    "text": f"⚠️ Could not answer: {why}"}
        yield asked + [turn], "", {"conversation": conv["id"], "turns": [{"role": "user", "content": question}, turn]}

    def stop_answer(request) -> None:
        """Stop: the answer this browser session is writing ends with a note (see :class:`StopFlags`)."""
        stops.stop(getattr(request, "session_hash", None) or "?")

    def source_document(doc_id: str):
        """A report of the index by its id (KeyError when it is not indexed), and its PDF file if it is one.

        The file is found the way the index found it (its recorded source folders), never from a path
        the browser sent.
        """
        idx = get_engine(index, settings).index
        if not idx.store.has_document(doc_id):
            raise KeyError(doc_id)
        file = source_file(doc_id, [str(x) for x in idx.manifest.get("sources") or []])
        return idx.store.document(doc_id), file if file is not None and file.suffix.lower() == ".pdf" else None

    def page_panel(doc_id: str, number: int, cited: int | None, quote: str) -> tuple:
        """The page view, its navigation and the panel state for page ``number`` of a PDF report."""
        try:
            _, file = source_document(doc_id)
            if file is None:
                raise FileNotFoundError(doc_id)
            image = render_page(file, number, quote if number == cited else "")
        except Exception as exc:  # the text is still shown; the page image says why it is missing
            log.warning("page %s of %s not rendered: %s", number, doc_id, exc)
            return (render_panel_message(f"The page image could not be shown: {exc}"), gr.update(visible=False),
                    None)
        state = {"doc": doc_id, "page": image.number, "count": image.count, "cited": cited, "quote": quote}
        return (render_page_html(image, doc_id),
                gr.update(visible=image.count > 1), state)

    def open_source(raw):
        """A marker click: the cited report in the panel, scrolled to the quote; for a PDF, its page too."""
        request = parse_source_request(raw)
        shown = gr.update(visible=True)
        if request is None:
            return shown, render_panel_message("That citation could not be read."), "", gr.update(visible=False), None
        try:
            document, file = source_document(request.doc_id)
        except KeyError:
            return (shown, render_panel_message(f"{request.doc_id} is no longer in the index."), "",
                    gr.update(visible=False), None)
        except Exception as exc:
            log.exception("source panel failed")
            return shown, render_panel_message(f"Could not read the index: {exc}"), "", gr.update(visible=False), None
        view = source_view(document, request)
        if file is None:
            return shown, render_source(view), "", gr.update(visible=False), None
        page = view.page or request.page or 1
        return shown, render_source(view), *page_panel(request.doc_id, page, page, view.quote)

    def turn_page(state, step: int) -> tuple:
        """Previous or next page of the PDF in the panel."""
        if not isinstance(state, dict) or not state.get("doc"):
            return gr.skip(), gr.skip(), gr.skip()
        number = int(state.get("page") or 1) + step
        if not 1 <= number <= int(state.get("count") or 1):
            return gr.skip(), gr.skip(), gr.skip()
        return page_panel(str(state["doc"]), number, state.get("cited"), str(state.get("quote") or ""))

    repeats = RepeatFilter()

    def give_feedback(history, state, data, request):
        """A thumb or a "Wrong citation" flag on an answer, appended to ``<index>/feedback.jsonl``."""
        verdict = verdict_of(getattr(data, "liked", None))
        at = data.index[0] if isinstance(getattr(data, "index", None), (list, tuple)) else getattr(data, "index", -1)
        conv = current_conversation(conversations(state))
        subject = feedback_subject(list(history or []), int(at), conv) if verdict else None
        session = getattr(request, "session_hash", None) or "?"
        if subject is None or not repeats.fresh(session, (conv["id"], int(at), subject.answer, verdict)):
            return gr.skip()
        try:
            record = make_feedback(subject.question, subject.answer, subject.citations, verdict, conv["id"])
            append_feedback(feedback_path(Path(index or settings.index)), record)
        except OSError as exc:  # a full or read-only disk is said, never a traceback
            log.warning("feedback not saved: %s", exc)
            gr.Warning("Your feedback could not be saved.")
            return f"⚠️ Feedback not saved: {inert(exc.strerror or str(exc))}."
        said = {"up": "👍 Thanks: noted as helpful.", "down": "👎 Thanks: noted as not helpful.",
                "flagged": "🚩 Thanks: the citation is flagged as wrong."}
        return said[verdict]

    def keep_turn(state, answered):
        """Store a finished question and answer in the conversation it was asked in, read from the browser
        as it is now: a conversation switched to, renamed or deleted meanwhile stays so."""
        if not answered:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        before = current_conversation(conversations(state))["title"]
        state = add_turns(state, answered)
        shown = gr.skip() if answered["conversation"] == state["current"] else \
            chat_messages_of(current_conversation(state))  # the chat shows the answer already
        choices, title = listing(state)
        # the title box is left alone unless this answer named the conversation: a title being typed stays
        return state, shown, choices, title if title != before else gr.skip()

    def add_files(files, chosen, progress=gr.Progress()):
        if not files:
            return "No file chosen.", *library(chosen)
        stored, rejected, notes, restored = [], [], [], []
        try:
            folder, sources = upload_target(index, settings)
            left_out = set(excluded_documents(index, settings))
        except (IndexProblem, OSError) as exc:
            return f"⚠️ Cannot add reports: {html.escape(str(exc))}", *library(chosen)
        for f in files:
            path = Path(getattr(f, "name", f))
            try:
                kept = store_upload(path, folder, settings.upload_max_bytes)
                if kept.status != "identical":
                    record_upload(kept.path, folder)
            except (LoadError, OSError) as exc:
                rejected.append(str(exc))
                continue
            finally:
                path.unlink(missing_ok=True)  # Gradio's temporary copy: the corpus has its own now
            doc_id = kept.path.relative_to(folder).as_posix()
            if doc_id in left_out:  # uploading a removed report again brings it back
                restored.append(doc_id)
            elif kept.status == "identical":
                notes.append(f"{path.name} was already indexed (as {kept.path.name}), nothing to add")
            if kept.status != "identical" or doc_id in left_out:
                stored.append(kept.path.name)
            if kept.status == "renamed":
                notes.append(f"a different {path.name} already exists, so this one was saved as {kept.path.name}")
        message = ""
        if stored:
            try:
                if restored:
                    remove_from_index(restored, index=index, settings=settings, restore=True)
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
        return message, *library(chosen)

    def ask_remove(doc_id):
        if not doc_id:
            return gr.update(visible=False), "", "", "Choose a report to remove first."
        try:
            info = next((d for d in document_list(index, settings) if d.doc_id == doc_id), None)
        except (IndexProblem, OSError) as exc:
            return gr.update(visible=False), "", "", f"⚠️ Could not read the index: {inert(str(exc))}"
        return gr.update(visible=info is not None), removal_plan(info, Path(settings.corpus).resolve()), \
            doc_id if info is not None else "", "" if info is not None else removal_plan(None, Path("."))

    def reindexed(action, doc_id: str, failed: str, progress) -> str:
        """Run a remove or put-back (each re-indexes) with the progress bar; a failure is a message."""
        try:
            return action(doc_id, index, settings, lambda stage, done, total: progress(
                done / max(total, 1), desc=progress_label(stage, done, total)))
        except Exception as exc:  # shown, never a traceback
            log.exception("%s failed", failed.format(doc_id))
            return f"⚠️ Could not {inert(failed.format(doc_id))}: {html.escape(str(exc))}"

    def confirm_remove(doc_id, chosen, progress=gr.Progress()):
        if not doc_id:
            return gr.update(visible=False), "", "Nothing to remove.", *library(chosen)
        message = reindexed(remove_report, doc_id, "remove {}", progress)
        return gr.update(visible=False), "", message, *library(chosen)

    def put_back(doc_id, chosen, progress=gr.Progress()):
        if not doc_id:
            return "Choose a removed report first.", *library(chosen)
        return reindexed(restore_report, doc_id, "put {} back", progress), *library(chosen)

    def export_current(state):
        conv = current_conversation(conversations(state))
        if not conv["turns"]:
            gr.Warning("Nothing to export yet: ask a question first.")
            return ""
        return conversation_markdown(conv)

    def start_new(state):
        state = conversations(state)
        if current_conversation(state)["turns"]:  # an empty conversation is reused, not piled up
            fresh = new_conversation()
            state["items"].insert(0, fresh)
            state["current"] = fresh["id"]
        return state, [], *listing(state), ""

    def switch(choice, state):
        state = conversations(state)
        if any(c["id"] == choice for c in state["items"]):
            state["current"] = choice
        return state, chat_messages_of(current_conversation(state)), *listing(state)

    def rename(title, state):
        state = conversations(state)
        title = " ".join(str(title or "").split())[:TITLE_MAX]
        if not title:
            gr.Warning("Type a title first.")
        else:
            current_conversation(state)["title"] = title
        return state, *listing(state)

    def delete_current(state):
        state = conversations(state)
        state["items"] = [c for c in state["items"] if c["id"] != state["current"]]
        state = conversations(state)  # the next one, or a new empty one
        return state, chat_messages_of(current_conversation(state)), *listing(state)

    def clear_current(state):
        state = conversations(state)
        current_conversation(state)["turns"] = []
        return state, *listing(state)

    def show_conversations(state):
        """Quick and writing nothing: a question asked while the page loads is neither hidden nor lost."""
        state = conversations(state)
        shown = chat_messages_of(current_conversation(state))
        return shown or gr.skip(), *listing(state)  # an empty chat is what the page shows already

    def restrict(chosen):
        return list(chosen or []), scope_line(list(chosen or []), len(documents()))

    secret = browser_secret(index, settings)
    # delete_cache: Gradio's temporary upload copies older than an hour go, and all of them at shutdown.
    with gr.Blocks(title="Report QA", delete_cache=(3600, 3600)) as app:
        convs = gr.BrowserState({}, storage_key="qa-conversations-v1", secret=secret)
        scope_saved = gr.BrowserState([], storage_key="qa-scope-v1", secret=secret)
        # Hidden components, not gr.State: a gr.State makes every client hold a heartbeat connection,
        # which keeps the server from finishing its shutdown (and deleting temporary uploads) in time.
        pending = gr.Textbox(visible=False)  # the report a confirmation is about
        answered = gr.JSON(visible=False)  # the last finished question and answer, until stored
        # keyboard users reach the question first instead of tabbing through every earlier answer
        gr.HTML('<a class="qa-skip" href="#question" id="skip-to-question" '
                'onclick="event.preventDefault(); document.querySelector(\'#question textarea\').focus()">'
                'Skip to the question</a>')
        gr.Markdown("## Ask the reports\nEvery claim cites the sentence it comes from; click a marker to see it.")
        # a marker click writes its source here and presses the hidden button (PAGE_JS)
        source_request = gr.Textbox(visible="hidden", elem_id="source-request", label="Source request")
        source_open = gr.Button("Open source", visible="hidden", elem_id="source-open")
        page_state = gr.JSON(visible=False)  # the PDF page the panel shows
        with gr.Row():
            with gr.Column(scale=3):
                # thumbs, and a flag for a wrong citation: kept in <index>/feedback.jsonl
                chatbot = gr.Chatbot(label="Chat", height=560, elem_id="chat", autoscroll=False,
                                     buttons=["copy", "copy_all"],  # no share button: it had no label and did nothing
                                     feedback_options=("Like", "Dislike", WRONG_CITATION))
                feedback_status = gr.Markdown(elem_id="feedback-status")
                scope = gr.Markdown(elem_id="scope")
                question = gr.Textbox(placeholder="Ask a question about the reports…", label="Question", show_label=False,
                                      elem_id="question", max_length=settings.max_question_chars * 10)
                with gr.Row():
                    ask = gr.Button("Ask", variant="primary", elem_id="ask")
                    # stops the answer being written (an LLM's can take a while); nothing of it is kept
                    stop = gr.Button("Stop", elem_id="stop", visible=settings.llm != "none")
                    new = gr.Button("New conversation", elem_id="new-conversation")
            with gr.Column(scale=2, visible=False, elem_id="source-panel") as panel:
                with gr.Row():
                    gr.Markdown("**Source**")
                    close_panel = gr.Button("Close", size="sm", elem_id="source-close", scale=0, min_width=80)
                source_text = gr.HTML(elem_id="source-text")
                with gr.Row(visible=False, elem_id="page-nav") as page_nav:
                    prev_page = gr.Button("◀ Previous page", size="sm", elem_id="page-prev")
                    next_page = gr.Button("Next page ▶", size="sm", elem_id="page-next")
                page_view = gr.HTML(elem_id="source-page")
            with gr.Column(scale=1, min_width=300):
                conv_list = gr.Radio([], label="Conversations", elem_id="conversations")
                title = gr.Textbox(label="Title of this conversation", max_lines=1, elem_id="conv-title")
                with gr.Row():
                    rename_btn = gr.Button("Rename", size="sm", elem_id="rename")
                    export = gr.Button("Export Markdown", size="sm", elem_id="export")
                    delete_conv = gr.Button("Delete", size="sm", variant="stop", elem_id="delete-conversation")
                exported = gr.Textbox(visible=False, elem_id="export-md")
                k = gr.Slider(1, MAX_PASSAGES, value=passages(settings.top_k), step=1, label="Passages to retrieve")
                modes = ["extractive"] + ([f"LLM ({settings.llm})"] if settings.llm != "none" else [])
                mode = gr.Radio(modes, value=modes[-1], label="Answer mode", interactive=len(modes) > 1,
                                elem_id="mode")
                doc_filter = gr.CheckboxGroup(choices=documents(), label="Documents (tick to restrict)",
                                              elem_id="documents")
                upload = gr.File(label=f"Add reports ({' '.join(UPLOAD_SUFFIXES)})", file_count="multiple",
                                 file_types=UPLOAD_SUFFIXES, elem_id="upload")
                status = gr.Markdown(elem_id="upload-status")
        with gr.Accordion("Reports in the index", open=True, elem_id="reports"):
            table = gr.HTML(elem_id="doc-table")
            with gr.Row():
                remove_choice = gr.Dropdown([], value=None, label="Report to remove", elem_id="remove-choice", scale=3)
                remove = gr.Button("Remove…", variant="stop", elem_id="remove", scale=1)
            with gr.Group(visible=False, elem_id="remove-confirm") as confirm:
                plan = gr.Markdown(elem_id="remove-plan")
                with gr.Row():
                    yes = gr.Button("Yes, remove", variant="stop", elem_id="remove-yes")
                    no = gr.Button("Cancel", elem_id="remove-no")
            with gr.Row(visible=False, elem_id="restore-row") as restore_row:
                restore_choice = gr.Dropdown([], value=None, label="Removed reports (files kept)",
                                             elem_id="restore-choice", scale=3)
                restore = gr.Button("Put back", elem_id="restore", scale=1)
            removed = gr.Markdown(elem_id="remove-status")

        shelf = [doc_filter, table, remove_choice, scope, restore_row, restore_choice]
        # Gradio hands gr.Request / gr.LikeData to a parameter by its type hint, resolved in this
        # module's globals where gradio is not imported (it loads only with the app): set them here
        respond.__annotations__ = {"request": gr.Request}
        stop_answer.__annotations__ = {"request": gr.Request}
        give_feedback.__annotations__ = {"data": gr.LikeData, "request": gr.Request}
        # always_last: a second marker clicked while the first one's source loads is shown, not dropped
        source_open.click(open_source, [source_request], [panel, source_text, page_view, page_nav, page_state],
                          api_name=False, trigger_mode="always_last").then(None, None, None, js=SCROLL_TO_SOURCE)
        prev_page.click(lambda state: turn_page(state, -1), [page_state], [page_view, page_nav, page_state],
                        api_name=False)
        next_page.click(lambda state: turn_page(state, 1), [page_state], [page_view, page_nav, page_state],
                        api_name=False)
        close_panel.click(lambda: gr.update(visible=False), None, [panel], api_name=False, js=FORGET_SOURCE)
        stop.click(stop_answer, None, None, api_name=False, queue=False)
        chatbot.like(give_feedback, [chatbot, convs], [feedback_status], api_name=False)
        for trigger in (question.submit, ask.click):
            trigger(respond, [question, chatbot, convs, k, doc_filter, mode], [chatbot, question, answered], api_name=False
                    ).then(keep_turn, [convs, answered], [convs, chatbot, conv_list, title], api_name=False
                           ).then(None, None, None, js=SCROLL_TO_ANSWER)  # the answer's start, not its last source
        new.click(start_new, [convs], [convs, chatbot, conv_list, title, question], api_name=False)
        conv_list.input(switch, [conv_list, convs], [convs, chatbot, conv_list, title], api_name=False)
        for trigger in (rename_btn.click, title.submit):
            trigger(rename, [title, convs], [convs, conv_list, title], api_name=False)
        delete_conv.click(delete_current, [convs], [convs, chatbot, conv_list, title], api_name=False)
        chatbot.clear(clear_current, [convs], [convs, conv_list, title], api_name=False)  # the trash icon forgets it too
        export.click(export_current, [convs], [exported], api_name=False).then(None, [exported], None,
                                                                               js=DOWNLOAD_MARKDOWN)
        doc_filter.change(restrict, [doc_filter], [scope_saved, scope], api_name=False)
        upload.upload(add_files, [upload, doc_filter], [status, *shelf], api_name=False)
        remove.click(ask_remove, [remove_choice], [confirm, plan, pending, removed], api_name=False)
        no.click(lambda: (gr.update(visible=False), ""), None, [confirm, pending], api_name=False)
        restore.click(put_back, [restore_choice, doc_filter], [removed, *shelf], api_name=False)
        yes.click(confirm_remove, [pending, doc_filter], [confirm, pending, removed, *shelf], api_name=False)
        app.load(show_conversations, [convs], [chatbot, conv_list, title], api_name=False)
        app.load(library, [scope_saved], shelf, api_name=False)  # reads the index: apart, so the chat is not kept waiting

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

