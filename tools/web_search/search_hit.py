"""SearchHit: one result of a search engine, before its page is fetched."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SearchHit:
    """A result as every backend returns it: the page's title, its URL and the engine's snippet."""

    title: str
    url: str
    snippet: str = ""
