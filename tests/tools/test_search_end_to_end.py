"""`agent-runtime serve --enable-search` against the fake web: the model answers from a page only the fake
web has, and the answer comes with that page's URL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest
from fake_web import Response

FACT = "The Zorblax festival is held every year in the village of Quillmere on the ninth of March."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def search_server(fake_web):
    page = fake_web.page("/zorblax", "The Zorblax festival", FACT,
                         "Visitors bring lanterns and the festival ends with a boat parade on the lake.")
    def search(handler, query):  # any query: the small model words it its own way ("Zorblax_Festival")
        rows = [{"url": page, "title": "The Zorblax festival", "content": "A village festival", "engine": "fake"}]
        return Response(200, {"Content-Type": "application/json"}, json.dumps({"results": rows}).encode())

    fake_web.routes["/search"] = search
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "agent_runtime", "serve", "--port", str(port), "--no-embeddings", "--no-mcp",
         "--enable-search", "--search-backend", "searxng", "--searxng-url", fake_web.base,
         "--search-allow-private", "127.0.0.1"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stderr.read()
            time.sleep(0.5)
        yield base, page
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_the_model_answers_from_the_fake_page_with_its_url(search_server):
    base, page = search_server
    tools = {t["name"]: t for t in httpx.get(f"{base}/v1/tools").json()["data"]}
    assert {"search_the_web", "website_content_extractor"} <= tools.keys()
    assert tools["search_the_web"]["input_schema"]["required"] == ["query"]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=300)
    response = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", temperature=0, max_tokens=60,
        messages=[{"role": "user", "content": "Search the web for: Zorblax festival. Where is it held?"}],
        tool_choice={"type": "function", "function": {"name": "search_the_web"}}, parallel_tool_calls=False,
        extra_body={"web_search_options": {"search_context_size": "low"}},
    )
    executions = response.model_extra["tool_executions"]
    assert executions[0]["name"] == "search_the_web" and not executions[0]["is_error"], executions
    output = executions[0]["output"]
    assert page in output and "Quillmere" in output  # the fact, cited with its URL
    answer = response.choices[0].message.content
    assert "Quillmere" in answer or page in answer, answer


def test_registry_copies_hold_search_tools_to_a_request_budget():
    from tools import ToolRegistry, register_search_tools
    from tools.web_search import SearchOptions

    registry = ToolRegistry()
    register_search_tools(registry, SearchOptions(backend="searxng", searxng_url="http://127.0.0.1:9"))
    low = [registry.get(n).with_context_size("low") for n in registry.names()]
    copy = registry.with_replaced(low)
    assert copy.names() == registry.names()
    assert all(copy.get(n).context_size == "low" for n in copy.names())
    assert all(registry.get(n).context_size is None for n in registry.names())  # None: the options default
