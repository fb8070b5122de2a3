"""Web-search fixtures: a fake web on 127.0.0.1 (fake_web.py) and the embedding model, loaded once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from fake_web import FakeWeb, QuietServer, Response, handler_class, huge_route, slow_route

from tools.web_search import ChunkEmbedder


@pytest.fixture
def fake_web() -> Iterator[FakeWeb]:
    """A fresh fake web on a free 127.0.0.1 port, stopped after the test."""
    web = FakeWeb()
    server = QuietServer(("127.0.0.1", 0), handler_class(web))
    web.base = f"http://127.0.0.1:{server.server_address[1]}"
    web.routes.update({
        "/slow": slow_route(web),
        "/huge": huge_route(web),
        "/file.bin": Response(200, {"Content-Type": "application/octet-stream"}, bytes(range(256)) * 40),
        "/image.png": Response(200, {"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\n" + bytes(500)),
        "/to-metadata": Response(302, {"Location": "http://169.254.169.254/latest/meta-data/"}),
        "/to-private": Response(302, {"Location": "http://10.0.0.1/admin"}),
        "/loop": Response(302, {"Location": "/loop"}),
    })
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield web
    finally:
        web.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="session")
def embedder() -> ChunkEmbedder:
    """The bundled all-MiniLM-L6-v2, loaded once for the whole session (on its own thread, like all its
    torch work: see ChunkEmbedder)."""
    start = time.perf_counter()
    model = ChunkEmbedder()
    asyncio.run(model.run(model.load))
    print(f"\nembedding model loaded in {time.perf_counter() - start:.1f} s")
    return model
