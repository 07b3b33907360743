"""``qa eval --verifier SET``: how often the citation verifier keeps true claims and lets wrong ones through.

Every claim goes through the same call an LLM draft does (:func:`qa.cite.verify`, the
claim as a one-sentence draft citing every passage of the document it is checked
against), so the figures are those of the LLM path. Three parts (SET = ``all`` or a
comma list of them):

- ``scifact``: SciFact dev claims against their abstracts. SUPPORT pairs should be kept
  with the citation on a gold rationale sentence; CONTRADICT pairs and claims whose
  abstract does not address them (no evidence) should be rejected.
- ``built``: claims made from the gold evidence of eval/seeds.jsonl (and eval/news.jsonl
  when present) by :mod:`qa.evaluation.claims`: true restatements and wrong ones, one
  family of error at a time.
- ``rgb``: RGB en_fact, the fake answer stated as a claim (the counterfactual passage's
  sentence) against the correct passages; the matching correct sentence is the true claim.

Per family: true claims kept, wrong claims rejected, the mean support score, and the
separation of support scores (AUC: the chance a true claim of the same part scores
above a wrong one of this family).
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from qa.api import get_engine, index_paths, tqdm_progress
from qa.chunk import split_sentences
from qa.cite import verify
from qa.evaluation.claims import TRUE_FAMILIES, WRONG_FAMILIES, Claim, build_claims
from qa.evaluation.corpora import corpus_spec
from qa.settings import PROJECT_ROOT, Settings

NAME = "verifier"
Spans = list[tuple[int, int]]
PARTS = ("built", "scifact", "rgb")
DATA = PROJECT_ROOT.parent / "shared" / "data"
SETS = (PROJECT_ROOT / "eval" / "seeds.jsonl", PROJECT_ROOT / "eval" / "news.jsonl")


def parts_of(spec: str) -> list[str]:
    """The parts named by ``--verifier`` (``all`` or a comma list)."""
    names = list(PARTS) if spec in {"all", ""} else [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in PARTS]
    if bad:
        raise ValueError(f"--verifier takes all or a comma list of {', '.join(PARTS)}, not {', '.join(bad)}")
    return names


def check_claims(claims: list[tuple[Claim, Spans]], index_dir: Path | None,
                 settings: Settings, progress: bool = True) -> list[dict]:
    """Run the verifier on each claim against its document; ``gold`` spans (start, end) in that
    document say where a kept true claim must cite."""
    engine = get_engine(index_dir, settings)
    index = engine.index
    rows = []
    for n, (claim, gold) in enumerate(claims, start=1):
        passages = [index.store.passage(int(p)) for p in index.store.ids_of_documents([claim.doc_id])]
        t0 = time.perf_counter()
        answer, checks = verify("", claim.text, passages, index, engine.embedder, settings) if passages else (None, [])
        ms = (time.perf_counter() - t0) * 1000
        kept = bool(checks) and all(c.supported for c in checks)
        verdicts = [getattr(c, "verdict", "supported" if c.supported else "unsupported") for c in checks]
        cited = answer.citations[0] if answer is not None and answer.citations else None
        on_gold = bool(kept and cited and cited.doc_id == claim.doc_id
                       and any(cited.start < b and a < cited.end for a, b in gold))
        score = min((getattr(c, "score", c.similarity) for c in checks), default=0.0)
        rows.append({"family": claim.family, "true": claim.true, "claim": claim.text, "doc": claim.doc_id,
                     "reasons": [getattr(c, "reason", "") for c in checks],
                     "gold": claim.gold, "kept": kept, "on_gold": on_gold, "verdicts": verdicts,
                     "score": round(float(score), 4), "quote": cited.quote if cited else None,
                     "notice": answer.notice if answer is not None else "", "ms": round(ms, 2)})
        if progress and n % 25 == 0:
            print(f"\r{n}/{len(claims)} claims", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    return rows


def built_claims(settings: Settings) -> list[tuple[list[tuple[Claim, Spans]], Path | None]]:
    """Claims from the gold evidence of each QA set present, with the index each is checked on."""
    out = []
    for path in SETS:
        if not path.exists():
            continue
        gold = []
        for line in path.open(encoding="utf-8"):
            if not line.strip():
                continue
            item = json.loads(line)
            if item.get("split", "dev") != "dev":  # the test split stays unseen while the rules are tuned
                continue
            gold += [(ev["doc"], ev["quote"]) for ev in item.get("evidence") or [] if ev.get("doc")]
        index_dir = _evidence_index(path, {d for d, _ in gold}, settings) if corpus_spec(path) else None
        index = get_engine(index_dir, settings).index
        evidence = [(d, q) for d, q in gold if index.store.has_document(d)]
        docs = sorted({d for d, _ in evidence})
        texts = {d: index.store.document(d).text for d in docs}
        claims = build_claims(evidence, texts)
        out.append(([(c, _find(texts.get(c.doc_id, ""), c.gold)) for c in claims], index_dir))
    return out


def _evidence_index(path: Path, docs: set[str], settings: Settings) -> Path:
    """An index of only the set's articles that hold gold evidence (claims are checked against their
    own article; the set's distractors are not needed), read from its corpus by path."""
    spec = corpus_spec(path)
    assert spec is not None
    lines = []
    with open(spec["corpus"], encoding="utf-8") as fh:
        for line in fh:
            if line.strip() and json.loads(line)["_id"] in docs:
                lines.append(line.rstrip("\n"))
    cache = PROJECT_ROOT / "indexes" / f"verifier-{path.stem}-{settings.fingerprint()}"
    return _cached_index(cache, "\n".join(sorted(lines)) + "\n", settings)


def scifact_claims(data: Path, settings: Settings) -> tuple[list[tuple[Claim, Spans]], Path]:
    """SciFact dev claims paired with each abstract they cite; each abstract one sentence per paragraph."""
    folder = data / "scifact"
    claims_raw = [json.loads(line) for line in (folder / "claims_dev_evidence.jsonl").open(encoding="utf-8")]
    wanted = {d for c in claims_raw for d in c.get("cited_doc_ids", [])}
    sentences: dict[str, list[str]] = {}
    for line in (folder / "corpus_sentences.jsonl").open(encoding="utf-8"):
        rec = json.loads(line)
        if rec["_id"] in wanted:
            sentences[rec["_id"]] = [" ".join(s.split()) for s in rec["sentences"]]
    cache = PROJECT_ROOT / "indexes" / f"verifier-scifact-{settings.fingerprint()}"
    body = "".join(json.dumps({"_id": d, "title": "", "text": "\n\n".join(s)}) + "\n"
                   for d, s in sorted(sentences.items()))
    index_dir = _cached_index(cache, body, settings)
    out = []
    for c in claims_raw:
        for doc in c.get("cited_doc_ids", []):
            if doc not in sentences:
                continue
            ev = (c.get("evidence") or {}).get(doc)
            sents = sentences[doc]
            offsets, pos = [], 0
            for s in sents:
                offsets.append((pos, pos + len(s)))
                pos += len(s) + 2
            if ev is None:
                out.append((Claim("scifact_unrelated", c["text"], doc, "", False), []))
                continue
            gold_ids = sorted({i for group in ev["sentence_sets"] for i in group})
            gold = " ".join(sents[i] for i in gold_ids)
            label = ev["label"]
            claim = Claim("scifact_support" if label == "SUPPORT" else "scifact_contradict", c["text"], doc, gold,
                          label == "SUPPORT")
            out.append((claim, [offsets[i] for i in gold_ids]))
    return out, index_dir


def rgb_claims(data: Path, settings: Settings) -> tuple[list[tuple[Claim, Spans]], Path]:
    """RGB en_fact: each counterfactual sentence stating the fake answer, and its correct twin."""
    items = [json.loads(line) for line in (data / "rgb" / "en_fact.jsonl").open(encoding="utf-8") if line.strip()]
    lines, out = [], []
    for item in items:
        true_alts = item["answer"] if isinstance(item["answer"], list) else [item["answer"]]
        true_alts = [str(a) for alt in true_alts for a in (alt if isinstance(alt, list) else [alt])]
        fake = str(item["fakeanswer"])
        doc = f"q{item['id']}"
        positives = [" ".join(str(t).split()) for t in item.get("positive") or []]
        lines.append(json.dumps({"_id": doc, "title": "", "text": "\n\n".join(positives)}))
        for n, wrong in enumerate(item.get("positive_wrong") or []):
            wrong = " ".join(str(wrong).split())
            sentence = _sentence_with(wrong, fake)
            if sentence is None:
                continue
            out.append((Claim("rgb_fake", sentence, doc, "", False), []))
            if n < len(positives):
                twin = _sentence_with(positives[n], *true_alts)
                if twin is not None:
                    out.append((Claim("rgb_true", twin, doc, twin, True), _find("\n\n".join(positives), twin)))
            break
    cache = PROJECT_ROOT / "indexes" / f"verifier-rgb-{settings.fingerprint()}"
    return out, _cached_index(cache, "\n".join(lines) + "\n", settings)


def run_verifier_eval(spec: str, settings: Settings, *, limit: int | None = None, data: Path = DATA,
                      progress: bool = True) -> tuple[dict, list[dict]]:
    """The benchmark: per-family rows and the summary."""
    rows: list[dict] = []
    for part in parts_of(spec):
        if part == "built":
            for claims, index_dir in built_claims(settings):
                rows += [dict(r, part=part) for r in check_claims(claims[:limit], index_dir, settings, progress)]
        elif part == "scifact":
            claims, index_dir = scifact_claims(data, settings)
            rows += [dict(r, part=part) for r in check_claims(claims[:limit], index_dir, settings, progress)]
        else:
            claims, index_dir = rgb_claims(data, settings)
            rows += [dict(r, part=part) for r in check_claims(claims[:limit], index_dir, settings, progress)]
    return summarize(rows), rows


def summarize(rows: list[dict]) -> dict:
    """Per family: n, share kept (true) or rejected (wrong), mean score, AUC against the part's true claims."""
    families: dict[str, dict] = {}
    order = [*TRUE_FAMILIES, *WRONG_FAMILIES, "scifact_support", "scifact_contradict", "scifact_unrelated",
             "rgb_true", "rgb_fake"]
    for fam in order:
        group = [r for r in rows if r["family"] == fam]
        if not group:
            continue
        true = group[0]["true"]
        block = {"n": len(group), "true": true, "mean_score": round(sum(r["score"] for r in group) / len(group), 4)}
        if true:
            block["kept"] = _share(group, lambda r: r["kept"] and (r["on_gold"] or not r["gold"]))
            block["kept_any_citation"] = _share(group, lambda r: r["kept"])
        else:
            block["rejected"] = _share(group, lambda r: not r["kept"])
            block["contradicted"] = _share(group, lambda r: "contradicted" in r["verdicts"])
            positives = [r["score"] for r in rows if r["true"] and r["part"] == group[0]["part"]]
            block["auc"] = _auc(positives, [r["score"] for r in group])
        families[fam] = block
    built_true = [r for r in rows if r["part"] == "built" and r["true"]]
    ms = sorted(r["ms"] for r in rows)
    return {"claims": len(rows), "families": families,
            "built_true_kept": _share(built_true, lambda r: r["kept"] and r["on_gold"]) if built_true else None,
            "check_ms_p50": ms[len(ms) // 2] if ms else None}


def draft_latency(settings: Settings, size: int = 5) -> dict:
    """Warm wall time of verifying a ``size``-sentence draft (models loaded, the index's sentences
    parsed before; the draft itself new): drafts of the seeds' built claims, 5 retrieved passages."""
    from qa.retrieve import Query

    engine = get_engine(None, settings)
    claims = [c for group, _ in built_claims(settings)[:1] for c, _ in group]
    drafts = [" ".join(c.text for c in claims[i:i + size]) for i in range(0, len(claims) - size + 1, size)]
    timed = []
    for n in range(2):
        for draft in drafts:
            passages = engine.retriever.search(Query(draft), settings.top_k)
            t0 = time.perf_counter()
            verify("", draft, passages, engine.index, engine.embedder, settings)
            if n:
                timed.append((time.perf_counter() - t0) * 1000)
    timed.sort()
    return {"drafts": len(timed), "sentences": size, "p50_ms": round(timed[len(timed) // 2], 1),
            "p90_ms": round(timed[int(len(timed) * 0.9)], 1)} if timed else {}


def run(path: Path, settings: Settings, args) -> tuple[dict, list[dict]]:
    summary, rows = run_verifier_eval(args.verifier, settings, limit=args.limit)
    summary["draft_latency"] = draft_latency(settings)
    return summary, rows


def headline(summary: dict) -> str:
    lines = [f"{'family':<20}{'n':>5}  {'kept/rejected':>13}  {'contradicted':>12}  {'mean score':>10}  {'AUC':>5}"]
    for fam, b in summary["families"].items():
        share = b["kept"] if b["true"] else b["rejected"]
        what = "kept" if b["true"] else "rejected"
        contra = "" if b["true"] else f"{b['contradicted']:.3f}"
        auc = "" if b["true"] or b["auc"] is None else f"{b['auc']:.3f}"
        lines.append(f"{fam:<20}{b['n']:>5}  {what:>8} {share:.3f}  {contra:>12}  {b['mean_score']:>10.3f}  {auc:>5}")
    lines.append(f"{summary['claims']} claims; verifier p50 {summary['check_ms_p50']} ms per claim")
    lat = summary.get("draft_latency") or {}
    if lat:
        lines.append(f"{lat['sentences']}-sentence draft, warm: p50 {lat['p50_ms']} ms, p90 {lat['p90_ms']} ms "
                     f"({lat['drafts']} drafts)")
    return "\n".join(lines)


def _share(rows: list[dict], pred) -> float | None:
    return round(sum(1 for r in rows if pred(r)) / len(rows), 4) if rows else None


def _auc(pos: list[float], neg: list[float]) -> float | None:
    """Chance a random true claim scores above a random wrong one (ties count half)."""
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return round(wins / (len(pos) * len(neg)), 4)


def _find(text: str, sentence: str) -> Spans:
    """Where ``sentence`` (curly quotes folded, a final full stop optional) lies in ``text``."""
    if not sentence:
        return []
    fold = lambda s: s.replace("’", "'").replace("“", '"').replace("”", '"').lower()
    words = fold(sentence).rstrip(".").split()
    m = re.search(r"\s+".join(re.escape(w) for w in words), fold(text))
    return [(m.start(), m.end())] if m else []


def _sentence_with(text: str, *needles: str) -> str | None:
    """The first sentence of ``text`` holding one of ``needles`` (case folded), trailing "..." cut."""
    for a, b in split_sentences(text):
        s = text[a:b].strip().rstrip(".… ").strip()
        if any(n.lower() in s.lower() for n in needles if n) and len(s.split()) >= 4:
            return s + "."
    return None


def _cached_index(cache: Path, body: str, settings: Settings) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    corpus = cache / "corpus.jsonl"
    if not corpus.exists() or corpus.read_text(encoding="utf-8") != body:
        corpus.write_text(body, encoding="utf-8")
    index_paths([corpus], index=cache / "index", settings=settings, progress=tqdm_progress())
    return cache / "index"
