"""SearchOptions: bad values rejected where the options are built, with messages naming the field."""

from __future__ import annotations

import pytest

from tools.web_search import CONTEXT_TOKENS, SearchOptions, SearchOptionsError


def test_defaults_are_duckduckgo_medium_context_no_private_addresses():
    options = SearchOptions()
    assert (options.backend, options.max_results, options.context_tokens) == ("ddg", 10, 8192)
    assert options.allow_private is False and options.embedding_model is None
    assert CONTEXT_TOKENS == {"low": 4096, "medium": 8192, "high": 16384}


def test_values_are_normalized():
    options = SearchOptions(backend="searxng", searxng_url="http://127.0.0.1:8888/",
                            allow_private=["127.0.0.1", "10.0.0.0/8", "LocalHost"],
                            allowed_domains=["*.Example.com", "docs.python.org."],
                            blocked_domains="ads.example.com")
    assert options.searxng_url == "http://127.0.0.1:8888"
    assert options.allow_private == frozenset({"127.0.0.1/32", "10.0.0.0/8", "localhost"})
    assert options.allowed_domains == ("example.com", "docs.python.org")
    assert options.blocked_domains == ("ads.example.com",)
    hash(options)  # frozen and hashable: usable as a cache key by the caller


@pytest.mark.parametrize(("fields", "message"), [
    ({"backend": "bing"}, "backend must be one of ddg, searxng, callback, not 'bing'"),
    ({"backend": "searxng"}, "the searxng backend needs searxng_url"),
    ({"backend": "callback"}, "the callback backend needs callback="),
    ({"max_results": 0}, "max_results must be 1..50"),
    ({"context_size": "huge"}, "context_size must be one of low, medium, high, not 'huge'"),
    ({"page_timeout_s": 0}, "page_timeout_s must be a positive number of seconds"),
    ({"deadline_s": float("inf")}, "deadline_s must be a positive number"),
    ({"max_page_bytes": 10}, "max_page_bytes must be an integer >= 1024"),
    ({"max_redirects": -1}, "max_redirects must be 0..20"),
    ({"cache_ttl_s": -5}, "cache_ttl_s must be >= 0"),
    ({"allow_private": "yes"}, "allow_private must be True, False or a set"),
    ({"allow_private": {"not a host!"}}, "entry 'not a host!' is neither a network nor a host name"),
    ({"blocked_domains": ["http://x.com/"]}, "blocked_domains entry 'http://x.com/' is not a domain name"),
])
def test_bad_values_are_rejected_with_the_field_named(fields, message):
    with pytest.raises(SearchOptionsError) as error:
        SearchOptions(**fields)
    assert message in str(error.value)
    assert isinstance(error.value, ValueError)
