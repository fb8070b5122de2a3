"""Search backends behind one interface: DuckDuckGo (ddgs), a SearXNG JSON API, a user callback."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx

from tools.web_search.errors import SearchBackendFailed
from tools.web_search.options import SearchCallback, SearchOptions
from tools.web_search.search_hit import SearchHit

log = logging.getLogger(__name__)


class SearchBackend(Protocol):
    """Something that turns a query into at most `max_results` hits, or raises SearchBackendFailed."""

    name: str

    async def search(self, query: str, max_results: int) -> list[SearchHit]: ...


class SearxngBackend:
    """A SearXNG instance's JSON API: GET {base_url}/search?q=...&format=json."""

    name = "searxng"

    def __init__(self, base_url: str, timeout_s: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._transport = transport

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        instance = f"the SearXNG instance at {self.base_url}"
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=self.timeout_s,
                                         transport=self._transport) as client:
                response = await client.get(f"{self.base_url}/search", params={"q": query, "format": "json"},
                                            headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise SearchBackendFailed(f"{instance} did not answer: {exc!r}") from exc
        if response.status_code == 403:
            raise SearchBackendFailed(f"{instance} refused format=json (HTTP 403); "
                                      "enable it under search.formats in its settings.yml")
        if response.status_code != 200:
            raise SearchBackendFailed(f"{instance} answered HTTP {response.status_code}")
        try:
            results = response.json().get("results")
        except (ValueError, AttributeError) as exc:
            raise SearchBackendFailed(f"{instance} did not answer JSON") from exc
        if not isinstance(results, list):
            raise SearchBackendFailed(f"the answer of {instance} has no results list")
        return _hits(results, max_results)


class DdgBackend:
    """DuckDuckGo through the `ddgs` package (synchronous, so it runs on a worker thread)."""

    name = "ddg"

    def __init__(self, timeout_s: float, client_factory: Callable[..., Any] | None = None) -> None:
        self.timeout_s = timeout_s
        self._client_factory = client_factory

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        def run() -> list[dict[str, Any]]:
            factory = self._client_factory
            if factory is None:
                from ddgs import DDGS  # imported when first used: it starts HTTP machinery of its own

                factory = DDGS
            return factory(timeout=max(1, round(self.timeout_s))).text(
                query, max_results=max_results, backend="duckduckgo")

        try:
            rows = await asyncio.to_thread(run)
        except Exception as exc:  # noqa: BLE001 - ddgs raises its own hierarchy and its HTTP client's errors
            raise SearchBackendFailed(f"DuckDuckGo search failed: {exc}") from exc
        return _hits(rows, max_results)


class CallbackBackend:
    """A function the embedding application supplies: (query, max_results) -> hits, sync or async."""

    name = "callback"

    def __init__(self, callback: SearchCallback) -> None:
        self.callback = callback

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        try:
            rows = self.callback(query, max_results)
            if inspect.isawaitable(rows):
                rows = await rows
            return _hits(rows, max_results)
        except Exception as exc:  # noqa: BLE001 - the user's function may fail (or answer) any way it likes
            raise SearchBackendFailed(f"the search callback failed: {exc!r}") from exc


def make_backend(options: SearchOptions) -> SearchBackend:
    """The backend `options.backend` names, set up from the options."""
    if options.backend == "searxng":
        return SearxngBackend(options.searxng_url or "", options.page_timeout_s)
    if options.backend == "callback":
        assert options.callback is not None  # SearchOptions checked it
        return CallbackBackend(options.callback)
    return DdgBackend(options.page_timeout_s)


def _hits(rows: Any, max_results: int) -> list[SearchHit]:
    """SearchHits from SearchHit objects or mappings (url/href/link, title, snippet/content/body)."""
    hits: list[SearchHit] = []
    for row in rows or ():
        if isinstance(row, SearchHit):
            hit = row
        elif isinstance(row, Mapping):
            url = str(row.get("url") or row.get("href") or row.get("link") or "")
            hit = SearchHit(title=str(row.get("title") or ""), url=url,
                            snippet=str(row.get("snippet") or row.get("content") or row.get("body") or ""))
        else:
            log.debug("ignoring a search result of type %s", type(row).__name__)
            continue
        if hit.url.startswith(("http://", "https://")):
            hits.append(hit)
        if len(hits) >= max_results:
            break
    return hits
