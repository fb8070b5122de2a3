"""SearchOptions: every web-search setting, validated once when the options are built."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tools.web_search.errors import SearchOptionsError
from tools.web_search.search_hit import SearchHit

BACKENDS = ("ddg", "searxng", "callback")
CONTEXT_TOKENS = {"low": 4096, "medium": 8192, "high": 16384}

_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")

# A user search function: (query, max results) -> a sequence of SearchHit, sync or async. Hits may
# also be mappings with "title", "url" and "snippet" (or "href" and "body", as ddgs spells them).
SearchCallback = Callable[[str, int], Sequence[SearchHit | Mapping[str, Any]] | Awaitable[Sequence[Any]]]


@dataclass(frozen=True)
class SearchOptions:
    """How the built-in web-search tools search, fetch and rank.

    `allow_private`: False refuses loopback, private, link-local, multicast, reserved and cloud-metadata
    addresses (checked after DNS resolution, on every redirect); True allows them all except the cloud
    metadata addresses; a set of networks ("127.0.0.1", "10.0.0.0/8", "::1") and host names
    ("localhost") allows exactly those (a metadata address only when named there).
    """

    backend: str = "ddg"
    searxng_url: str | None = None
    callback: SearchCallback | None = None
    max_results: int = 10
    context_size: str = "medium"
    page_timeout_s: float = 8.0
    deadline_s: float = 20.0
    max_page_bytes: int = 2_000_000
    max_redirects: int = 5
    allow_private: bool | frozenset[str] = False
    allowed_domains: tuple[str, ...] = ()
    blocked_domains: tuple[str, ...] = ()
    cache_ttl_s: float = 300.0
    embedding_model: str | None = None  # a directory or hub id; None: the bundled all-MiniLM-L6-v2

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise SearchOptionsError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.backend == "searxng":
            url = (self.searxng_url or "").strip().rstrip("/")
            if not url.startswith(("http://", "https://")):
                raise SearchOptionsError(
                    "the searxng backend needs searxng_url as http(s)://host[:port], "
                    f"not {self.searxng_url!r}")
            object.__setattr__(self, "searxng_url", url)
        if self.backend == "callback" and not callable(self.callback):
            raise SearchOptionsError("the callback backend needs callback=fn(query, max_results) -> hits")
        if not 1 <= self.max_results <= 50:
            raise SearchOptionsError(f"max_results must be 1..50, not {self.max_results!r}")
        context_tokens(self.context_size)
        for name in ("page_timeout_s", "deadline_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise SearchOptionsError(f"{name} must be a positive number of seconds, not {value!r}")
        if not (isinstance(self.cache_ttl_s, int | float) and self.cache_ttl_s >= 0):
            raise SearchOptionsError(
                f"cache_ttl_s must be >= 0 (0 turns the cache off), not {self.cache_ttl_s!r}")
        if not (isinstance(self.max_page_bytes, int) and self.max_page_bytes >= 1024):
            raise SearchOptionsError(
                f"max_page_bytes must be an integer >= 1024, not {self.max_page_bytes!r}")
        if not (isinstance(self.max_redirects, int) and 0 <= self.max_redirects <= 20):
            raise SearchOptionsError(f"max_redirects must be 0..20, not {self.max_redirects!r}")
        object.__setattr__(self, "allow_private", _private_allowance(self.allow_private))
        object.__setattr__(self, "allowed_domains", _domains("allowed_domains", self.allowed_domains))
        object.__setattr__(self, "blocked_domains", _domains("blocked_domains", self.blocked_domains))

    @property
    def context_tokens(self) -> int:
        """The token budget of one tool answer for `context_size`."""
        return CONTEXT_TOKENS[self.context_size]


def context_tokens(size: str) -> int:
    """Tokens of a context size ("low", "medium", "high"), or SearchOptionsError naming the valid ones."""
    if size not in CONTEXT_TOKENS:
        raise SearchOptionsError(
            f"context_size must be one of {', '.join(CONTEXT_TOKENS)}, not {size!r}")
    return CONTEXT_TOKENS[size]


def _private_allowance(value: object) -> bool | frozenset[str]:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise SearchOptionsError(
            f"allow_private must be True, False or a set of networks/host names, not {value!r}")
    entries = set()
    for item in value:
        text = str(item).strip().lower()
        try:
            entries.add(str(ipaddress.ip_network(text, strict=False)))
            continue
        except ValueError:
            pass
        if not _HOST_NAME.fullmatch(text.rstrip(".")):
            raise SearchOptionsError(f"allow_private entry {item!r} is neither a network nor a host name")
        entries.add(text.rstrip("."))
    return frozenset(entries)


def _domains(field: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Iterable):
        raise SearchOptionsError(f"{field} must be a list of domain names, not {value!r}")
    domains = []
    for item in value:
        domain = str(item).strip().lower().removeprefix("*.").strip(".")
        if not domain or any(c in domain for c in "/:@ "):
            raise SearchOptionsError(f"{field} entry {item!r} is not a domain name (like example.com)")
        domains.append(domain)
    return tuple(dict.fromkeys(domains))
