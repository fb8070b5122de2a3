"""The MCP server over streamable HTTP at /mcp of the real app (uvicorn on 127.0.0.1, in a thread): the SDK
client end to end, raw JSON-RPC for bad input, Origin/Host/token checks, and 20 concurrent sessions."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager

import anyio
import httpx
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from agent_runtime.mcp_server import build_mcp_server, mcp_http_app
from agent_runtime.openai import create_app
from agent_runtime.runtime import Runtime, ServerSettings

MODEL = "SmolLM2-135M-Instruct"
CORS_ORIGIN = "https://app.example"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "raw-test", "version": "0"}}}
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_asgi(app):
    """Run an ASGI app on a free 127.0.0.1 port (uvicorn in a thread); yield its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-mcp-test", daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not come up")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def mcp_url(smollm_engine):
    runtime = Runtime({MODEL: smollm_engine}, ServerSettings(cors_origins=(CORS_ORIGIN,)))
    with serve_asgi(create_app(runtime)) as base:
        yield f"{base}/mcp"


def rpc(url: str, payload, session: str | None = None, **headers: str) -> tuple[httpx.Response, list[dict]]:
    """POST one JSON-RPC message (or raw bytes); the response, and the JSON-RPC messages in it (JSON/SSE)."""
    sent = {**HEADERS, **headers}
    if session:
        sent |= {"Mcp-Session-Id": session, "Mcp-Protocol-Version": "2025-11-25"}
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = httpx.post(url, content=body, headers=sent, timeout=60)
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        messages = [json.loads(line[5:]) for line in response.text.splitlines()
                    if line.startswith("data:") and line[5:].strip()]
    else:
        try:
            messages = [response.json()]
        except ValueError:
            messages = []
    return response, messages


def open_session(url: str, **headers: str) -> str:
    response, messages = rpc(url, INITIALIZE, **headers)
    assert response.status_code == 200 and messages[0]["result"]["serverInfo"]["name"] == "agent-runtime"
    session = response.headers["mcp-session-id"]
    assert rpc(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session, **headers)[0] \
        .status_code == 202
    return session


async def wait_idle(engine, timeout_s: float = 10.0) -> dict:
    with anyio.move_on_after(timeout_s):
        while True:
            stats = engine.stats()
            if stats["running"] == 0 and stats["waiting"] == 0 and stats["kv_blocks_used"] == 0:
                return stats
            await anyio.sleep(0.05)
    return engine.stats()


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")  # logging/setLevel
@pytest.mark.parametrize("mode", ["legacy", "auto"])  # 2025-11-25 handshake, and 2026-07-28 per request
async def test_session_lists_reads_and_streams_chat(mcp_url, mode):
    logs, progress = [], []

    async def on_log(params) -> None:
        logs.append(params.data)

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async with Client(mcp_url, mode=mode, logging_callback=on_log, log_level="info") as client:
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
        tools = {t.name for t in (await client.list_tools()).tools}
        assert tools == {"chat", "complete", "embed", "list_models"}
        assert [str(r.uri) for r in (await client.list_resources()).resources] == [f"model://{MODEL}"]
        assert [p.name for p in (await client.list_prompts()).prompts] == ["summarize", "tool-use"]
        card = json.loads((await client.read_resource(f"model://{MODEL}")).contents[0].text)
        assert card["id"] == MODEL and card["context_length"] == 8192
        result = await client.call_tool("chat", {"prompt": "What is the capital of France?", "max_tokens": 10,
                                                 "temperature": 0}, progress_callback=on_progress)
    assert "Paris" in result.content[0].text
    assert "".join(m or "" for _, _, m in progress) == result.structured_content["text"]
    assert [d for d, _, _ in progress] == list(range(1, len(progress) + 1)) and progress[0][1] == 10
    assert any("generating up to 10 tokens" in str(m) for m in logs)


async def test_cancelled_call_frees_the_engine_and_the_session_goes_on(mcp_url, smollm_engine):
    before = smollm_engine.stats()["requests_aborted"]
    progress = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    async with Client(mcp_url, mode="legacy") as client:
        async with anyio.create_task_group() as tasks:
            async def long_chat() -> None:
                await client.call_tool("chat", {"prompt": "Write a long story about a dragon.",
                                                "max_tokens": 2000}, progress_callback=on_progress)

            tasks.start_soon(long_chat)
            with anyio.fail_after(60):
                while len(progress) < 3:
                    await anyio.sleep(0.02)
            tasks.cancel_scope.cancel()
        stats = await wait_idle(smollm_engine)
        assert (stats["running"], stats["waiting"], stats["kv_blocks_used"]) == (0, 0, 0)
        assert stats["requests_aborted"] == before + 1
        models = (await client.call_tool("list_models", {})).structured_content["models"]
        assert models[0]["running"] == 0


async def test_a_dropped_stream_is_not_a_cancel_but_ending_the_session_is(mcp_url, smollm_engine):
    """Streamable HTTP: a client may drop the response stream and come back; it cancels with
    notifications/cancelled, or by ending the session (DELETE), which aborts what the session runs."""
    session = open_session(mcp_url)
    headers = {**HEADERS, "Mcp-Session-Id": session, "Mcp-Protocol-Version": "2025-11-25"}
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "complete", "arguments": {"prompt": "Once upon a time", "max_tokens": 2000},
        "_meta": {"progressToken": "p"}}}
    async with httpx.AsyncClient(timeout=60) as http:
        async with http.stream("POST", mcp_url, json=call, headers=headers) as response:
            progress = 0
            async for line in response.aiter_lines():
                progress += "notifications/progress" in line
                if progress == 3:
                    break
        await anyio.sleep(0.3)
        assert smollm_engine.stats()["running"] == 1  # still generating for the client
        assert (await http.delete(mcp_url, headers=headers)).status_code == 200
    stats = await wait_idle(smollm_engine)
    assert (stats["running"], stats["waiting"], stats["kv_blocks_used"]) == (0, 0, 0)


async def test_twenty_concurrent_sessions_match_the_same_calls_one_by_one(mcp_url, smollm_engine):
    prompts = ["What is the capital of France?", "Name a primary color.", "What is 2 + 2?", "Say hello."]

    async def chat(prompt: str) -> str:
        async with Client(mcp_url, mode="legacy") as client:
            result = await client.call_tool("chat", {"prompt": prompt, "max_tokens": 16, "temperature": 0})
            assert not result.is_error, result.content
            return result.structured_content["text"]

    alone = {prompt: await chat(prompt) for prompt in prompts}
    together: list[str | None] = [None] * 20
    peak = 0

    async def run(i: int) -> None:
        together[i] = await chat(prompts[i % len(prompts)])

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, smollm_engine.stats()["running"])
            await anyio.sleep(0.01)

    with anyio.fail_after(120):
        async with anyio.create_task_group() as watcher:
            watcher.start_soon(watch)
            async with anyio.create_task_group() as tasks:
                for i in range(20):
                    tasks.start_soon(run, i)
            watcher.cancel_scope.cancel()
    assert together == [alone[prompts[i % len(prompts)]] for i in range(20)]
    assert peak > 1  # they really ran side by side


def test_endpoint_is_exactly_mcp_and_answers_malformed_json_rpc(mcp_url):
    response, messages = rpc(mcp_url, b"{not json")
    assert response.status_code == 400 and messages[0]["error"]["code"] == -32700
    response, messages = rpc(mcp_url, {"jsonrpc": "2.0", "id": 7, "method": "tools/list"})  # no initialize
    assert response.status_code == 400 and messages[0]["error"]["code"] == -32600
    assert "session" in messages[0]["error"]["message"].lower()

    session = open_session(mcp_url)  # POST /mcp itself: no redirect to /mcp/
    response, messages = rpc(mcp_url, b'{"jsonrpc": "2.0", "id": 2, "method": ', session)
    assert messages[0]["error"]["code"] == -32700
    _, messages = rpc(mcp_url, {"jsonrpc": "2.0", "id": 3, "method": "no/such/method"}, session)
    assert messages[0]["id"] == 3 and messages[0]["error"]["code"] == -32601
    _, messages = rpc(mcp_url, {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                                "params": {"name": "nope", "arguments": {}}}, session)
    result = messages[-1]["result"]
    assert result["isError"] and "Unknown tool" in result["content"][0]["text"]
    arguments = {"prompt": "hi", "max_tokens": "many"}
    _, messages = rpc(mcp_url, {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                                "params": {"name": "chat", "arguments": arguments}}, session)
    result = messages[-1]["result"]
    assert result["isError"] and "max_tokens" in result["content"][0]["text"]
    _, messages = rpc(mcp_url, {"jsonrpc": "2.0", "id": 6, "method": "tools/list"}, session)  # still alive
    assert len(messages[-1]["result"]["tools"]) == 4


@pytest.mark.parametrize(("headers", "status"), [
    ({"Origin": "http://evil.example"}, 403),
    ({"Origin": "null"}, 403),
    ({"Origin": "http://localhost.evil.example:8080"}, 403),
    ({"Host": "evil.example:1234"}, 421),  # a DNS-rebinding page reaches 127.0.0.1 under its own name
    ({"Origin": "http://localhost:5173"}, 200),
    ({"Origin": "http://127.0.0.1:3000"}, 200),
    ({"Origin": CORS_ORIGIN}, 200),
    ({}, 200),
])
def test_origin_and_host_are_checked(mcp_url, headers, status):
    response, _ = rpc(mcp_url, INITIALIZE, **headers)
    assert response.status_code == status, response.text


async def test_bearer_token_guards_mcp(smollm_engine):
    runtime = Runtime({MODEL: smollm_engine}, ServerSettings(api_key="api-key", mcp_api_key="mcp-key"))
    with serve_asgi(create_app(runtime)) as base:
        url = f"{base}/mcp"
        for authorization in (None, "Bearer api-key", "Bearer wrong", "mcp-key"):
            sent = {"Authorization": authorization} if authorization else {}
            response, messages = rpc(url, INITIALIZE, **sent)
            assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
            assert messages[0]["error"]["message"].startswith("missing or invalid token")
        assert rpc(url, INITIALIZE, Authorization="Bearer mcp-key")[0].status_code == 200
        assert httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer api-key"}).status_code == 200
        async with httpx2.AsyncClient(headers={"Authorization": "Bearer mcp-key"}) as http:
            async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
                models = (await client.call_tool("list_models", {})).structured_content["models"]
                assert models[0]["id"] == MODEL

    runtime = Runtime({MODEL: smollm_engine}, ServerSettings(api_key="api-key"))  # the MCP key defaults to it
    with serve_asgi(create_app(runtime)) as base:
        assert rpc(f"{base}/mcp", INITIALIZE)[0].status_code == 401
        assert rpc(f"{base}/mcp", INITIALIZE, Authorization="Bearer api-key")[0].status_code == 200


async def test_custom_server_no_mcp_and_a_separate_port(smollm_engine):
    runtime = Runtime({MODEL: smollm_engine})
    server = build_mcp_server(runtime)

    @server.tool(description="A fixture registered by a test.")
    def fixture_tool() -> str:
        return "fixture ok"

    with serve_asgi(create_app(runtime, mcp_server=server)) as base:
        async with Client(f"{base}/mcp", mode="legacy") as client:
            assert (await client.call_tool("fixture_tool", {})).content[0].text == "fixture ok"

    off = Runtime({MODEL: smollm_engine}, ServerSettings(mcp_http=False))
    with serve_asgi(create_app(off)) as base:
        assert rpc(f"{base}/mcp", INITIALIZE)[0].status_code == 404

    with serve_asgi(mcp_http_app(build_mcp_server(runtime), runtime.settings)) as base:
        async with Client(f"{base}/mcp", mode="legacy") as client:
            assert (await client.call_tool("list_models", {})).structured_content["models"][0]["id"] == MODEL
        assert rpc(f"{base}/mcp", INITIALIZE, Origin="http://evil.example")[0].status_code == 403
