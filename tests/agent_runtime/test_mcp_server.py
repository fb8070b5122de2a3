"""The runtime's MCP server in memory: an SDK Client speaking real JSON-RPC to build_mcp_server's server
(the 2025-11-25 handshake era, as Claude Desktop and most clients use it) over the embedded model."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError

from agent_runtime import __version__
from agent_runtime.mcp_server import build_mcp_server
from agent_runtime.runtime import Runtime, ServerSettings
from tools import Tool, ToolResult, ToolSpec

MODEL = "SmolLM2-135M-Instruct"
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def runtime(smollm_engine):
    return Runtime({MODEL: smollm_engine})


async def wait_idle(engine, timeout_s: float = 10.0) -> dict:
    """The engine's counters once nothing runs and no KV block is held (or after the timeout)."""
    with anyio.move_on_after(timeout_s):
        while True:
            stats = engine.stats()
            if stats["running"] == 0 and stats["waiting"] == 0 and stats["kv_blocks_used"] == 0:
                return stats
            await anyio.sleep(0.05)
    return engine.stats()


class Progress:
    """A progress callback that keeps every notification."""

    def __init__(self) -> None:
        self.events: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((progress, total, message))

    @property
    def text(self) -> str:
        return "".join(m or "" for _, _, m in self.events)


class Logs:
    def __init__(self) -> None:
        self.messages: list[tuple[str, Any]] = []

    async def __call__(self, params) -> None:
        self.messages.append((params.level, params.data))


class EchoTool(Tool):
    spec = ToolSpec("echo", "Echo the text back.",
                    {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})

    async def call(self, arguments: dict[str, Any]) -> ToolResult:
        return ToolResult(f"echo: {arguments.get('text', '')}", structured={"echoed": arguments.get("text")})


async def test_server_describes_its_tools_with_schemas(runtime):
    async with Client(build_mcp_server(runtime), mode="legacy") as client:
        assert client.server_info.name == "agent-runtime" and client.server_info.version == __version__
        assert client.server_capabilities.logging is not None  # logging/setLevel is answered
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {"chat", "complete", "embed", "list_models"}
    assert all(t.description and t.input_schema["type"] == "object" for t in tools.values())
    chat = tools["chat"].input_schema["properties"]
    assert set(chat) >= {"messages", "prompt", "model", "max_tokens", "temperature", "top_p", "seed", "stop",
                         "use_tools"}
    assert (chat["max_tokens"]["default"], chat["temperature"]["default"], chat["use_tools"]["default"]) == \
        (256, 0.7, False)
    assert set(tools["chat"].output_schema["properties"]) >= {"text", "model", "finish_reason", "usage",
                                                              "tool_executions"}
    assert tools["complete"].input_schema["required"] == ["prompt"]
    assert tools["embed"].input_schema["required"] == ["input"]


async def test_models_are_resources_and_a_template(runtime, smollm_engine):
    async with Client(build_mcp_server(runtime), mode="legacy") as client:
        resources = (await client.list_resources()).resources
        templates = (await client.list_resource_templates()).resource_templates
        card = json.loads((await client.read_resource(f"model://{MODEL}")).contents[0].text)
        with pytest.raises(MCPError, match="no model 'nope'"):
            await client.read_resource("model://nope")
        models = (await client.call_tool("list_models", {})).structured_content["models"]
    assert [str(r.uri) for r in resources] == [f"model://{MODEL}"]
    assert [t.uri_template for t in templates] == ["model://{id}"]
    assert card["context_length"] == smollm_engine.core.max_model_len == 8192
    dtype, device = str(smollm_engine.loaded.dtype).removeprefix("torch."), str(smollm_engine.loaded.device)
    assert (card["model_type"], card["dtype"], card["device"]) == ("llama", dtype, device)
    assert card["config"]["hidden_size"] == 576
    assert "<|im_start|>" in card["chat_template"] and card["tool_parser"] == "hermes"
    keys = ("id", "kind", "context_length", "dtype", "device", "kv_blocks_total")
    assert {k: models[0][k] for k in keys} == \
        {"id": MODEL, "kind": "generation", "context_length": 8192, "dtype": dtype, "device": device,
         "kv_blocks_total": smollm_engine.stats()["kv_blocks_total"]}


async def test_prompts_render(runtime):
    async with Client(build_mcp_server(runtime), mode="legacy") as client:
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        summary = await client.get_prompt("summarize", {"text": "Cats sleep a lot.", "style": "one sentence"})
        tool_use = await client.get_prompt("tool-use", {"task": "find the time in Oslo"})
    assert [(a.name, a.required) for a in prompts["summarize"].arguments] == \
        [("text", True), ("style", False)]
    assert [(a.name, a.required) for a in prompts["tool-use"].arguments] == [("task", True)]
    text = summary.messages[0].content.text
    assert "Cats sleep a lot." in text and "(one sentence)" in text
    assert "find the time in Oslo" in tool_use.messages[0].content.text
    assert "- chat:" in tool_use.messages[0].content.text


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")  # logging/setLevel
async def test_chat_streams_its_text_as_progress_and_logs_at_the_clients_level(runtime):
    logs = Logs()
    async with Client(build_mcp_server(runtime), mode="legacy", logging_callback=logs) as client:
        progress = Progress()
        result = await client.call_tool("chat", {"prompt": "What is the capital of France?", "max_tokens": 12,
                                                 "temperature": 0}, progress_callback=progress)
        answer = result.structured_content
        assert not result.is_error and result.content[0].text == answer["text"]
        assert "Paris" in answer["text"] and answer["model"] == MODEL and answer["tool_executions"] == []
        assert answer["usage"]["completion_tokens"] == len(progress.events) <= 12
        assert [p for p, _, _ in progress.events] == list(range(1, len(progress.events) + 1))
        assert {t for _, t, _ in progress.events} == {12}
        assert progress.text == answer["text"]
        assert [level for level, _ in logs.messages] == ["info", "info"]  # the default level: info
        assert "generating up to 12 tokens" in logs.messages[0][1]

        await client.set_logging_level("warning")
        messages = [{"role": "system", "content": "Answer in one word."},
                    {"role": "user", "content": "What is the capital of France?"}]
        again = await client.call_tool("chat", {"messages": messages, "max_tokens": 4, "temperature": 0})
        assert not again.is_error and again.structured_content["usage"]["completion_tokens"] <= 4
        assert len(logs.messages) == 2  # nothing below warning after setLevel

        await client.set_logging_level("debug")
        await client.call_tool("complete", {"prompt": "The capital of France is", "max_tokens": 3})
        assert len(logs.messages) == 4


async def test_complete_continues_raw_text(runtime):
    async with Client(build_mcp_server(runtime), mode="legacy") as client:
        progress = Progress()
        result = await client.call_tool("complete", {"prompt": "The capital of France is", "max_tokens": 4,
                                                     "temperature": 0, "stop": ["\n"]},
                                        progress_callback=progress)
    assert result.structured_content["text"].strip().startswith("Paris")
    assert result.structured_content["usage"]["prompt_tokens"] == 5
    assert progress.text == result.content[0].text == result.structured_content["text"]


@pytest.mark.parametrize(("arguments", "message"), [
    ({}, "exactly one of `messages`"),
    ({"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}, "exactly one of `messages`"),
    ({"messages": []}, "messages is empty"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "hi", "temperature": -1}, "temperature"),
    ({"prompt": "hi", "top_p": 2}, "top_p"),
    ({"prompt": "hi", "model": "nope"}, "the model 'nope' does not exist; served: SmolLM2-135M-Instruct"),
    ({"prompt": "hi", "max_tokens": 9000}, "context window of 8192 tokens"),
])
async def test_bad_chat_arguments_are_tool_errors(runtime, smollm_engine, arguments, message):
    async with Client(build_mcp_server(runtime), mode="legacy") as client:
        result = await client.call_tool("chat", arguments)
        assert result.is_error and message in result.content[0].text
        assert not (await client.call_tool("list_models", {})).is_error  # the session goes on
    assert runtime.in_flight.get(MODEL, 0) == 0


async def test_unknown_tool_and_missing_embedder_are_tool_errors(runtime):
    async with Client(build_mcp_server(runtime), mode="legacy") as client:
        unknown = await client.call_tool("nope", {})
        embed = await client.call_tool("embed", {"input": "hello"})
    assert unknown.is_error and "Unknown tool: nope" in unknown.content[0].text
    assert embed.is_error and "no embedding model" in embed.content[0].text


async def test_embed_uses_the_runtimes_embedder(smollm_engine):
    class FakeEmbedder:  # the embedding model is tested in test_embeddings.py; here only the tool's plumbing
        id, dimensions = "fake-embedder", 2

        def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
            return [[1.0, float(len(t))] for t in texts], sum(len(t) for t in texts)

    runtime = Runtime({MODEL: smollm_engine}, embedder=FakeEmbedder())
    async with Client(build_mcp_server(runtime), mode="legacy") as client:
        one = await client.call_tool("embed", {"input": "abc"})
        many = await client.call_tool("embed", {"input": ["a", "bb"]})
        empty = await client.call_tool("embed", {"input": [""]})
    assert one.structured_content == {"model": "fake-embedder", "dimensions": 2, "vectors": [[1.0, 3.0]],
                                      "prompt_tokens": 3}
    assert many.structured_content["vectors"] == [[1.0, 1.0], [1.0, 2.0]]
    assert empty.is_error and "non-empty" in empty.content[0].text


async def test_cancelling_a_call_aborts_the_engine_request(runtime, smollm_engine):
    before = smollm_engine.stats()["requests_aborted"]
    async with Client(build_mcp_server(runtime), mode="legacy") as client:
        progress = Progress()
        with anyio.move_on_after(30) as deadline:
            async with anyio.create_task_group() as tasks:
                async def long_chat() -> None:
                    await client.call_tool("chat", {"prompt": "Write a long story about a dragon.",
                                                    "max_tokens": 2000}, progress_callback=progress)

                tasks.start_soon(long_chat)
                while len(progress.events) < 3:  # generating: cancel (the SDK sends notifications/cancelled)
                    await anyio.sleep(0.02)
                tasks.cancel_scope.cancel()
        assert not deadline.cancelled_caught
        stats = await wait_idle(smollm_engine)
        assert (stats["running"], stats["waiting"], stats["kv_blocks_used"]) == (0, 0, 0)
        assert stats["requests_aborted"] == before + 1
        assert not (await client.call_tool("complete", {"prompt": "Hi", "max_tokens": 1})).is_error
    assert runtime.in_flight.get(MODEL, 0) == 0


async def test_reexport_offers_the_registry_tools(smollm_engine):
    runtime = Runtime({MODEL: smollm_engine})
    runtime.registry.register(EchoTool())
    async with Client(build_mcp_server(runtime, reexport=True), mode="legacy") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        result = await client.call_tool("echo", {"text": "hi"})
    assert tools["echo"].input_schema == EchoTool.spec.input_schema and "chat" in tools
    assert result.content[0].text == "echo: hi" and result.structured_content == {"echoed": "hi"}
    async with Client(build_mcp_server(runtime), mode="legacy") as client:  # not re-exported by default
        assert "echo" not in {t.name for t in (await client.list_tools()).tools}
        assert (await client.call_tool("echo", {"text": "hi"})).is_error


async def test_chat_with_use_tools_runs_the_agent_loop(smollm_engine):
    runtime = Runtime({MODEL: smollm_engine}, ServerSettings(max_tool_rounds=1))
    runtime.registry.register(EchoTool())
    logs = Logs()
    async with Client(build_mcp_server(runtime), mode="legacy", logging_callback=logs) as client:
        result = await client.call_tool("chat", {"prompt": "Say hi.", "max_tokens": 8, "temperature": 0,
                                                 "use_tools": True})
    assert not result.is_error and isinstance(result.structured_content["tool_executions"], list)
    assert any("with 1 tool(s), up to 1 round(s)" in str(data) for _, data in logs.messages)


async def test_the_returned_server_takes_more_tools(runtime):
    server = build_mcp_server(runtime)

    @server.tool(description="A fixture registered by a test.")
    async def fixture_tool(ctx: Context) -> str:
        await ctx.report_progress(1, 1, "done")
        return "fixture ok"

    async with Client(server, mode="legacy") as client:
        assert (await client.call_tool("fixture_tool", {})).content[0].text == "fixture ok"


def test_web_search_tools_are_offered_when_search_is_on(smollm_engine):
    import anyio
    from mcp import Client

    from agent_runtime.mcp_server import build_mcp_server
    from agent_runtime.runtime import Runtime
    from tools import register_search_tools
    from tools.web_search import SearchOptions

    runtime = Runtime({"SmolLM2-135M-Instruct": smollm_engine})
    register_search_tools(runtime.registry, SearchOptions(backend="searxng", searxng_url="http://127.0.0.1:9"))

    async def main():
        async with Client(build_mcp_server(runtime), mode="legacy") as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            result = await client.call_tool("website_content_extractor", {"url": "http://10.0.0.1/x"})
            return tools, result

    tools, result = anyio.run(main)
    assert {"search_the_web", "website_content_extractor", "chat"} <= tools.keys()
    assert tools["search_the_web"].input_schema["required"] == ["query"]
    assert result.is_error  # a private address is refused, as a tool error
