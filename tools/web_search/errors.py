"""The web-search error hierarchy; the tools turn every one of them into an error ToolResult."""

from __future__ import annotations


class WebSearchError(Exception):
    """A search or a page fetch failed; the message says what and why, for the model to read."""


class AddressRefused(WebSearchError):
    """A URL (or a redirect) points at an address the options do not allow (private, metadata, domain)."""


class FetchFailed(WebSearchError):
    """A page could not be read: timeout, HTTP error, not HTML or text, too many redirects."""


class SearchBackendFailed(WebSearchError):
    """The search engine (DuckDuckGo, SearXNG, the callback) did not answer with results."""


class SearchOptionsError(ValueError):
    """A SearchOptions field has a bad value; raised once, where the options are built."""


class EmbeddingModelFailed(WebSearchError):
    """The embedding model that ranks chunks (and counts their tokens) could not be found or loaded."""
