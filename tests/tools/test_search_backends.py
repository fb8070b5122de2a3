"""Search backends: SearXNG JSON over HTTP, DuckDuckGo through a stand-in ddgs client, user callbacks."""

from __future__ import annotations

import asyncio
import json

import pytest
from fake_web import Response

from tools.web_search import CallbackBackend, DdgBackend, SearchHit, SearxngBackend
from tools.web_search.errors import SearchBackendFailed


def test_searxng_results_become_hits_capped_at_max_results(fake_web):
    rows = [{"url": f"https://site{i}.example/page", "title": f"Site {i}", "content": f"About {i}"}
            for i in range(8)]
    rows.insert(1, {"url": "magnet:?xt=urn:btih:abc", "title": "not a web page"})
    fake_web.routes["/search"] = lambda handler, query: Response(
        200, {"Content-Type": "application/json"},
        json.dumps({"query": query["q"][0], "results": rows}).encode())

    hits = asyncio.run(SearxngBackend(fake_web.base + "/", 2.0).search("rust borrow checker", 5))

    assert hits[0] == SearchHit("Site 0", "https://site0.example/page", "About 0")
    assert [h.url for h in hits] == [f"https://site{i}.example/page" for i in range(5)]


def test_searxng_failures_are_named(fake_web):
    fake_web.routes["/search"] = Response(200, {"Content-Type": "text/html"}, b"<html>captcha</html>")
    with pytest.raises(SearchBackendFailed, match="did not answer JSON"):
        asyncio.run(SearxngBackend(fake_web.base, 2.0).search("q", 5))
    fake_web.routes["/search"] = Response(500, {}, b"")
    with pytest.raises(SearchBackendFailed, match="answered HTTP 500"):
        asyncio.run(SearxngBackend(fake_web.base, 2.0).search("q", 5))
    with pytest.raises(SearchBackendFailed, match="did not answer"):
        asyncio.run(SearxngBackend("http://127.0.0.1:9", 2.0).search("q", 5))


class FakeDdgs:
    """Stands in for ddgs.DDGS: records its arguments, answers ddgs-shaped rows."""

    calls: list = []

    def __init__(self, timeout):
        self.timeout = timeout

    def text(self, query, max_results, backend):
        FakeDdgs.calls.append((self.timeout, query, max_results, backend))
        if query == "fail":
            raise RuntimeError("No results found.")
        return [{"title": "Kiwi", "href": "https://en.wikipedia.org/wiki/Kiwi", "body": "A bird."}]


def test_duckduckgo_rows_become_hits_and_its_errors_are_named():
    backend = DdgBackend(timeout_s=4.2, client_factory=FakeDdgs)

    hits = asyncio.run(backend.search("kiwi", 3))

    assert hits == [SearchHit("Kiwi", "https://en.wikipedia.org/wiki/Kiwi", "A bird.")]
    assert FakeDdgs.calls[-1] == (4, "kiwi", 3, "duckduckgo")
    with pytest.raises(SearchBackendFailed, match="DuckDuckGo search failed: No results found."):
        asyncio.run(backend.search("fail", 3))


def test_callbacks_may_be_sync_or_async_and_fail_cleanly():
    def sync(query, n):
        return [SearchHit("A", "https://a.example/", "a")] * 10

    async def broken(query, n):
        raise ConnectionError("quota exceeded")

    assert len(asyncio.run(CallbackBackend(sync).search("q", 4))) == 4
    with pytest.raises(SearchBackendFailed, match="the search callback failed: ConnectionError"):
        asyncio.run(CallbackBackend(broken).search("q", 4))
    with pytest.raises(SearchBackendFailed, match="the search callback failed"):
        asyncio.run(CallbackBackend(lambda q, n: 42).search("q", 4))
