"""``qa eval``: one module per dataset, each exposing ``detect(path)``, ``run(path, settings, args)``
and ``headline(summary)``; shared metrics in :mod:`qa.evaluation.metrics`, reports in
:mod:`qa.evaluation.report`. Every metric is defined in eval/README.md.

Runs are deterministic (no sampling), each item's outcome is kept so failures can be
found, and two runs can be diffed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qa.evaluation import beir, feedback, financebench, qaset, rationales, realtimeqa, rgb
from qa.settings import PROJECT_ROOT, Settings

# The first whose ``detect`` accepts the path runs it; a plain .jsonl QA set comes last.
DATASETS = (beir, realtimeqa, financebench, rgb, rationales, feedback, qaset)
DEFAULT_SET = PROJECT_ROOT / "eval" / "seeds.jsonl"


def dataset_for(path: Path):
    """The runner module for ``path``, or a clear error."""
    for module in DATASETS:
        if module.detect(path):
            return module
    raise ValueError(f"{path} is not an eval set (.jsonl) or a benchmark folder this tool knows")


def run_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``qa eval``: run, print a table, optionally write files and diff against a past run."""
    from qa.evaluation.report import format_diff, write_outputs

    path = Path(args.path) if args.path else DEFAULT_SET
    if getattr(args, "verifier", None):  # the claim-checking benchmark: its own sets, no QA set
        from qa.evaluation import verifier as module
    else:
        if not path.exists():
            raise ValueError(f"no eval set at {path}")
        module = dataset_for(path)
    summary, rows = module.run(path, settings, args)
    print(module.headline(summary))
    if args.compare:
        print(format_diff(json.loads(Path(args.compare).read_text()), summary))
    if args.out:
        write_outputs(Path(args.out), summary, rows)
        print(f"wrote {args.out}/summary.json, items.jsonl, report.md", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    return 0
