"""The ``qa`` command: thin wrappers over the API (index, ask, check, eval, verify, chat, bench)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from typing import Sequence

from qa.load import describe_formats
from qa.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qa`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    # On the handler, not the loggers: bm25s sets its own logger to DEBUG when imported.
    handler.setLevel(logging.WARNING)
    logging.basicConfig(level=logging.WARNING, format="qa: %(levelname)s: %(message)s", handlers=[handler])
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        settings = Settings.from_env(
            index=getattr(args, "index", None),
            top_k=getattr(args, "k", None),
            llm=getattr(args, "llm", None),
            store=getattr(args, "store", None),
        )
        return args.func(args, settings)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ValueError as exc:
        print(f"qa: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:
        print(f"qa: error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qa", description="Answer questions about reports, with citations.")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("index", help="index reports (incremental: only new or changed files are embedded)")
    p.add_argument("paths", nargs="*", help=f"files or folders of {describe_formats()} (default: the seed corpus)")
    p.add_argument("--index", help="index directory (default: indexes/default or QA_INDEX)")
    p.add_argument("--rebuild", action="store_true", help="ignore the existing index and build from scratch")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="load, chunk and embed on Ray: a local cluster, or ADDRESS (auto, ray://HOST:10001)")
    p.add_argument("--store", help="milvus:PATH.db or milvus://HOST:PORT (default: local files, or QA_STORE)")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("ask", help="answer a question with citations")
    p.add_argument("question")
    p.add_argument("--index")
    p.add_argument("--k", type=int, help="passages to retrieve")
    p.add_argument("--doc", action="append", dest="docs", help="restrict to this document id (repeatable)")
    p.add_argument("--llm", help="none | local | openai:MODEL | ollama:MODEL")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    p.add_argument("--store", help="milvus:PATH.db or milvus://HOST:PORT (default: local files, or QA_STORE)")
    p.set_defaults(func=_cmd_ask)

    p = sub.add_parser("check", help="verify an index's checksums and offsets and say what is wrong")
    p.add_argument("index", nargs="?", help="index directory (default: indexes/default or QA_INDEX)")
    p.add_argument("--store", help="the Milvus store of an index served by Milvus (or QA_STORE)")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("eval", help="measure answers, citations, retrieval and abstention")
    p.add_argument("path", nargs="?", help="eval set (.jsonl) or a benchmark folder (default: eval/seeds.jsonl)")
    p.add_argument("--index")
    p.add_argument("--k", type=int)
    p.add_argument("--llm")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    p.add_argument("--out", help="write summary.json, per-item items.jsonl, report.md and chart.png here")
    p.add_argument("--compare", help="a previous summary.json to diff against")
    p.add_argument("--store", help="milvus:PATH.db or milvus://HOST:PORT (default: local files, or QA_STORE)")
    p.add_argument("--limit", type=int, help="only the first N items / questions")
    p.add_argument("--split", help="QA sets: only the items of this split (dev, test)")
    p.add_argument("--corpus", help="QA sets: answer from an index of this folder (another copy of the set's "
                                    "reports, e.g. as PDF; evidence matched by file stem)")
    p.add_argument("--verifier", metavar="SET", help="instead: the claim-checking benchmark of the citation "
                   "verifier; SET is all or a comma list of built, scifact, rgb (see eval/README.md)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("verify", help="mark each sentence of a text as supported, unsupported or contradicted")
    p.add_argument("file", help="a text file (- for standard input)")
    p.add_argument("--index", help="index to check against (default: the index of the seed reports)")
    p.add_argument("--k", type=int, help="passages retrieved per sentence")
    p.add_argument("--json", action="store_true", help="print the verdicts as one JSON object on the last line")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("bench", help="speed and memory against llama-index's stock pipeline")
    p.add_argument("corpus", nargs="?", help="folder or .jsonl corpus (default: the seed corpus)")
    p.add_argument("--questions", help="a .jsonl of questions (default: the eval set, or the benchmark's own)")
    p.add_argument("--limit", type=int, default=50, help="questions to time")
    p.add_argument("--k", type=int)
    p.add_argument("--no-stock", action="store_true", help="skip the llama-index pipeline")
    p.add_argument("--store", help="milvus:PATH.db or milvus://HOST:PORT (default: local files, or QA_STORE)")
    p.add_argument("--work", help="keep the built indexes here (default: a temporary folder)")
    p.add_argument("--scale", help="instead: index sizes to measure, e.g. 10000,100000,1000000 (synthetic "
                                   "vectors, real sentences from CORPUS)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on the last line")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("chat", help="serve the chat UI")
    p.add_argument("--index")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--store", help="milvus:PATH.db or milvus://HOST:PORT (default: local files, or QA_STORE)")
    p.add_argument("--llm")
    p.set_defaults(func=_cmd_chat)
    return parser


def _cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    from qa.api import index_paths, tqdm_progress

    paths = args.paths or [str(settings.corpus)]
    report, skipped = index_paths(paths, settings=settings, rebuild=args.rebuild, progress=tqdm_progress(),
                                  ray=args.ray)
    for s in skipped:
        print(f"skipped {s.path}: {s.reason}", file=sys.stderr)
    for doc_id in report.excluded:
        print(f"left out {doc_id}: removed from this index in the chat (listed in "
              f"{settings.index}/excluded.json; uploading it again brings it back)", file=sys.stderr)
    print(f"indexed into {settings.index}: {len(report.added)} added, {len(report.changed)} changed, "
          f"{len(report.removed)} removed, {report.unchanged} unchanged; embedded {report.embedded_passages} "
          f"passages and {report.embedded_sentences} sentences in {report.seconds:.1f}s")
    if report.keyword.startswith("rebuilt"):
        print(f"keyword index {report.keyword}; later updates only tokenize what changed", file=sys.stderr)
    return 0


def _cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    import time
    from pathlib import Path

    from qa.index import check_index, read_manifest

    path = settings.index
    started = time.perf_counter()
    problems = check_index(path, settings)
    if problems:
        for problem in problems:
            print(f"{path}: {problem}", file=sys.stderr)
        print(f"rebuild it with `qa index CORPUS --index {path} --rebuild`", file=sys.stderr)
        return 1
    _, manifest = read_manifest(Path(path))
    print(f"{path}: sound ({len(manifest['documents'])} documents, {manifest['passages']} passages; "
          f"{len(manifest.get('checksums', {}))} checksums and all offsets verified in "
          f"{time.perf_counter() - started:.1f}s)")
    return 0


def _cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from qa.api import answer

    result = answer(args.question, index=settings.index if args.index else None, settings=settings,
                    doc_ids=args.docs)
    if args.json:
        print(json.dumps(answer_json(result), ensure_ascii=False))
        return 0
    print(result.text)
    if result.notice and result.mode != "extractive":
        print(f"\n({result.notice})")
    if result.citations:
        print("\nSources:")
        for n, c in enumerate(result.citations, start=1):
            where = f"{c.doc_id}" + (f", page {c.page}" if c.page is not None else "") + f", chars {c.start}-{c.end}"
            print(f"[{n}] {where}\n    “{c.quote}”")
    return 0


def answer_json(result) -> dict:
    """The JSON shape of an answer for ``qa ask --json``."""
    return {
        "text": result.text,
        "abstained": result.abstained,
        "citations": [dataclasses.asdict(c) for c in result.citations],
        "support": result.support,
        "mode": result.mode,
        "notice": result.notice,
    }


def _cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from qa.evaluation import run_cli

    return run_cli(args, settings)


def _cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from qa.bench import default_questions, format_bench, run_bench

    corpus = Path(args.corpus or settings.corpus)
    if not corpus.exists():
        raise ValueError(f"no corpus at {corpus}")
    if args.scale:
        from qa.bench import format_scale, run_scale

        try:
            sizes = [int(x.replace("_", "")) for x in args.scale.split(",")]
        except ValueError as exc:
            raise ValueError(f"--scale takes sizes like 10000,100000: {exc}") from exc
        rows = run_scale(sizes, corpus, store=settings.store)
        print(format_scale(rows))
        if args.json:
            print(json.dumps(rows))
        return 0
    if args.questions:
        rows = [json.loads(line) for line in open(args.questions, encoding="utf-8") if line.strip()]
        questions = [r.get("question") or r.get("text") for r in rows][: args.limit]
    else:
        questions = default_questions(corpus, args.limit)
    if not questions:
        raise ValueError("no questions to time: pass --questions FILE")
    result = run_bench(corpus, questions, settings, k=settings.top_k, stock=not args.no_stock,
                       work=Path(args.work) if args.work else None, store=settings.store)
    print(format_bench(result))
    if args.json:
        print(json.dumps(result))
    return 0


def _cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    from qa.ui import serve

    serve(settings, settings.index if args.index else None, host=args.host, port=args.port)
    return 0


def _cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from qa.api import verify_text

    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    checks = verify_text(text, index=settings.index if args.index else None, settings=settings)
    if args.json:
        print(json.dumps({"sentences": [c.to_json() for c in checks]}, ensure_ascii=False))
        return 0
    marks = {"supported": "✓", "unsupported": "?", "contradicted": "✗"}
    for c in checks:
        label = c.verdict + (" (uncertain)" if c.uncertain else "")
        print(f"{marks.get(c.verdict, ' ')} {label}: {c.text}")
        if c.citation is not None:
            where = c.citation.doc_id + (f", page {c.citation.page}" if c.citation.page is not None else "")
            print(f"    {where}, chars {c.citation.start}-{c.citation.end}: “{c.citation.quote}”")
        if c.reason and c.verdict != "supported":
            print(f"    ({c.reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
