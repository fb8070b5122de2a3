"""search_the_web and website_content_extractor end to end: a fake SearXNG and pages on 127.0.0.1."""

from __future__ import annotations

import asyncio

from fake_web import Response

from tools import SearchOptions, ToolRegistry, register_search_tools
from tools.web_search import SearchHit

QUERY = "how is green tea processed"
TEA = ("Green tea is made from the leaves of Camellia sinensis. After the harvest the leaves are heated "
       "quickly by pan firing or steaming, which stops oxidation and keeps them green.",
       "The leaves are then rolled to shape them and dried until little moisture is left; the whole "
       "process takes a day.")
COFFEE = ("Coffee beans are the seeds of the coffee cherry. Roasting them at about 200 degrees Celsius "
          "develops their aroma through the Maillard reaction.",)
VOLCANO = ("A volcano forms where magma from the mantle reaches the surface of the Earth and erupts as lava, "
           "ash and gas.",)
KIWI = ("The kiwi is a small flightless bird native to New Zealand. It is nocturnal and finds insects with "
        "the nostrils at the tip of its long beak.",)


def options(web, **overrides) -> SearchOptions:
    settings = dict(backend="searxng", searxng_url=web.base, allow_private={"127.0.0.1"}, page_timeout_s=1.0,
                    deadline_s=10.0, max_page_bytes=200_000, context_size="low")
    settings.update(overrides)
    return SearchOptions(**settings)


def registry_for(opts: SearchOptions, embedder) -> ToolRegistry:
    registry = ToolRegistry()
    register_search_tools(registry, opts, embedder=embedder)
    return registry


def serve_tea_search(web) -> None:
    web.page("/tea", "Green tea processing", *TEA)
    web.page("/coffee", "Coffee roasting", *COFFEE)
    web.page("/volcano", "How volcanoes form", *VOLCANO)
    web.page("/kiwi", "The kiwi bird", *KIWI)
    web.search_results({QUERY: [
        ("/coffee", "Coffee roasting", "How coffee is roasted."),
        ("/slow", "Slow tea page", "A tea page that takes its time."),
        ("/file.bin", "A binary file", ""),
        ("/tea", "Green tea processing", "How green tea is made."),
        ("/image.png", "A tea picture", ""),
        ("/huge", "Huge almanac", ""),
        ("/to-private", "An intranet page", ""),
        ("/volcano", "How volcanoes form", "Magma and lava."),
        ("/kiwi", "The kiwi bird", "A flightless bird."),
    ]})


def test_search_returns_ranked_cited_chunks_within_the_budget(fake_web, embedder):
    serve_tea_search(fake_web)
    registry = registry_for(options(fake_web), embedder)

    result = asyncio.run(registry.call("search_the_web", {"query": QUERY}))

    assert not result.is_error, result.text
    first = result.text.split("\n\n")[0]
    assert first.startswith(f"[1] Green tea processing — {fake_web.url('/tea')}\n")
    assert "pan firing" in first
    assert result.meta["sources"][0] == {"index": 1, "title": "Green tea processing",
                                         "url": fake_web.url("/tea")}
    assert "Home | About us" not in result.text and "All rights reserved" not in result.text  # no boilerplate
    tokens = len(embedder.token_offsets([result.text])[0])
    assert 3500 < tokens <= 4096, tokens  # the huge page (read up to its cap) fills the rest of the budget
    assert "Weather records of the almanac" in result.text


def test_slow_page_is_cut_by_the_page_timeout_without_failing_the_search(fake_web, embedder):
    serve_tea_search(fake_web)
    registry = registry_for(options(fake_web, page_timeout_s=0.5), embedder)

    result = asyncio.run(registry.call("search_the_web", {"query": QUERY}))

    assert not result.is_error, result.text
    assert "SLOWMARKER" not in result.text
    assert f"{fake_web.url('/slow')} did not load within 0.5 s" in result.text
    assert result.text.startswith("[1] Green tea processing")


def test_non_html_resources_and_refused_redirects_are_skipped_and_named(fake_web, embedder):
    serve_tea_search(fake_web)
    result = asyncio.run(registry_for(options(fake_web), embedder).call("search_the_web", {"query": QUERY}))

    not_read = result.meta["not_read"]
    assert f"{fake_web.url('/file.bin')} is application/octet-stream, not HTML or text" in not_read
    assert f"{fake_web.url('/image.png')} is image/png, not HTML or text" in not_read
    assert any("10.0.0.1 is a private address" in reason for reason in not_read), not_read
    cited = {source["url"] for source in result.meta["sources"]}
    assert not cited & {fake_web.url("/file.bin"), fake_web.url("/image.png"), fake_web.url("/to-private")}


def test_search_deadline_bounds_the_whole_search(fake_web, embedder):
    serve_tea_search(fake_web)
    registry = registry_for(options(fake_web, page_timeout_s=5.0, deadline_s=0.8), embedder)

    result = asyncio.run(registry.call("search_the_web", {"query": QUERY}))

    assert not result.is_error, result.text
    assert f"{fake_web.url('/slow')} was not read within the search deadline of 0.8 s" in result.text


def test_repeated_search_is_answered_from_the_cache(fake_web, embedder):
    serve_tea_search(fake_web)
    registry = registry_for(options(fake_web), embedder)

    first = asyncio.run(registry.call("search_the_web", {"query": QUERY}))
    requests = len(fake_web.requests)
    second = asyncio.run(registry.call("search_the_web", {"query": QUERY}))

    assert second.text.split("\n\n")[:3] == first.text.split("\n\n")[:3]
    fetched_again = [path for path, _ in fake_web.requests[requests:]]
    assert "/search" not in fetched_again and "/tea" not in fetched_again


def test_no_results_and_a_disabled_json_api_are_error_results(fake_web, embedder):
    serve_tea_search(fake_web)
    registry = registry_for(options(fake_web), embedder)
    empty = asyncio.run(registry.call("search_the_web", {"query": "nothing matches this"}))
    assert empty.is_error and "no results for 'nothing matches this'" in empty.text

    fake_web.routes["/off/search"] = Response(403, {"Content-Type": "text/plain"}, b"format json not allowed")
    off = registry_for(options(fake_web, searxng_url=fake_web.url("/off")), embedder)
    refused = asyncio.run(off.call("search_the_web", {"query": QUERY}))
    assert refused.is_error and "search.formats" in refused.text

    missing = asyncio.run(registry.call("search_the_web", {}))
    assert missing.is_error and "'query'" in missing.text


def test_callback_backend_and_blocked_domains(fake_web, embedder):
    fake_web.page("/kiwi", "The kiwi bird", *KIWI)
    calls = []

    async def search(query: str, max_results: int):
        calls.append((query, max_results))
        return [SearchHit("Ads", "http://ads.tracker.test/kiwi", "buy"),
                {"title": "The kiwi bird", "href": fake_web.url("/kiwi"), "body": "A bird."}]

    opts = options(fake_web, backend="callback", callback=search, max_results=5,
                   blocked_domains=["tracker.test"])
    result = asyncio.run(registry_for(opts, embedder).call("search_the_web", {"query": "kiwi bird"}))

    assert calls == [("kiwi bird", 5)]
    assert result.text.startswith(f"[1] The kiwi bird — {fake_web.url('/kiwi')}\nThe kiwi bird\nThe kiwi is")
    assert "ads.tracker.test/kiwi: ads.tracker.test is in the blocked domain tracker.test" in result.text


def test_extractor_returns_the_clean_text_of_one_page(fake_web, embedder):
    url = fake_web.page("/tea", "Green tea processing", *TEA)
    registry = registry_for(options(fake_web), embedder)

    result = asyncio.run(registry.call("website_content_extractor", {"url": url}))

    assert not result.is_error, result.text
    assert result.text.startswith(f"Green tea processing — {url}\n\nGreen tea processing\nGreen tea is made")
    assert "Cookie settings" not in result.text and "[cut to" not in result.text


def test_extractor_caps_a_huge_page_and_stops_reading_it(fake_web, embedder):
    registry = registry_for(options(fake_web), embedder)

    result = asyncio.run(registry.call("website_content_extractor", {"url": fake_web.url("/huge")}))

    assert not result.is_error, result.text
    assert result.meta["cut"] and result.meta["tokens"] <= 4096
    assert result.text.endswith(f"[cut to {result.meta['tokens']} tokens]")
    assert fake_web.huge_bytes_sent < 25_000_000  # the client hung up long before 50 MB


def test_extractor_refuses_private_and_metadata_addresses_directly_and_after_redirects(fake_web, embedder):
    registry = registry_for(options(fake_web), embedder)

    def read(url: str):
        return asyncio.run(registry.call("website_content_extractor", {"url": url}))

    metadata = read(fake_web.url("/to-metadata"))
    assert metadata.is_error
    assert (f"refused the redirect from {fake_web.url('/to-metadata')} to "
            "http://169.254.169.254/latest/meta-data/: 169.254.169.254 is a cloud metadata address"
            ) in metadata.text
    private = read(fake_web.url("/to-private"))
    assert private.is_error and "to http://10.0.0.1/admin: 10.0.0.1 is a private address" in private.text
    for url in ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://[fd00:ec2::254]/"):
        direct = read(url)
        assert direct.is_error and direct.text.startswith(f"refused {url}: "), direct.text

    closed = registry_for(options(fake_web, allow_private=False), embedder)
    loopback = asyncio.run(closed.call("website_content_extractor", {"url": fake_web.url("/to-metadata")}))
    assert loopback.is_error and "127.0.0.1 is a loopback address" in loopback.text
    wide_open = registry_for(options(fake_web, allow_private=True), embedder)
    still = asyncio.run(wide_open.call("website_content_extractor", {"url": fake_web.url("/to-metadata")}))
    assert still.is_error and "cloud metadata address" in still.text


def test_extractor_reports_timeouts_and_non_html_as_errors(fake_web, embedder):
    registry = registry_for(options(fake_web, page_timeout_s=0.3), embedder)

    slow = asyncio.run(registry.call("website_content_extractor", {"url": fake_web.url("/slow")}))
    image = asyncio.run(registry.call("website_content_extractor", {"url": fake_web.url("/image.png")}))
    ftp = asyncio.run(registry.call("website_content_extractor", {"url": "ftp://example.com/file"}))

    assert slow.is_error and slow.text == f"{fake_web.url('/slow')} did not load within 0.3 s"
    assert image.is_error and "is image/png, not HTML or text" in image.text
    assert ftp.is_error and "only http and https URLs are fetched" in ftp.text


def test_registered_tools_have_mistralrs_names_and_schemas(embedder):
    registry = registry_for(SearchOptions(), embedder)

    specs = {spec.name: spec for spec in registry.specs()}

    assert set(specs) == {"search_the_web", "website_content_extractor"}
    assert specs["search_the_web"].input_schema["required"] == ["query"]
    assert specs["website_content_extractor"].input_schema["properties"]["url"]["type"] == "string"
    assert {spec.source for spec in specs.values()} == {"web_search"}
    register_search_tools(registry, SearchOptions(), embedder=embedder)  # registering again replaces the set
    assert len(registry) == 2


def test_context_size_per_request_changes_the_budget(fake_web, embedder):
    registry = registry_for(options(fake_web, context_size="high"), embedder)
    tool = registry.get("website_content_extractor")

    high = asyncio.run(tool.call({"url": fake_web.url("/huge")}))
    low = asyncio.run(tool.with_context_size("low").call({"url": fake_web.url("/huge")}))

    assert 4096 < high.meta["tokens"] <= 16384 and low.meta["tokens"] <= 4096
