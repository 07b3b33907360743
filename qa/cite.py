"""Verify an LLM draft sentence by sentence and turn it into verbatim citations.

A draft sentence survives only if one sentence of a passage it cites (or, when its
markers are missing or point nowhere, of any retrieved passage) says the same thing:
cosine similarity with the bundled embedder of at least ``settings.support_min``,
every number, date and proper name of the draft sentence present in the quoted
source text, and the same relation (see :mod:`qa.parse`): the same predicate with
the same polarity, the same doer and done-to, the same quantifiers and direction,
numbers counting the same thing. A source sentence stating the opposite makes the
draft sentence *contradicted*; one saying it in other words (no shared predicate)
but very close in meaning keeps it as *uncertain*, named in the notice. Each kept
sentence is re-cited with that source sentence's exact offsets; markers pointing at
no passage are dropped; unsupported and contradicted sentences are removed and
listed in the answer's notice.
"""
from __future__ import annotations

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from qa.chunk import split_sentences
from qa.embed import Embedder, QueryEncoder, claim_encoder
from qa.generate import NO_ANSWER
from qa.index import STOPWORDS, Index
from qa.parse import Relation, negated_heads, negation_count, parse, relations, root_token
from qa.settings import Settings
from qa.text import is_instruction
from qa.types import Answer, Citation, Passage

# parses a draft's sentences while they are embedded; drafts checked at once queue here, not add threads
_PARSER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qa-parse")
_MARKERS = re.compile(r"\s*\[\s*(\d+(?:\s*[,;]\s*\d+)*)\s*\]")
_ANY_BRACKET = re.compile(r"\s*\[[^\]]{0,40}\]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NUMBER_WORD = re.compile(r"\b(two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|"
                          r"fifty|sixty|seventy|eighty|ninety|hundred|hundreds|thousand|thousands|million|"
                          r"millions|billion|billions|dozen|dozens)\b", re.IGNORECASE)
_NAME = re.compile(r"\b[A-Z][\w’'-]*\b")
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Check:
    """One draft sentence and what the verifier found for it."""

    text: str
    markers: tuple[int, ...]
    supported: bool
    similarity: float
    missing: tuple[str, ...]
    row: int | None
    verdict: str = "unsupported"
    """supported | unsupported | contradicted"""
    score: float = 0.0
    """The support score: the similarity when the relation agrees, lowered when it does not."""
    reason: str = ""
    """Why it is not supported, or why a kept sentence is uncertain."""
    uncertain: bool = False


def is_no_answer(draft: str) -> bool:
    """Whether the draft is the fixed "the reports do not say" reply (or close to it)."""
    folded = " ".join(_MARKERS.sub("", draft).lower().split())
    return folded.startswith(NO_ANSWER.lower().rstrip(".")) or folded.startswith("the passages do not")


def facts(sentence: str) -> list[str]:
    """Numbers, number words and capitalized names: what a supporting quote must contain."""
    out = [m.group(0).replace(",", "") for m in _NUMBER.finditer(sentence)]
    out += [m.group(0).lower() for m in _NUMBER_WORD.finditer(sentence)]
    for m in _NAME.finditer(sentence):
        word = m.group(0)
        if word.lower() in STOPWORDS or (m.start() == 0 and word.lower() in _OPENERS):
            continue
        out.append(word.lower())
    return out


def missing_facts(sentence: str, source: str) -> list[str]:
    """Facts of ``sentence`` that ``source`` does not contain."""
    plain = source.replace(",", "").lower().replace("’", "'")
    words = set(_WORD.findall(plain))
    missing = []
    for fact in facts(sentence.replace("’", "'")):
        needle = fact.lower()
        if needle[0].isdigit():
            if not re.search(r"(?<![\d.])" + re.escape(needle) + r"(?![\d])", plain):
                missing.append(fact)
        elif not all(w in words or _stem_in(w, words) for w in _WORD.findall(needle)):
            missing.append(fact)
    return missing


def verify(question: str, draft: str, passages: Sequence[Passage], index: Index,
           embedder: Embedder | QueryEncoder, settings: Settings, *, query: str = "",
           mode: str = "llm") -> tuple[Answer | None, list[Check]]:
    """The verified answer built from ``draft``, or None when no sentence of it is supported.

    An explicit "the reports do not say" draft becomes an abstention.
    """
    if is_no_answer(draft):
        text = f"{NO_ANSWER[:-1]}: no passage in the indexed reports answers this question."
        return Answer(text=text, citations=[], abstained=True, question=question, query=query,
                      passages=list(passages), support=0.0, mode=mode, notice="the model found no answer"), []
    claims = _claims(draft)
    if not claims or not passages:
        return None, []
    rows_by_passage = [[r for r in index.store.sentence_rows(p.passage_id) if not _is_instruction_row(index, r)]
                       for p in passages]
    vectors, parsed = embed_and_parse([text for text, _ in claims], embedder, settings)
    checks: list[Check] = []
    for (text, markers), vector, claim_doc in zip(claims, vectors, parsed):
        valid = tuple(m for m in markers if 1 <= m <= len(passages))
        pool = [r for m in valid for r in rows_by_passage[m - 1]] or [r for rows in rows_by_passage for r in rows]
        checks.append(_check(text, valid, pool, vector, index, settings, claim_doc))
    kept = [c for c in checks if c.supported]
    if not kept:
        return None, checks
    citations: list[Citation] = []
    seen: dict[int, int] = {}
    parts = []
    owner = {r: p for p, rows in zip(passages, rows_by_passage) for r in rows}
    for c in kept:
        assert c.row is not None
        if c.row not in seen:
            at = index.store.sentence(c.row)
            citations.append(Citation(at.doc_id, index.store.sentence_text(c.row), at.start, at.end, at.page,
                                      owner[c.row].text, round(c.similarity, 4)))
            seen[c.row] = len(citations)
        body, stop = (c.text[:-1], c.text[-1]) if c.text[-1] in ".!?" else (c.text, ".")
        parts.append(f"{body} [{seen[c.row]}]{stop}")
    notice = verdict_notice(checks)
    support = sum(c.similarity for c in kept) / len(checks)
    return Answer(text=" ".join(parts), citations=citations, abstained=False, question=question, query=query,
                  passages=list(passages), support=round(support, 4), mode=mode, notice=notice), checks


def embed_and_parse(texts: list[str], embedder: Embedder | QueryEncoder, settings: Settings) -> tuple[np.ndarray, list]:
    """The claims' vectors and parses, computed side by side: the ONNX encoder (the int8 one on
    one thread, :func:`qa.embed.claim_encoder`) runs outside the GIL while spaCy parses on the other
    core. Together they were most of a draft's check (eval/README.md, "Verifier")."""
    parsing = _PARSER.submit(parse, texts, cache=False)
    vectors = claim_encoder(embedder, settings.model_cache, settings.passage_precision).encode(texts)
    return vectors, parsing.result()


def verdict_notice(checks: Sequence[Check]) -> str:
    """What the reader should know: sentences removed (unsupported, contradicted) and kept but uncertain."""
    parts = []
    dropped = [c.text for c in checks if not c.supported and c.verdict != "contradicted"]
    against = [c.text for c in checks if c.verdict == "contradicted"]
    unsure = [c for c in checks if c.supported and c.uncertain]
    if dropped:
        parts.append("removed as unsupported by the cited reports: " + " | ".join(f"“{t}”" for t in dropped))
    if against:
        parts.append("removed as contradicted by the cited reports: " + " | ".join(f"“{t}”" for t in against))
    if unsure:
        parts.append("kept but uncertain (the source says it in other words; check the quote): "
                     + " | ".join(f"“{c.text}”" for c in unsure))
    return "; ".join(parts)


def _claims(draft: str) -> list[tuple[str, tuple[int, ...]]]:
    """Draft sentences with their markers; a sentence holding only markers lends them to the one before."""
    draft = draft.strip()
    out: list[tuple[str, tuple[int, ...]]] = []
    for a, b in split_sentences(draft):
        raw = draft[a:b]
        markers = tuple(int(n) for m in _MARKERS.finditer(raw) for n in re.split(r"[,;]", m.group(1)))
        text = " ".join(_ANY_BRACKET.sub("", raw).split()).strip()
        text = re.sub(r"\s+([.,;:!?])", r"\1", text)
        if len(_WORD.findall(text)) < 3:
            if out and markers:
                out[-1] = (out[-1][0], out[-1][1] + markers)
            continue
        out.append((text, markers))
    return out


def _check(text: str, markers: tuple[int, ...], pool: list[int], vector: np.ndarray, index: Index,
           settings: Settings, claim_doc=None) -> Check:
    """Find the sentence of ``pool`` that states ``text``: similar, holding its facts, same relation.

    The five most similar sentences are tried in order; the first stating the same
    relation wins, else the first saying it in other words (kept as uncertain when very
    close), else a sentence stating the opposite makes the claim contradicted.
    """
    if not pool:
        return Check(text, markers, False, 0.0, (), None, reason="nothing to check against")
    rows = np.asarray(sorted(set(pool)), dtype=np.int64)
    sims = index.store.sentence_vectors(rows, alone=True) @ vector  # the scale support_min was set on
    order = [int(i) for i in np.argsort(-sims)[:5].tolist()]
    if claim_doc is None:
        claim_doc = parse([text], cache=False)[0]
    exempt = {common_opener(claim_doc)} | defined_abbreviations(text)

    def lacking(source: str) -> tuple[str, ...]:
        return tuple(m for m in missing_facts(text, source) if m not in exempt and m.split("-")[0] not in exempt)

    candidates = []
    for i in order:
        row, sim = int(rows[i]), float(sims[i])
        missing = lacking(_sentence(index, row))
        if missing and not any(m[0].isdigit() for m in missing) and refers_back(_sentence(index, row)):
            missing = lacking(_antecedent(index, row) + " " + _sentence(index, row))
        candidates.append((row, sim, missing))
    judged = [(row, sim, missing) for row, sim, missing in candidates if not missing and sim >= settings.support_min]
    sources = parse([_sentence(index, row) for row, _, _ in judged])
    uncertain = contradicted = differs = None
    for (row, sim, _), source_doc in zip(judged, sources):
        agreement, why = relation_agreement(claim_doc, source_doc)
        if agreement == "same":
            return Check(text, markers, True, sim, (), row, "supported", sim)
        if agreement == "uncertain" and uncertain is None and sim >= settings.paraphrase_min:
            uncertain = (row, sim, why)
        elif agreement == "contradicted" and contradicted is None:
            contradicted = (row, sim, why)
        elif differs is None:
            if agreement == "uncertain":
                why = "no source sentence states this relation (the closest shares no predicate with it)"
            differs = (row, sim, why)
    if uncertain is not None and (contradicted is None or uncertain[1] > contradicted[1]):
        # a sentence stating the opposite with the claim's own predicate outweighs a looser paraphrase
        row, sim, why = uncertain
        return Check(text, markers, True, sim, (), row, "supported", sim * 0.9, why, uncertain=True)
    if contradicted is not None:
        row, sim, why = contradicted
        return Check(text, markers, False, sim, (), row, "contradicted", sim * 0.25, why)
    if differs is not None:
        row, sim, why = differs
        return Check(text, markers, False, sim, (), row, "unsupported", sim * 0.5, why)
    row, sim, missing = next(((r, s, m) for r, s, m in candidates if m), candidates[0])
    why = ("missing " + ", ".join(missing)) if missing else "no similar sentence"
    return Check(text, markers, False, sim, missing, row, "unsupported", sim * 0.5, why)


# ---------------------------------------------------------------- relations


def relation_agreement(claim, source) -> tuple[str, str]:
    """Whether parsed ``source`` states the relation of parsed ``claim``: same, uncertain, different
    or contradicted, with the reason. The rules below are tried from the surest to the weakest."""
    if negation_flipped(claim, source):
        return "contradicted", "the source states the opposite (negation)"
    if roles_swapped(claim, source):
        return "contradicted", "the source has the roles the other way round"
    if direction_flipped(claim, source):
        return "contradicted", "the source states the opposite direction"
    changed = quantifier_changed(claim, source)
    if changed:
        return ("contradicted" if changed == "opposite" else "different"), "the source quantifies differently"
    if doer_differs(claim, source):
        return "different", "the source says someone else does it"
    if numbers_measure_differently(claim, source):
        return "different", "a number of the claim counts something else in the source"
    if not predicate_stated(claim, source):
        return "uncertain", "the source says it in other words"
    return "same", ""


def aligned(claim, source) -> list[tuple[Relation, Relation]]:
    """Pairs of (claim relation, source relation) with the same predicate, the best-matching source one."""
    out = []
    targets = relations(source)
    for rc in relations(claim):
        if rc.verb == "be":  # "is" would pair any two copular clauses
            continue
        same = [rs for rs in targets if same_word(rc.verb, rs.verb)]
        if same:
            out.append((rc, max(same, key=lambda rs: len((rc.agent | rc.patient) & (rs.agent | rs.patient)))))
    return out


def negation_flipped(claim, source) -> bool:
    """A word negated in one sentence and present but not negated in the other.

    Catches "Sistani called for the disbandment" against "He did not call for the
    disbandment", "no weapons" against "all weapons", and a "not" added to a paraphrase
    (a claim with a negation where the source has none at all). A negated clause cut
    from a shortened claim is no flip: its word is gone from the claim too.
    """
    claim_neg, source_neg = negated_heads(claim), negated_heads(source)
    for negs, other, other_neg in ((claim_neg, source, source_neg), (source_neg, claim, claim_neg)):
        negated_there = {t.i for t in other_neg}
        for head in negs:
            present = [t for t in other if _same_token(head, t)]
            if any(_is_predicate(t) for t in present) and not any(t.i in negated_there for t in present):
                return True
    return bool(claim_neg) and negation_count(source) == 0


def _is_predicate(token) -> bool:
    """A word that states something (a clause's verb, or a noun): not a verb form used as a modifier
    ("increased risk"), which a negation elsewhere in the sentence may govern."""
    return token.pos_ not in {"VERB", "AUX"} or token.dep_ not in {"amod", "compound", "acl", "npadvmod", "nmod"}


def _same_token(a, b) -> bool:
    """The same word in the same place: a verb by its lemma, a noun by its lemma and the word it hangs on."""
    if not (same_word(a.lemma_.lower(), b.lemma_.lower()) or a.lower_ == b.lower_):
        return False
    return a.pos_ in {"VERB", "AUX"} or same_word(a.head.lemma_.lower(), b.head.lemma_.lower())


def roles_swapped(claim, source) -> bool:
    """The claim's doer is the source's done-to and its done-to the source's doer ("B leads A" vs "A leads B").

    Also, in the same voice, when only one side shows it: the claim's doer is none of the source's
    doer and either stood as the source's done-to ("The resignation took it" against "It took the
    resignation") or the source's doer is now the claim's done-to ("Most has been conducting the
    network" against "The network has been conducting most"), those words having crossed the
    predicate. Pronouns count by lemma ("him": "he").
    """
    for rc, rs in aligned(claim, source):
        if ((rc.agent & rs.patient) - rc.patient) and ((rc.patient & rs.agent) - rc.agent):
            return True
        if rc.passive != rs.passive:
            continue  # a passive restatement moves doer and done-to legitimately
        moved_in = (rc.agent_core & rs.patient_core) - rs.agent_core
        moved_out = (rs.agent_core & rc.patient_core) - rc.agent_core
        if not rc.agent_core & rs.agent_core and any(
                words and _crossed(words, claim, rc.position, source, rs.position) for words in (moved_in, moved_out)):
            return True
        if _sides_flipped(claim, rc.position, source, rs):
            return True
    return False


def _side(doc, pivot: int, words: set[str]) -> int:
    """Where most of ``words`` stand in ``doc``: after the predicate at ``pivot`` (1), before it (-1), or undecided (0)."""
    votes = sum(1 if t.i > pivot else -1 for t in doc if t.lemma_.lower() in words)
    return (votes > 0) - (votes < 0)


def _crossed(words: set[str], claim, at: int, source, pivot: int) -> bool:
    """``words`` stand on one side of the predicate in the source and on the other in the claim (a parse
    that misreads one sentence moves no word, so this guards the role rules against it)."""
    before, after = _side(source, pivot, words), _side(claim, at, words)
    return before != 0 and before == -after


def _sides_flipped(claim, at: int, source, rs: Relation) -> bool:
    """The source's doer words stand on the other side of the predicate in the claim, and its done-to
    words too (same voice only: a passive restatement moves them legitimately). Catches swaps the
    parse of an ungrammatical claim misreads ("The highest number had Spirit")."""
    agent_only, patient_only = rs.agent_core - rs.patient_core, rs.patient_core - rs.agent_core
    if not agent_only or not patient_only:
        return False

    def once(doc) -> set[str]:
        seen = Counter(t.lemma_.lower() for t in doc)
        return {w for w, n in seen.items() if n == 1}

    unique = once(claim) & once(source)  # a word said twice cannot tell which side it stands on
    agent_only, patient_only = agent_only & unique, patient_only & unique
    if not agent_only or not patient_only:
        return False

    return _crossed(agent_only, claim, at, source, rs.position) and _crossed(patient_only, claim, at, source, rs.position)


def doer_differs(claim, source) -> bool:
    """The same predicate with another doer: "The bloc will be led by Kata'ib Jund al-Imam" against
    "groups led by the Badr Organization", or a name in the claim's doer missing from the source's.
    Pronouns and stop words carry no names, so "he" never differs."""
    for rc, rs in aligned(claim, source):
        if not rs.agent:
            continue
        if rc.agent and not (rc.agent & rs.agent) and not _loosely_shared(rc.agent, rs.agent):
            return True
        if rc.agent_names - rs.agent_names and rs.agent_names:
            return True
    return False


def direction_flipped(claim, source) -> bool:
    """The claim says the opposite direction of change: "increases" where the source says "decreases".

    The antonym pairs (``_ANTONYMS``) are the directions SciFact's contradicted claims turn
    most often, plus the news ones (win/lose, support/oppose); a word counts only when the
    source lacks the claim's own word.
    """
    mine = {t.lemma_.lower() for t in claim}
    theirs = {t.lemma_.lower() for t in source}
    for word in mine - theirs:
        if _ANTONYMS.get(word, frozenset()) & theirs:
            return True
    return False


def quantifier_changed(claim, source) -> str:
    """"opposite" when the claim quantifies with a word whose opposite the source uses ("all" vs "some",
    "more than" vs "fewer than"), "missing" when the claim adds a quantifier the source lacks, else ""."""
    mine, theirs = _quantifiers(claim.text), _quantifiers(source.text)
    extra = mine - theirs
    if not extra:
        return ""
    return "opposite" if theirs else "missing"


def numbers_measure_differently(claim, source) -> bool:
    """A number of the claim attached to another noun in the source ("60,000 fighters" vs "60,000 dollars")."""
    units = {}
    for t in source:
        if t.like_num and any(ch.isdigit() for ch in t.text):
            units.setdefault(t.text.replace(",", ""), set()).add(_unit(t))
    for t in claim:
        if t.like_num and any(ch.isdigit() for ch in t.text):
            mine, theirs = _unit(t), units.get(t.text.replace(",", ""), set())
            if mine and theirs and "" not in theirs and not any(same_word(mine, u) for u in theirs):
                return True
    return False


def predicate_stated(claim, source) -> bool:
    """The claim's main predicate (or, for "be"/"have", its complement) appears in the source, in any form."""
    root = root_token(claim)
    if root is None:
        return True
    key = root
    if root.lemma_.lower() in _LIGHT_VERBS:
        key = next((c for c in root.children if c.dep_ in {"attr", "dobj", "acomp", "oprd"}), None)
        if key is None:
            return True
    lemma = key.lemma_.lower()
    return any(same_word(lemma, t.lemma_.lower()) or same_word(key.lower_, t.lower_) for t in source)


def same_word(a: str, b: str) -> bool:
    """One word in two forms: equal, or sharing a stem of at least 4 letters that covers all but 2
    letters of the shorter ("lead"/"leader", "disband"/"disbandment"); 4 and 2 keep "call"/"cancel" apart."""
    if a == b:
        return True
    n = min(len(a), len(b))
    if n < 4:
        return False
    k = 0
    while k < n and a[k] == b[k]:
        k += 1
    return k >= 4 and k >= n - 2


def _loosely_shared(a: frozenset[str], b: frozenset[str]) -> bool:
    return any(same_word(x, y) for x in a for y in b)


def _unit(token) -> str:
    """What a number counts: the noun it modifies, or the noun right after it."""
    if token.dep_ in {"nummod", "quantmod", "compound"} and token.head.pos_ in {"NOUN", "PROPN"}:
        return token.head.lemma_.lower()
    nxt = token.doc[token.i + 1] if token.i + 1 < len(token.doc) else None
    if nxt is not None and nxt.pos_ == "NOUN":
        return nxt.lemma_.lower()
    return ""


_QUANTIFIER = re.compile(r"\b(all|every|each|none|no|some|several|many|few|most|more than|fewer than|less than|"
                         r"at least|at most|always|rarely|only|both|neither)\b(?!\s+\w+ly\b)", re.IGNORECASE)


def _quantifiers(text: str) -> set[str]:
    return {m.group(1).lower() for m in _QUANTIFIER.finditer(text)}


_LIGHT_VERBS = frozenset({"be", "have", "become", "do", "make", "get"})
_ANTONYM_PAIRS = [
    ("increase", "decrease"), ("increase", "reduce"), ("increase", "lower"), ("higher", "lower"), ("high", "low"),
    ("more", "less"), ("more", "fewer"), ("greater", "less"), ("greater", "lower"), ("large", "small"),
    ("larger", "smaller"), ("rise", "fall"), ("rise", "decline"), ("up", "down"), ("positive", "negative"),
    ("gain", "loss"), ("improve", "worsen"), ("promote", "inhibit"), ("promote", "suppress"), ("activate", "inhibit"),
    ("enhance", "reduce"), ("enhance", "impair"), ("stimulate", "suppress"), ("benefit", "harm"),
    ("elevate", "reduce"), ("upregulate", "downregulate"), ("long", "short"), ("longer", "shorter"),
    ("strong", "weak"), ("success", "failure"), ("win", "lose"), ("accept", "reject"), ("support", "oppose"),
    ("allow", "ban"), ("allow", "prohibit"), ("present", "absent"), ("protective", "harmful"),
    ("sufficient", "insufficient"), ("necessary", "unnecessary"), ("effective", "ineffective"),
    ("increased", "decreased"), ("increased", "reduced"), ("elevated", "reduced"), ("elevated", "decreased"),
]
_ANTONYMS: dict[str, frozenset[str]] = {}
for _a, _b in _ANTONYM_PAIRS:
    _ANTONYMS[_a] = _ANTONYMS.get(_a, frozenset()) | {_b}
    _ANTONYMS[_b] = _ANTONYMS.get(_b, frozenset()) | {_a}


def common_opener(claim) -> str:
    """The claim's first word when the parse says it is no proper noun ("Activation", "Incidence",
    "Chronic"): capitalized only because it opens the sentence, so the source need not hold it."""
    first = next((t for t in claim if not t.is_punct), None)
    if (first is None or first.pos_ == "PROPN" or first.like_num or _NUMBER_WORD.fullmatch(first.text)
            or not first.text[:1].isupper() or first.text.isupper()):
        return ""  # a name, a number word ("Three weeks ago") or an acronym stays a fact
    return first.text.lower().replace("’", "'")


_ABBREVIATION = re.compile(r"\(([A-Za-z][\w/-]{0,11})\)")


def defined_abbreviations(text: str) -> set[str]:
    """Abbreviations the claim defines itself, "reactive oxygen species (ROS)": the source may spell
    out the words only. Its letters (and digits) count as facts no more."""
    out = set()
    for m in _ABBREVIATION.finditer(text):
        out.add(m.group(1).lower())
        out.update(n.replace(",", "") for n in _NUMBER.findall(m.group(1)))
    return out


_PRONOUN = re.compile(r"\b(he|she|they|his|her|their|him|them)\b", re.IGNORECASE)


def refers_back(sentence: str) -> bool:
    """Whether a sentence names someone only by pronoun ("He did not call for ..."), so the names of
    a claim about that person are to be found in the sentence before."""
    return bool(_PRONOUN.search(sentence))


def _antecedent(index: Index, row: int) -> str:
    """The sentence before ``row`` in the same document ('' at a document's start)."""
    prior = index.store.previous_sentence(row)
    return "" if prior is None else _sentence(index, prior)


def _sentence(index: Index, row: int) -> str:
    return index.store.sentence_text(row)


def _is_instruction_row(index: Index, row: int) -> bool:
    return is_instruction(_sentence(index, row))


def _stem_in(word: str, words: set[str]) -> bool:
    """Plural and possessive tolerance for names: "Iraqis" or "Iraq's" against "Iraqi" or "Iraq"."""
    for cut in ("'s", "s", "es"):
        if word.endswith(cut) and word[: -len(cut)] in words:
            return True
    return any(w.endswith("s") and w[:-1] == word for w in words if w.startswith(word[:3]))


_OPENERS = frozenset(
    "according however meanwhile also additionally furthermore moreover yes no overall in on at as "
    "this that these those there it its he she they his her their we our one some many several".split()
)


# ---------------------------------------------------------------- any text


@dataclass(frozen=True)
class SentenceCheck:
    """The verdict on one sentence of a text: supported, unsupported or contradicted, and by what."""

    text: str
    verdict: str
    citation: Citation | None
    score: float
    reason: str = ""
    uncertain: bool = False

    def to_json(self) -> dict:
        """The shape ``qa verify --json`` prints per sentence."""
        c = self.citation
        return {"text": self.text, "verdict": self.verdict, "score": round(self.score, 4), "reason": self.reason,
                "uncertain": self.uncertain,
                "citation": None if c is None else {"doc_id": c.doc_id, "quote": c.quote, "start": c.start,
                                                    "end": c.end, "page": c.page}}


def check_text(text: str, sources: Callable[[str], Sequence[Passage]], index: Index,
               embedder: Embedder | QueryEncoder, settings: Settings) -> list[SentenceCheck]:
    """Each sentence of ``text`` checked against the passages ``sources(sentence)`` returns.

    The same rules as for an LLM draft; ``[n]`` markers in the text are ignored, since
    they point at no list of passages here. A contradicted sentence cites the sentence
    stating the opposite.
    """
    claims = _claims(text)
    if not claims:
        return []
    vectors, parsed = embed_and_parse([t for t, _ in claims], embedder, settings)
    out = []
    for (sentence, _), vector, claim_doc in zip(claims, vectors, parsed):
        passages = list(sources(sentence))
        pool = [r for p in passages for r in index.store.sentence_rows(p.passage_id) if not _is_instruction_row(index, r)]
        check = _check(sentence, (), pool, vector, index, settings, claim_doc)
        citation = None
        if check.row is not None and check.verdict != "unsupported":
            owner = next((p for p in passages if check.row in index.store.sentence_rows(p.passage_id)), None)
            at, quote = index.store.sentence(check.row), index.store.sentence_text(check.row)
            citation = Citation(at.doc_id, quote, at.start, at.end, at.page, owner.text if owner else quote,
                                round(check.similarity, 4))
        out.append(SentenceCheck(sentence, check.verdict, citation, check.score, check.reason, check.uncertain))
    return out
