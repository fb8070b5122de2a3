"""ChunkRanker: BM25 over all chunks, then the best of them re-ranked by embedding similarity."""

from __future__ import annotations

from collections.abc import Callable

from tools.web_search.bm25 import Bm25
from tools.web_search.chunker import Chunk
from tools.web_search.embedder import ChunkEmbedder

RERANK_CANDIDATES = 32  # ~4k tokens to embed: about 1.5 s of MiniLM on two CPU cores


class ChunkRanker:
    """Orders chunks by relevance to a query. `shortlist` is plain Python (any thread); `rerank` runs the
    embedding model (torch: call it where the model's other work runs)."""

    def __init__(self, embedder: ChunkEmbedder, candidates: int = RERANK_CANDIDATES) -> None:
        self.embedder = embedder
        self.candidates = candidates

    def shortlist(self, query: str, chunks: list[Chunk]) -> list[Chunk]:
        """All chunks by BM25 score of title + text, best first; ties (and no match) keep search order."""
        scores = Bm25([f"{c.title}\n{c.text}" for c in chunks]).scores(query)
        order = sorted(range(len(chunks)), key=lambda i: -scores[i])
        return [chunks[i] for i in order]

    def rerank(self, query: str, shortlisted: list[Chunk]) -> list[Chunk]:
        """The first `candidates` chunks reordered by cosine similarity to the query, then the rest."""
        head = shortlisted[:self.candidates]
        if not head:
            return []
        vectors = self.embedder.embed([query] + [f"{c.title}\n{c.text}" for c in head])
        similarity = vectors[1:] @ vectors[0]
        order = sorted(range(len(head)), key=lambda i: -float(similarity[i]))
        return [head[i] for i in order] + shortlisted[self.candidates:]

    def rank(self, query: str, chunks: list[Chunk]) -> list[Chunk]:
        """shortlist then rerank, in the calling thread."""
        return self.rerank(query, self.shortlist(query, chunks))


def select_within_budget(ranked: list[Chunk], budget_tokens: int,
                         cost: Callable[[Chunk], int]) -> list[Chunk]:
    """The best chunks whose costs (text plus citation header) add up to at most budget_tokens, in rank
    order; a chunk that does not fit is passed over for smaller ones after it."""
    chosen = []
    used = 0
    for chunk in ranked:
        need = cost(chunk)
        if used + need <= budget_tokens:
            chosen.append(chunk)
            used += need
    return chosen
