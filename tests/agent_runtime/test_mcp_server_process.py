"""The MCP server as a real process: `agent-runtime mcp` over stdio (the SDK client, as Claude Desktop
launches it, and raw JSON-RPC lines for bad input), and `agent-runtime serve --mcp-port`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import anyio
import httpx
import pytest
from conftest import stop_serve, wait_for_serve
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "engine"))
from tiny_models import save_tiny_model  # noqa: E402

MODEL = "SmolLM2-135M-Instruct"
INITIALIZE = {"jsonrpc": "2.0", "id": 2, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "raw-test", "version": "0"}}}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_model("llama", tmp_path_factory.mktemp("mcp") / "tiny")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stdio_server_with_the_sdk_client(tmp_path):
    errlog = tmp_path / "stderr.txt"
    params = StdioServerParameters(command=sys.executable, env=dict(os.environ),  # the SDK passes a bare env
                                   args=["-m", "agent_runtime", "mcp", "--no-embeddings",
                                         "--kv-cache-memory", "256MiB"])
    logs, progress = [], []

    async def on_log(params) -> None:
        logs.append(params.data)

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async def session(err) -> None:
        async with Client(stdio_client(params, errlog=err), mode="legacy", logging_callback=on_log) as client:
            assert client.server_info.name == "agent-runtime"
            assert {t.name for t in (await client.list_tools()).tools} == {"chat", "complete", "embed",
                                                                          "list_models"}
            assert [p.name for p in (await client.list_prompts()).prompts] == ["summarize", "tool-use"]
            assert [t.uri_template for t in (await client.list_resource_templates()).resource_templates] == \
                ["model://{id}"]
            card = json.loads((await client.read_resource(f"model://{MODEL}")).contents[0].text)
            assert card["context_length"] == 8192

            result = await client.call_tool("chat", {"prompt": "What is the capital of France?",
                                                     "max_tokens": 10, "temperature": 0},
                                            progress_callback=on_progress)
            assert "Paris" in result.content[0].text
            assert "".join(m or "" for _, _, m in progress) == result.structured_content["text"]
            assert any("generating up to 10 tokens" in str(m) for m in logs)

            progress.clear()
            async with anyio.create_task_group() as tasks:  # cancel a long generation once it is under way
                async def long_chat() -> None:
                    await client.call_tool("chat", {"prompt": "Write a long story about a dragon.",
                                                    "max_tokens": 2000}, progress_callback=on_progress)

                tasks.start_soon(long_chat)
                with anyio.fail_after(60):
                    while len(progress) < 3:
                        await anyio.sleep(0.02)
                tasks.cancel_scope.cancel()
            with anyio.fail_after(10):  # the engine in the other process is idle again: seen via list_models
                while True:
                    model = (await client.call_tool("list_models", {})).structured_content["models"][0]
                    if (model["running"], model["waiting"], model["kv_blocks_used"]) == (0, 0, 0):
                        break
                    await anyio.sleep(0.05)
            assert not (await client.call_tool("complete", {"prompt": "Hi", "max_tokens": 2})).is_error

    with open(errlog, "w") as err:
        anyio.run(session, err)
    stderr = errlog.read_text()  # logs go to stderr; stdout was the protocol (the client parsed every line)
    assert "MCP server on stdio" in stderr and "MCP client disconnected" in stderr


def test_stdio_answers_bad_input_with_json_rpc_errors_and_goes_on(tiny_model):
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_runtime", "mcp", "--model", f"tiny={tiny_model}", "--no-embeddings",
         "--kv-cache-memory", "16MiB", "--enable-search"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def send(message) -> None:
        proc.stdin.write((message if isinstance(message, str) else json.dumps(message)) + "\n")
        proc.stdin.flush()

    def answer(request_id) -> tuple[dict, list[dict]]:
        """The response to `request_id`, and the notifications sent before it."""
        notifications = []
        while True:
            line = proc.stdout.readline()
            assert line, "the server closed stdout: " + proc.stderr.read()[-2000:]
            message = json.loads(line)  # stdout carries JSON-RPC only
            if "method" in message:
                notifications.append(message)
            elif message.get("id") == request_id:
                return message, notifications

    try:
        send({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})  # before initialize
        assert answer(1)[0]["error"]["code"] == -32602
        send("{not json")
        assert answer(None)[0]["error"]["code"] == -32700
        send(INITIALIZE)
        assert answer(2)[0]["result"]["serverInfo"]["name"] == "agent-runtime"
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "nope", "arguments": {}}})
        assert answer(3)[0]["result"]["isError"]
        send({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
              "params": {"name": "chat", "arguments": {"prompt": 5}}})
        assert answer(4)[0]["result"]["isError"]
        send({"jsonrpc": "2.0", "id": 5, "method": "no/such/method"})
        assert answer(5)[0]["error"]["code"] == -32601
        send({"jsonrpc": "2.0", "id": 6, "method": "logging/setLevel", "params": {"level": "warning"}})
        assert answer(6)[0]["result"] == {}
        send({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
              "params": {"name": "complete", "arguments": {"prompt": "ab", "max_tokens": 3, "temperature": 0},
                         "_meta": {"progressToken": "p"}}})
        result, notifications = answer(7)
        assert result["result"]["structuredContent"]["usage"]["completion_tokens"] == 3
        assert [n["params"]["progress"] for n in notifications] == [1, 2, 3]  # no info logs under warning
        proc.stdin.close()  # the client leaves: the server exits
        assert proc.wait(timeout=30) == 0
        stderr = proc.stderr.read()
        assert "web search on" in stderr and "MCP server on stdio: 6 tool(s)" in stderr  # + the 2 search tools
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_puts_mcp_on_its_own_port(tiny_model):
    port, mcp_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_runtime", "serve", "--model", f"tiny={tiny_model}", "--no-embeddings",
         "--kv-cache-memory", "16MiB", "--port", str(port), "--mcp-port", str(mcp_port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    try:
        wait_for_serve(proc, f"http://127.0.0.1:{port}", timeout=60)
        reply = httpx.post(f"http://127.0.0.1:{mcp_port}/mcp", json=INITIALIZE, headers=headers, timeout=10)
        assert reply.status_code == 200 and "agent-runtime" in reply.text
        assert httpx.post(f"http://127.0.0.1:{port}/mcp", json=INITIALIZE, headers=headers).status_code == 404
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 200
    finally:
        stop_serve(proc, timeout=30)


@pytest.mark.parametrize(("argv", "message"), [
    (["serve", "--port", "8000", "--mcp-port", "8000"], "invalid --mcp-port 8000"),
    (["serve", "--mcp-port", "70000"], "invalid --mcp-port 70000"),
])
def test_bad_mcp_options_are_named(argv, message):
    from agent_runtime.cli import build_parser
    from agent_runtime.serve_command import server_settings

    with pytest.raises(ValueError, match=message):
        server_settings(build_parser().parse_args(argv))


def test_mcp_options_reach_the_settings():
    from agent_runtime.cli import build_parser
    from agent_runtime.serve_command import server_settings

    settings = server_settings(build_parser().parse_args(
        ["serve", "--host", "0.0.0.0", "--api-key", "a", "--mcp-api-key", "m", "--mcp-reexport", "--no-mcp"]))
    assert (settings.host, settings.api_key, settings.mcp_api_key) == ("0.0.0.0", "a", "m")
    assert settings.mcp_reexport and not settings.mcp_http
    args = build_parser().parse_args(["mcp", "--mcp-config", "x.json", "--mcp-reexport", "--enable-search"])
    assert (args.mcp_config, args.mcp_reexport, args.enable_search, args.no_embeddings) == \
        ("x.json", True, True, False)
