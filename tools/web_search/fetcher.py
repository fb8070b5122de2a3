"""PageFetcher: one page over HTTP(S), with every hop's address checked, bounded in time, size and type."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from tools.web_search.address_policy import AddressPolicy
from tools.web_search.domain_filter import DomainFilter
from tools.web_search.errors import AddressRefused, FetchFailed
from tools.web_search.options import SearchOptions

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = frozenset({"text/plain", "text/markdown"})
USER_AGENT = "Mozilla/5.0 (compatible; mcp-agent-runtime-web-search/0.1)"
ACCEPT = "text/html,application/xhtml+xml,text/plain;q=0.9"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class FetchedPage:
    """The bytes of one HTML or text page, as far as the size cap let them be read."""

    url: str  # after redirects
    content_type: str  # one of HTML_TYPES or TEXT_TYPES
    body: bytes
    charset: str | None
    truncated: bool  # the page was longer than max_page_bytes; `body` is its start


class PageFetcher:
    """Fetches pages for the tools: redirects followed by hand so each hop passes the address policy.

    Every hop is resolved once and connected to by the address that was checked (the request goes to
    the IP with the Host header and TLS server name of the original host), so a DNS answer that changes
    between check and connect cannot reach a refused address. No cookies, credentials, proxies or
    keep-alive connections: a pooled connection would be reused across hosts that share an address.
    """

    def __init__(self, options: SearchOptions, transport: httpx.AsyncBaseTransport | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.policy = AddressPolicy(options.allow_private)
        self.domains = DomainFilter(options.allowed_domains, options.blocked_domains)
        self.timeout_s = options.page_timeout_s
        self.max_bytes = options.max_page_bytes
        self.max_redirects = options.max_redirects
        self._transport = transport
        self._ssl_context = ssl_context

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        """An HTTP client for the fetches of one tool call (clients are bound to their event loop)."""
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()  # certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR
        async with httpx.AsyncClient(
                trust_env=False, follow_redirects=False, verify=self._ssl_context, transport=self._transport,
                cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
                limits=httpx.Limits(max_keepalive_connections=0), timeout=self.timeout_s,
                headers={"User-Agent": USER_AGENT, "Accept": ACCEPT},
        ) as client:
            yield client

    async def fetch(self, client: httpx.AsyncClient, url: str) -> FetchedPage:
        """The page at `url`; AddressRefused or FetchFailed (with the URL and the reason) otherwise."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._follow(client, url)
        except TimeoutError as exc:
            raise FetchFailed(f"{url} did not load within {self.timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise FetchFailed(f"could not fetch {url}: {exc or type(exc).__name__}") from exc

    async def _follow(self, client: httpx.AsyncClient, url: str) -> FetchedPage:
        try:
            current = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise FetchFailed(f"{url!r} is not a valid URL: {exc}") from exc
        previous: httpx.URL | None = None
        for _ in range(self.max_redirects + 1):
            try:
                address = await self._checked_address(current)
            except AddressRefused as exc:
                hop = f"the redirect from {previous} to {current}" if previous else str(current)
                raise AddressRefused(f"refused {hop}: {exc}") from exc
            response = await client.send(_pinned_request(client, current, address), stream=True)
            try:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    target = current.join(response.headers["location"]).copy_with(fragment=None)
                    previous, current = current, target
                    continue
                if not 200 <= response.status_code < 300:
                    raise FetchFailed(f"{current} answered HTTP {response.status_code}")
                return await self._read(current, response)
            finally:
                await response.aclose()
        raise FetchFailed(f"{url} redirected more than {self.max_redirects} times")

    async def _checked_address(self, url: httpx.URL) -> str:
        if url.scheme not in ("http", "https"):
            raise AddressRefused(f"only http and https URLs are fetched, not {url.scheme}:")
        if url.userinfo:
            raise AddressRefused("URLs with credentials are not fetched")
        host = url.raw_host.decode("ascii")
        if not host:
            raise AddressRefused("the URL has no host")
        reason = self.domains.refusal(host)
        if reason is not None:
            raise AddressRefused(reason)
        return await self.policy.resolve(host.strip("[]"), url.port or (443 if url.scheme == "https" else 80))

    async def _read(self, url: httpx.URL, response: httpx.Response) -> FetchedPage:
        declared = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if declared and declared not in HTML_TYPES | TEXT_TYPES:
            raise FetchFailed(f"{url} is {declared}, not HTML or text")
        body, truncated = await _read_capped(response, self.max_bytes)
        content_type = declared or _sniff(body)
        if content_type is None:
            raise FetchFailed(f"{url} has no content type and does not look like HTML or text")
        return FetchedPage(str(url), content_type, body, response.charset_encoding, truncated)


def _pinned_request(client: httpx.AsyncClient, url: httpx.URL, address: str) -> httpx.Request:
    """A GET of `url` sent to `address`, with the Host header and TLS server name of url's host."""
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    return client.build_request("GET", url.copy_with(host=address),
                                headers={"Host": url.netloc.decode("ascii")}, extensions=extensions)


async def _read_capped(response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    """The body up to max_bytes (decoded from its content-encoding); stops reading past the cap."""
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        if size + len(chunk) > max_bytes:
            parts.append(chunk[:max_bytes - size])
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), False


def _sniff(body: bytes) -> str | None:
    """text/html or text/plain for a body sent without a content type; None for anything binary."""
    head = body[:1024]
    if b"\x00" in head:
        return None
    start = head.lstrip()[:15].lower()
    if start.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<p", b"<div", b"<!--")):
        return "text/html"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a character cut at the end of the sniffed bytes is fine
            return None
    return "text/plain"

