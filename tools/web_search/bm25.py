"""Bm25: Okapi BM25 scores of short texts for a query (the cheap first pass of chunk ranking)."""

from __future__ import annotations

import math
import re
from collections import Counter

_WORD = re.compile(r"\w+")


def terms(text: str) -> list[str]:
    """The lower-cased words of `text`."""
    return _WORD.findall(text.lower())


class Bm25:
    """BM25 over a fixed list of documents; idf is the always-positive Lucene form."""

    def __init__(self, documents: list[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self._counts = [Counter(terms(doc)) for doc in documents]
        self._lengths = [sum(c.values()) for c in self._counts]
        self._average_length = (sum(self._lengths) / len(self._lengths)) if self._lengths else 0.0
        frequency: Counter[str] = Counter()
        for counts in self._counts:
            frequency.update(counts.keys())
        n = len(documents)
        self._idf = {term: math.log(1 + (n - df + 0.5) / (df + 0.5)) for term, df in frequency.items()}

    def scores(self, query: str) -> list[float]:
        """One score per document, higher is more relevant; 0 for a document sharing no query word."""
        query_terms = [t for t in dict.fromkeys(terms(query)) if t in self._idf]
        scores = []
        for counts, length in zip(self._counts, self._lengths, strict=True):
            norm = self.k1 * (1 - self.b + self.b * length / (self._average_length or 1))
            score = 0.0
            for term in query_terms:
                tf = counts.get(term, 0)
                if tf:
                    score += self._idf[term] * tf * (self.k1 + 1) / (tf + norm)
            scores.append(score)
        return scores
