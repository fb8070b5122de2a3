"""WebSearch: search -> fetch pages concurrently -> extract -> chunk -> rank -> the chunks within a budget."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tools.web_search.backends import SearchBackend, make_backend
from tools.web_search.chunker import Chunk, chunk_page, truncate_to_tokens
from tools.web_search.embedder import ChunkEmbedder
from tools.web_search.errors import SearchBackendFailed, WebSearchError
from tools.web_search.extractor import PageText, extract_text
from tools.web_search.fetcher import PageFetcher
from tools.web_search.options import SearchOptions, context_tokens
from tools.web_search.ranker import ChunkRanker, select_within_budget
from tools.web_search.search_hit import SearchHit
from tools.web_search.ttl_cache import TtlCache

log = logging.getLogger(__name__)

# Runs fn(*args) on the thread that owns torch work and awaits the result: ChunkEmbedder.run (its own
# thread) by default, or AsyncEngine.run_on_engine_thread to share the engine thread's OpenMP pool.
RunModel = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class SearchReport:
    """What one search found: the chosen chunks (best first) and the pages that could not be read."""

    query: str
    chunks: list[Chunk]
    not_read: list[str]  # one reason per page, naming its URL


@dataclass(frozen=True)
class PageReport:
    """One page's text, cut to the token budget."""

    url: str
    title: str
    text: str
    tokens: int
    cut: bool  # cut to the budget, or the page was longer than max_page_bytes


class WebSearch:
    """The work behind the web-search tools; holds the backend, the fetcher, the caches and the model."""

    def __init__(self, options: SearchOptions, *, embedder: ChunkEmbedder | None = None,
                 run_model: RunModel | None = None, backend: SearchBackend | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.options = options
        self.backend = backend or make_backend(options)
        self.fetcher = PageFetcher(options, transport=transport)
        self.embedder = embedder or ChunkEmbedder(options.embedding_model)
        self.ranker = ChunkRanker(self.embedder)
        self._run_model = run_model or self.embedder.run
        self._hits: TtlCache[list[SearchHit]] = TtlCache(options.cache_ttl_s, max_entries=128)
        self._pages: TtlCache[PageText] = TtlCache(options.cache_ttl_s, max_entries=256)

    async def search(self, query: str, context_size: str | None = None) -> SearchReport:
        """The chunks of the result pages most relevant to `query`, within the context size's budget.

        deadline_s bounds the search and the page fetches together; ranking runs after it.
        """
        query = " ".join(query.split())
        if not query:
            raise WebSearchError("the query is empty; pass what to search for")
        budget = context_tokens(context_size or self.options.context_size)
        start = time.monotonic()
        deadline = start + self.options.deadline_s
        hits, not_read = self._allowed(await self._search_hits(query))
        if not hits:
            raise WebSearchError(f"no results for {query!r}" + "".join(f"; {r}" for r in not_read))
        pages, failed = await self._read_all([h.url for h in hits], deadline)
        not_read += failed
        await self._ensure_model()
        chunks = await asyncio.to_thread(self._chunk, hits, pages)
        if not chunks:
            raise WebSearchError(f"none of the {len(hits)} results for {query!r} could be read: "
                                 + "; ".join(not_read))
        shortlist = await asyncio.to_thread(self.ranker.shortlist, query, chunks)
        ranked = await self._run_model(self.ranker.rerank, query, shortlist)
        costs, footer = await asyncio.to_thread(self._costs, ranked, not_read)
        chosen = select_within_budget(ranked, budget - footer, lambda c: costs[(c.url, c.title)] + c.tokens)
        log.info("web search %r: %d results, %d pages read, %d chunks, %d chosen in %.1f s", query, len(hits),
                 len(pages), len(chunks), len(chosen), time.monotonic() - start)
        return SearchReport(query, chosen, not_read)

    async def read_page(self, url: str, context_size: str | None = None) -> PageReport:
        """The main text of the page at `url`, cut to the context size's budget."""
        url = url.strip()
        budget = context_tokens(context_size or self.options.context_size)
        async with self.fetcher.client() as client:
            page = await self._page(client, url)
        if not page.text:
            raise WebSearchError(f"{page.url} has no readable text")
        await self._ensure_model()
        text, tokens, cut = await asyncio.to_thread(
            truncate_to_tokens, page.text, self.embedder.token_offsets, budget)
        return PageReport(page.url, page.title, text, tokens, cut or page.truncated)

    async def _search_hits(self, query: str) -> list[SearchHit]:
        key = (self.backend.name, query, self.options.max_results)
        hits = self._hits.get(key)
        if hits is None:
            try:
                async with asyncio.timeout(self.options.deadline_s):
                    hits = await self.backend.search(query, self.options.max_results)
            except TimeoutError as exc:
                raise SearchBackendFailed(f"the {self.backend.name} search did not answer "
                                          f"within {self.options.deadline_s:g} s") from exc
            self._hits.put(key, hits)
        return hits

    def _allowed(self, hits: list[SearchHit]) -> tuple[list[SearchHit], list[str]]:
        """Hits whose host the domain lists allow (each URL once), and why the others were left out."""
        kept: dict[str, SearchHit] = {}
        refused = []
        for hit in hits:
            try:
                reason = self.fetcher.domains.refusal(httpx.URL(hit.url).host)
            except httpx.InvalidURL as exc:
                reason = f"not a valid URL ({exc})"
            if reason is not None:
                refused.append(f"{hit.url}: {reason}")
            else:
                kept.setdefault(hit.url, hit)
        return list(kept.values()), refused

    async def _read_all(self, urls: list[str], deadline: float) -> tuple[dict[str, PageText], list[str]]:
        """Pages fetched side by side until the deadline: the ones read, and a reason for each other."""
        async with self.fetcher.client() as client:
            tasks = {asyncio.create_task(self._page(client, url)): url for url in urls}
            pending = set(tasks)
            try:
                _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
            finally:  # also when this call is cancelled: no fetch outlives it
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        pages: dict[str, PageText] = {}
        failed = []
        for task, url in tasks.items():
            if task in pending:
                failed.append(f"{url} was not read within the search deadline of "
                              f"{self.options.deadline_s:g} s")
            elif isinstance(task.exception(), WebSearchError):
                failed.append(str(task.exception()))
            elif task.exception() is not None:
                log.warning("reading %s failed: %r", url, task.exception())
                failed.append(f"{url} could not be read: {task.exception()!r}")
            elif not task.result().text:
                failed.append(f"{url} has no readable text")
            else:
                pages[url] = task.result()
        return pages, failed

    async def _page(self, client: httpx.AsyncClient, url: str) -> PageText:
        page = self._pages.get(url)
        if page is None:
            fetched = await self.fetcher.fetch(client, url)
            page = await asyncio.to_thread(extract_text, fetched)
            self._pages.put(url, page)
        return page

    async def _ensure_model(self) -> None:
        if not self.embedder.loaded:
            await self._run_model(self.embedder.load)

    def _chunk(self, hits: list[SearchHit], pages: dict[str, PageText]) -> list[Chunk]:
        """Chunks of every page read, in search order, each text once; a page not read gives its snippet."""
        chunks: dict[str, Chunk] = {}  # by text: the same banner or repeated block counts once
        for hit in hits:
            page = pages.get(hit.url)
            if page is None and hit.snippet.strip():
                page = PageText(hit.url, hit.title, " ".join(hit.snippet.split()))
            if page is not None:
                if not page.title:
                    page = PageText(page.url, hit.title, page.text, page.truncated)
                for chunk in chunk_page(page, self.embedder.token_offsets):
                    chunks.setdefault(chunk.text, chunk)
        return list(chunks.values())

    def _costs(self, chunks: list[Chunk], not_read: list[str]) -> tuple[dict[tuple[str, str], int], int]:
        """Tokens of each source's "[n] title — url" header, by (url, title), and of the not-read line."""
        sources = list(dict.fromkeys((c.url, c.title) for c in chunks))
        spans = self.embedder.token_offsets([f"[99] {title} — {url}" for url, title in sources]
                                            + [not_read_line(not_read)])
        return {source: len(s) for source, s in zip(sources, spans[:-1], strict=True)}, len(spans[-1])


def not_read_line(not_read: list[str]) -> str:
    """The line after the chunks that names the pages not read and why ("" when all were read)."""
    return "Not read:\n" + "\n".join(f"- {reason}" for reason in not_read) if not_read else ""
