"""PageFetcher against a real server on 127.0.0.1: redirects, cookies, caps, types, pinned Host."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from contextlib import contextmanager

import pytest
import trustme
from fake_web import QuietServer, Response, handler_class

from tools.web_search import SearchOptions
from tools.web_search.errors import AddressRefused, FetchFailed
from tools.web_search.fetcher import PageFetcher


def fetch(url: str, ssl_context=None, **options):
    settings = dict(allow_private={"127.0.0.1"}, page_timeout_s=2.0)
    settings.update(options)
    fetcher = PageFetcher(SearchOptions(**settings), ssl_context=ssl_context)

    async def run():
        async with fetcher.client() as client:
            return await fetcher.fetch(client, url)

    return asyncio.run(run())


def test_cookies_set_by_a_page_are_never_sent_back(fake_web):
    fake_web.routes["/login"] = Response(302, {"Set-Cookie": "session=secret; Path=/", "Location": "/home"})
    fake_web.page("/home", "Home", "Welcome.")

    page = fetch(fake_web.url("/login"))

    assert page.url == fake_web.url("/home")
    sent = dict(fake_web.requests)["/home"]
    assert "cookie" not in sent and "authorization" not in sent


def test_redirects_are_bounded(fake_web):
    with pytest.raises(FetchFailed, match=r"/loop redirected more than 3 times"):
        fetch(fake_web.url("/loop"), max_redirects=3)
    assert [path for path, _ in fake_web.requests] == ["/loop"] * 4


def test_the_body_is_cut_at_the_size_cap(fake_web):
    fake_web.routes["/long"] = Response(200, {"Content-Type": "text/plain"}, b"word " * 4000)

    page = fetch(fake_web.url("/long"), max_page_bytes=2048)

    assert page.truncated and len(page.body) == 2048


def test_content_types_are_checked_and_sniffed_when_missing(fake_web):
    fake_web.routes["/untyped.html"] = Response(200, {}, b"<!DOCTYPE html><html><body><p>Hi</p></body>")
    fake_web.routes["/untyped.bin"] = Response(200, {}, bytes(range(256)))
    fake_web.routes["/notes.txt"] = Response(200, {"Content-Type": "text/plain; charset=latin-1"},
                                             "café".encode("latin-1"))

    assert fetch(fake_web.url("/untyped.html")).content_type == "text/html"
    notes = fetch(fake_web.url("/notes.txt"))
    assert (notes.content_type, notes.charset) == ("text/plain", "latin-1")
    with pytest.raises(FetchFailed, match="no content type and does not look like HTML or text"):
        fetch(fake_web.url("/untyped.bin"))
    with pytest.raises(FetchFailed, match="is application/octet-stream, not HTML or text"):
        fetch(fake_web.url("/file.bin"))


def test_http_errors_and_credentials_in_urls(fake_web):
    with pytest.raises(FetchFailed, match=r"/missing answered HTTP 404"):
        fetch(fake_web.url("/missing"))
    with pytest.raises(AddressRefused, match="URLs with credentials are not fetched"):
        fetch(fake_web.url("/home").replace("http://", "http://user:pw@"))


def test_a_host_is_reached_at_its_checked_address_under_its_own_name(fake_web):
    if socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)[0][4][0] != "127.0.0.1":
        pytest.skip("localhost does not resolve to 127.0.0.1 first here")
    fake_web.page("/home", "Home", "Welcome.")
    port = fake_web.base.rsplit(":", 1)[1]

    page = fetch(f"http://localhost:{port}/home", allow_private={"localhost", "127.0.0.1", "::1"})

    assert page.url == f"http://localhost:{port}/home"
    assert dict(fake_web.requests)["/home"]["host"] == f"localhost:{port}"


def test_https_is_verified_against_the_host_name_while_connecting_to_the_checked_address(fake_web):
    if socket.getaddrinfo("localhost", 443, type=socket.SOCK_STREAM)[0][4][0] != "127.0.0.1":
        pytest.skip("localhost does not resolve to 127.0.0.1 first here")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)  # valid for the name, not for 127.0.0.1
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    fake_web.page("/secure", "Secure", "Over TLS.")
    with serve_tls(fake_web, server_context) as port:
        page = fetch(f"https://localhost:{port}/secure", client_context, allow_private={"localhost"})
        assert page.url == f"https://localhost:{port}/secure" and b"Over TLS." in page.body
        with pytest.raises(FetchFailed, match="CERTIFICATE_VERIFY_FAILED"):
            fetch(f"https://127.0.0.1:{port}/secure", client_context)


@contextmanager
def serve_tls(web, context):
    """The fake web's routes over HTTPS on another free 127.0.0.1 port."""
    server = QuietServer(("127.0.0.1", 0), handler_class(web))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_redirect_to_a_blocked_domain_is_refused(fake_web):
    fake_web.routes["/out"] = Response(302, {"Location": "https://tracker.example.net/pixel"})

    with pytest.raises(AddressRefused, match="tracker.example.net is in the blocked domain example.net"):
        fetch(fake_web.url("/out"), blocked_domains=["example.net"])
