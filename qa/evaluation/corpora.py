"""Indexes of the corpora eval runs use: cached under ``indexes/``, read from their data by path."""
from __future__ import annotations

import json
import re
from pathlib import Path

from qa.api import index_paths, tqdm_progress
from qa.settings import PROJECT_ROOT, Settings


def cache_dir(path: Path, settings: Settings) -> Path:
    """Benchmark indexes are cached under indexes/, one per corpus and settings."""
    name = re.sub(r"[^\w.-]+", "-", path.resolve().name)
    return PROJECT_ROOT / "indexes" / f"bench-{name}-{settings.fingerprint()}"


def corpus_spec(path: Path) -> dict | None:
    """The sidecar ``<set>.corpus.json`` naming the set's articles, if the set has one."""
    side = path.with_suffix(".corpus.json")
    if not side.exists():
        return None
    spec = json.loads(side.read_text(encoding="utf-8"))
    spec["corpus"] = (PROJECT_ROOT / spec["corpus"]).resolve()
    if not spec["corpus"].exists():
        raise ValueError(f"{side}: the articles are read from {spec['corpus']}, which is missing")
    return spec


def set_index(path: Path, settings: Settings, *, progress: bool = True) -> Path:
    """Build or reuse the index of a set's own articles (read by path; nothing copied into the repo)."""
    spec = corpus_spec(path)
    assert spec is not None
    wanted = set(spec.get("gold", [])) | set(spec.get("distractors", []))
    cache = PROJECT_ROOT / "indexes" / f"evalset-{path.stem}-{settings.fingerprint()}"
    cache.mkdir(parents=True, exist_ok=True)
    corpus = cache / "corpus.jsonl"
    lines = []
    with open(spec["corpus"], encoding="utf-8") as fh:
        for line in fh:
            if line.strip() and json.loads(line)["_id"] in wanted:
                lines.append(line.rstrip("\n"))
    body = "\n".join(lines) + "\n"
    if not corpus.exists() or corpus.read_text(encoding="utf-8") != body:
        corpus.write_text(body, encoding="utf-8")
    index_paths([corpus], index=cache / "index", settings=settings, progress=tqdm_progress() if progress else None)
    return cache / "index"


def corpus_index(folder: Path, settings: Settings, *, progress: bool = True) -> Path:
    """Build or reuse an index of another copy of a set's reports (``--corpus``, e.g. the seeds as PDF)."""
    name = re.sub(r"[^\w.-]+", "-", str(folder.resolve()).strip("/"))[-80:]
    target = PROJECT_ROOT / "indexes" / f"corpus-{name}-{settings.fingerprint()}"
    index_paths([folder], index=target, settings=settings, progress=tqdm_progress() if progress else None)
    return target
