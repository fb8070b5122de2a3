"""A fake web for the web-search tests: a threaded HTTP server on 127.0.0.1 with a SearXNG-style
/search, HTML pages, a slow page, a huge page, binary resources and redirects to refused addresses."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HUGE_PAGE_BYTES = 50_000_000


def html_page(title: str, *paragraphs: str) -> str:
    """An HTML page with boilerplate around an article, as sites serve them."""
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (f"<!doctype html><html><head><title>{title}</title></head><body>"
            "<nav><a href='/'>Home</a> | <a href='/about'>About us</a> | <a href='/shop'>Shop</a></nav>"
            f"<main><article><h1>{title}</h1>{body}</article></main>"
            "<footer>Copyright 2025 Example Media. All rights reserved. Privacy policy. Cookie settings."
            "</footer>"
            "</body></html>")


@dataclass
class Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class FakeWeb:
    """Routes of a threaded HTTP server; a route is a Response or fn(handler, query) -> Response | None."""

    base: str = ""
    routes: dict[str, Response | Callable] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (path, headers) as received
    release: threading.Event = field(default_factory=threading.Event)  # ends the slow page's wait
    huge_bytes_sent: int = 0

    def url(self, path: str) -> str:
        return self.base + path

    def page(self, path: str, title: str, *paragraphs: str) -> str:
        self.routes[path] = Response(200, {"Content-Type": "text/html; charset=utf-8"},
                                     html_page(title, *paragraphs).encode())
        return self.url(path)

    def search_results(self, query_to_paths: dict[str, list[tuple[str, str, str]]]) -> None:
        """SearXNG /search: for a query, results (path, title, snippet) pointing into this server."""

        def search(handler, query):
            q = query.get("q", [""])[0]
            if query.get("format") != ["json"]:
                return Response(403, {}, b"format not allowed")
            rows = [{"url": self.url(p), "title": t, "content": s, "engine": "fake"}
                    for p, t, s in query_to_paths.get(q, [])]
            return Response(200, {"Content-Type": "application/json"},
                            json.dumps({"query": q, "results": rows}).encode())

        self.routes["/search"] = search


def handler_class(web: FakeWeb):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def do_GET(self):  # noqa: N802 - the http.server name
            parts = urlsplit(self.path)
            web.requests.append((parts.path, {k.lower(): v for k, v in self.headers.items()}))
            route = web.routes.get(parts.path, Response(404, {"Content-Type": "text/plain"}, b"not found"))
            if callable(route):
                route = route(self, parse_qs(parts.query))
            if route is None:  # the route wrote its own answer
                return
            self.send_response(route.status)
            for name, value in route.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

    return Handler


def slow_route(web: FakeWeb):
    def slow(handler, query):
        web.release.wait(10)
        return Response(200, {"Content-Type": "text/html"},
                        html_page("Slow page", "SLOWMARKER: tea ceremony text arriving too late.").encode())

    return slow


def huge_route(web: FakeWeb):
    def huge(handler, query):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(HUGE_PAGE_BYTES))
        handler.end_headers()
        handler.wfile.write(b"<html><head><title>Huge almanac</title></head><body>")
        sent = 0
        try:
            while sent < HUGE_PAGE_BYTES:
                entry = f"Weather records of the almanac, entry {sent}: rainfall and frost dates by county. "
                paragraph = f"<p>{entry * 12}</p>\n".encode()
                handler.wfile.write(paragraph)
                sent += len(paragraph)
                web.huge_bytes_sent = sent
        except (BrokenPipeError, ConnectionResetError):
            pass
        handler.close_connection = True
        return None

    return huge


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs of a burst of fetches: a 1 s retransmit stall

    def handle_error(self, request, client_address):  # a client that hangs up early is what some tests do
        pass
