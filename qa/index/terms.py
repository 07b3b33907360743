"""Text normalization shared by indexing and querying: the same terms on both sides."""
from __future__ import annotations

import re

_ACRONYM = re.compile(r"\b(?:[A-Za-z]\.){2,}")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_stemmer = None


def terms(text: str) -> list[str]:
    """Stemmed, lower-cased content words; "P.M.F." and "PMF" both become ``pmf``."""
    global _stemmer
    if _stemmer is None:
        import Stemmer

        _stemmer = Stemmer.Stemmer("english")
    text = _ACRONYM.sub(lambda m: m.group(0).replace(".", "") + " ", text)
    words = [w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in STOPWORDS]
    return _stemmer.stemWords(words)


STOPWORDS = frozenset(
    """a about above after again against al all am an and any are aren as at be because been
    before being below between both but by can could did do does doing don down during each
    few for from further had has have having he her here hers herself him himself his how
    i if in into is it its itself just me more most my myself no nor not now of off on once
    only or other our ours ourselves out over own same she should so some such than that the
    their theirs them themselves then there these they this those through to too under until
    up very was we were what when where which while who whom why will with would you your
    yours yourself yourselves also said say says""".split()
)
