"""Ranking quality on a fixed corpus: the page that answers a query is among the top 3 chunks."""

from __future__ import annotations

import asyncio
import time

from fake_web import html_page
from ranking_corpus import PAGES, QUERIES

from tools.web_search.chunker import chunk_page
from tools.web_search.extractor import extract_text
from tools.web_search.fetcher import FetchedPage
from tools.web_search.ranker import ChunkRanker


def corpus_chunks(embedder):
    """Every page served as HTML with boilerplate, extracted and chunked as a search would."""
    chunks = []
    for slug, (title, paragraphs) in PAGES.items():
        html = html_page(title, *paragraphs).encode()
        page = extract_text(FetchedPage(f"http://pages.test/{slug}", "text/html", html, "utf-8", False))
        chunks.extend(chunk_page(page, embedder.token_offsets))
    return chunks


def hit_rate(rank, chunks) -> tuple[float, list[str]]:
    misses = []
    for query, slug in QUERIES:
        top = [c.url.rsplit("/", 1)[1] for c in rank(query, chunks)[:3]]
        if slug not in top:
            misses.append(f"{query!r}: wanted {slug}, got {top}")
    return 1 - len(misses) / len(QUERIES), misses


def test_relevant_page_is_in_the_top_3_chunks_for_90_percent_of_queries(embedder):
    chunks = corpus_chunks(embedder)
    ranker = ChunkRanker(embedder)
    assert len(PAGES) >= 30 and len(QUERIES) >= 20 and len(chunks) >= len(PAGES)

    start = time.perf_counter()
    rate, misses = asyncio.run(embedder.run(hit_rate, ranker.rank, chunks))  # torch on the model's thread
    elapsed = time.perf_counter() - start
    bm25_rate, _ = hit_rate(ranker.shortlist, chunks)

    print(f"\nranking: top-3 hit rate {rate:.0%} (BM25 alone {bm25_rate:.0%}) over {len(QUERIES)} queries, "
          f"{len(chunks)} chunks of {len(PAGES)} pages, in {elapsed:.1f} s; misses: {misses}")
    assert rate >= 0.9, misses
