"""Question answering over reports with verified, sentence-level citations.

>>> from qa import answer
>>> a = answer("Who will be the spokesperson of the new political alliance?")
>>> a.text, a.citations[0].quote
"""
from qa.api import answer, answer_stream, as_retriever, index_paths, open_index, search
from qa.api import verify_text as verify
from qa.settings import Settings
from qa.types import Answer, Citation, Passage

__all__ = ["Answer", "Citation", "Passage", "Settings", "answer", "answer_stream", "as_retriever", "index_paths", "open_index", "search", "verify"]
