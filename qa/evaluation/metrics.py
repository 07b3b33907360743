"""Metrics shared by every eval runner (and by ``qa bench``): matching, ranking and averaging."""
from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "\xa0": " "})


def normalize(text: str) -> str:
    """Case, curly quotes and whitespace folded, for matching answers and evidence."""
    return re.sub(r"\s+", " ", text.translate(_QUOTES)).strip().casefold()


def locate(text: str, quote: str) -> tuple[int, int] | None:
    """Span of ``quote`` in ``text``, matching modulo curly quotes, case and whitespace."""
    folded, mapping = _fold_with_map(text)
    needle = normalize(quote)
    at = folded.find(needle)
    if at < 0 or not needle:
        return None
    return mapping[at], mapping[at + len(needle) - 1] + 1


def _fold_with_map(text: str) -> tuple[str, list[int]]:
    out: list[str] = []
    mapping: list[int] = []
    prev_space = True
    for i, ch in enumerate(text.translate(_QUOTES)):
        if ch.isspace():
            if prev_space:
                continue
            out.append(" ")
            prev_space = True
        else:
            out.append(ch.casefold() if len(ch.casefold()) == 1 else ch)
            prev_space = False
        mapping.append(i)
    return "".join(out), mapping


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """TREC/BEIR qrels (query, doc, grade), positive grades only."""
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.strip().split("\t")
            if len(parts) < 3 or parts[0] in ("query-id", "qid"):
                continue
            qid, doc, rel = parts[0], parts[1], parts[-1]
            if int(rel) > 0:
                qrels[qid][doc] = int(rel)
    return dict(qrels)


def ndcg(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    """nDCG@k with graded gains ``rel / log2(rank + 1)``, as trec_eval computes it."""
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(relevant.values(), reverse=True)[:k]))
    return dcg / ideal if ideal else 0.0


def recall(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    """Share of the relevant ids found in the top ``k``."""
    return len(set(ranked[:k]) & set(relevant)) / len(relevant) if relevant else 0.0


def mean(values: Iterable) -> float | None:
    """Mean of the values that are not None, rounded for reports; None if there are none."""
    values = [v for v in values if v is not None]
    return round(statistics.fmean(values), 4) if values else None


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` (0-100)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def doc_ranking(passages: Iterable, depth: int | None = None) -> list[str]:
    """Document ids in the order their best passage ranks."""
    docs: list[str] = []
    for p in passages:
        if p.doc_id not in docs:
            docs.append(p.doc_id)
            if depth is not None and len(docs) >= depth:
                break
    return docs
