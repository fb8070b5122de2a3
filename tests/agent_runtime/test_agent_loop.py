"""The agent loop: a scripted model stub, then the real SmolLM2 model against a real MCP server, then
`agent-runtime serve --mcp-config` end to end through the `openai` client."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from conftest import free_port, serve

from agent_runtime.agent import AgentLoop
from agent_runtime.config import parse_mcp_config
from agent_runtime.mcp_client import McpClientPool
from agent_runtime.runtime import Runtime
from agent_runtime.tool_calling import ToolChoice
from agent_runtime.tool_parsers import FunctionTool, ToolCall, get_parser
from engine import SamplingParams, StreamChunk
from engine.tokenizer import Tokenizer
from tests.engine.tiny_models import byte_tokenizer
from tools import Tool, ToolRegistry, ToolResult, ToolSpec

ROOT = Path(__file__).resolve().parents[2]
EVERYTHING = ROOT / ".mcp-peers" / "node_modules" / ".bin" / "mcp-server-everything"
needs_everything = pytest.mark.skipif(not EVERYTHING.exists(), reason="run scripts/install_mcp_peers.sh first")
HERMES = get_parser("hermes")


class ScriptedEngine:
    """Stands in for AsyncEngine: answers round i with script[i], records every prompt it was given."""

    def __init__(self, script: list[str]) -> None:
        hf = byte_tokenizer()
        self.tokenizer = Tokenizer(hf, [hf.eos_token_id])
        self.script = list(script)
        self.prompts: list[str] = []

    def check(self, prompt_ids, params) -> None:
        pass

    async def generate(self, prompt_ids, params):
        self.prompts.append(self.tokenizer.decode(prompt_ids))
        text = self.script.pop(0)
        for i in range(0, len(text), 7):  # a few characters per step, as a model streams
            yield StreamChunk("r", text[i:i + 7], [1], None, None)
            await asyncio.sleep(0)
        yield StreamChunk("r", "", [2], None, "stop")


class RecordingTool(Tool):
    """A native tool that waits until `expected` calls have started before any returns."""

    def __init__(self, name: str, log: list[str], started: asyncio.Event | None = None, expected: int = 1) -> None:
        self.spec = ToolSpec(name, f"the {name} tool", {"type": "object", "properties": {"x": {"type": "integer"}}})
        self.log, self.started, self.expected = log, started, expected

    async def call(self, arguments):
        self.log.append(f"start {self.spec.name}")
        if self.started is not None:
            if sum(entry.startswith("start") for entry in self.log) >= self.expected:
                self.started.set()
            await asyncio.wait_for(self.started.wait(), 5)  # sequential execution would time out here
        self.log.append(f"end {self.spec.name}")
        return ToolResult(f"{self.spec.name} says {arguments.get('x', 0) * 2}")


def calls(*pairs) -> str:
    return HERMES.render_calls([ToolCall(f"c{i}", name, json.dumps(args)) for i, (name, args) in enumerate(pairs)])


def test_two_calls_of_a_round_run_concurrently_then_the_model_answers():
    async def main():
        log: list[str] = []
        started = asyncio.Event()
        registry = ToolRegistry()
        registry.register(RecordingTool("alpha", log, started, expected=2))
        registry.register(RecordingTool("beta", log, started, expected=2))
        engine = ScriptedEngine([calls(("alpha", {"x": 1}), ("beta", {"x": 2})), "alpha gave 2, beta gave 4."])
        result = await AgentLoop(engine, HERMES, registry).run([{"role": "user", "content": "go"}], SamplingParams())
        return log, result, engine

    log, result, engine = asyncio.run(main())
    assert log[:2] == ["start alpha", "start beta"]  # both started before either finished
    assert result.message.content == "alpha gave 2, beta gave 4." and result.finish_reason == "stop"
    assert [e.result.text for e in result.executions] == ["alpha says 2", "beta says 4"]
    assert result.rounds == 2
    # The second prompt carries both calls and both results, each with its tool_call_id.
    history = result.messages
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in history[2:]] == [c.id for c in (e.call for e in result.executions)]
    assert "alpha says 2" in engine.prompts[1] and "beta says 4" in engine.prompts[1]


def test_failures_and_unknown_tools_become_results_the_model_reads():
    class Broken(Tool):
        spec = ToolSpec("broken", "fails", {"type": "object"})

        async def call(self, arguments):
            raise RuntimeError("disk on fire")

    async def main():
        registry = ToolRegistry()
        registry.register(Broken())
        engine = ScriptedEngine([calls(("broken", {})), "It failed."])
        return await AgentLoop(engine, HERMES, registry).run([{"role": "user", "content": "go"}], SamplingParams()), \
            engine

    result, engine = asyncio.run(main())
    assert result.executions[0].result.is_error
    assert "disk on fire" in engine.prompts[1]
    assert result.message.content == "It failed."


def test_client_side_calls_end_the_loop_after_server_side_ones_ran():
    async def main():
        registry = ToolRegistry()
        registry.register(RecordingTool("alpha", []))
        engine = ScriptedEngine([calls(("alpha", {"x": 1}), ("client_fn", {"q": "hi"}))])
        client = [FunctionTool("client_fn", "runs at the client", {"type": "object"})]
        return await AgentLoop(engine, HERMES, registry).run([{"role": "user", "content": "go"}], SamplingParams(),
                                                             client_tools=client)

    result = asyncio.run(main())
    assert [e.call.name for e in result.executions] == ["alpha"]
    assert [c.name for c in result.message.tool_calls] == ["client_fn"]
    assert result.finish_reason == "tool_calls"


def test_the_last_round_hides_the_tools_so_the_model_must_answer():
    async def main():
        registry = ToolRegistry()
        registry.register(RecordingTool("alpha", []))
        engine = ScriptedEngine([calls(("alpha", {"x": 1}))] * 2 + ["Done."])
        loop = AgentLoop(engine, HERMES, registry, max_tool_rounds=2)
        return await loop.run([{"role": "user", "content": "go"}], SamplingParams()), engine

    result, engine = asyncio.run(main())
    assert result.rounds == 3 and len(result.executions) == 2 and result.message.content == "Done."
    assert "alpha" in engine.prompts[0] and "<tools>" not in engine.prompts[2]


@pytest.fixture(scope="module")
def everything_pool_config():
    return parse_mcp_config({"servers": [{"id": "everything", "source": {
        "type": "Process", "command": str(EVERYTHING), "args": ["stdio"]}}], "tool_timeout_secs": 20})


@needs_everything
def test_real_model_forced_to_call_a_real_mcp_tool_then_answers(smollm_engine, everything_pool_config):
    async def main():
        registry = ToolRegistry()
        pool = McpClientPool(everything_pool_config, registry)
        await pool.start()
        try:
            assert await pool.wait_ready(30)
            loop = AgentLoop(smollm_engine, HERMES, registry)
            return await loop.run([{"role": "user", "content": "What is 12 plus 30? Use the tool."}],
                                  SamplingParams(temperature=0, max_tokens=80),
                                  choice=ToolChoice("required", ("everything__get-sum",)), parallel=False)
        finally:
            await pool.stop()

    result = asyncio.run(main())
    assert result.executions and result.executions[0].call.name == "everything__get-sum"
    execution = result.executions[0]
    args = json.loads(execution.call.arguments)
    assert not execution.result.is_error
    assert f"is {args['a'] + args['b']}" in execution.result.text
    assert result.rounds >= 2 and result.finish_reason in ("stop", "length") and result.message.content


@needs_everything
def test_serve_with_mcp_config_answers_with_the_tools_result(tmp_path):
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"everything": {"command": str(EVERYTHING), "args": ["stdio"]}}}))
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "agent_runtime", "serve", "--port", str(port), "--no-embeddings",
                               "--mcp-config", str(config)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                tools = httpx.get(f"{base}/v1/tools", timeout=2).json()
                if any(t["name"] == "everything__echo" for t in tools["data"]):
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stderr.read()
            time.sleep(0.5)
        else:
            pytest.fail("the server never listed the MCP tools")
        echo = next(t for t in tools["data"] if t["name"] == "everything__echo")
        assert echo["source"] == "mcp:everything" and echo["state"] == "ready"
        assert "message" in echo["input_schema"]["properties"]
        assert tools["servers"][0]["state"] == "ready"

        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=300)
        response = client.chat.completions.create(
            model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "Echo the word banana."}],
            temperature=0, max_tokens=60, tool_choice={"type": "function", "function": {"name": "everything__echo"}},
        )
        executions = response.model_extra["tool_executions"]
        assert executions[0]["name"] == "everything__echo" and executions[0]["output"].startswith("Echo: ")
        echoed = executions[0]["output"].removeprefix("Echo: ")
        assert echoed.lower() in response.choices[0].message.content.lower()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def agent_server(smollm_engine, everything_pool_config):
    """The embedded model served in-process with server-everything's tools registered."""

    runtime = Runtime({"SmolLM2-135M-Instruct": smollm_engine})
    runtime.mcp_pool = McpClientPool(everything_pool_config, runtime.registry)
    with serve(runtime) as base:
        deadline = time.time() + 60
        while "everything__echo" not in runtime.registry and time.time() < deadline:
            time.sleep(0.2)
        yield base


@needs_everything
def test_streamed_chat_reports_executions_and_the_answer(agent_server):
    client = openai.OpenAI(base_url=f"{agent_server}/v1", api_key="none", max_retries=0, timeout=300)
    stream = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "Echo the word banana."}],
        temperature=0, max_tokens=40, stream=True, stream_options={"include_usage": True},
        tool_choice={"type": "function", "function": {"name": "everything__echo"}},
    )
    executions, text, finish, usage = [], "", None, None
    for chunk in stream:
        if chunk.model_extra.get("tool_execution"):
            executions.append(chunk.model_extra["tool_execution"])
        for choice in chunk.choices:
            assert not choice.delta.tool_calls  # server-side calls are not the client's to run
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert executions and executions[0]["name"] == "everything__echo" and not executions[0]["is_error"]
    assert text and finish in ("stop", "length") and usage.model_extra["tool_rounds"] >= 2


@needs_everything
def test_responses_api_runs_server_side_tools_as_mcp_call_items(agent_server):
    client = openai.OpenAI(base_url=f"{agent_server}/v1", api_key="none", max_retries=0, timeout=300)
    response = client.responses.create(model="SmolLM2-135M-Instruct", input="Echo the word banana.",
                                       temperature=0, max_output_tokens=40,
                                       tool_choice={"type": "function", "name": "everything__echo"})
    kinds = [item.type for item in response.output]
    assert kinds[0] == "mcp_call" and "message" in kinds, kinds
    call = response.output[0]
    assert call.server_label == "everything" and call.output.startswith("Echo: ") and call.error is None
    assert response.status in ("completed", "incomplete") and response.output_text
    # The stored conversation (with its executed call) continues with previous_response_id.
    follow = client.responses.create(model="SmolLM2-135M-Instruct", previous_response_id=response.id,
                                     input="Thanks!", temperature=0, max_output_tokens=16, tool_choice="none")
    assert follow.output_text


@needs_everything
def test_v1_tools_lists_the_servers_tools_with_schemas(agent_server):
    listing = httpx.get(f"{agent_server}/v1/tools").json()
    by_name = {t["name"]: t for t in listing["data"]}
    assert by_name["everything__get-sum"]["input_schema"]["required"] == ["a", "b"]
    assert listing["servers"][0]["id"] == "everything" and listing["servers"][0]["state"] == "ready"


def test_a_round_cut_by_max_tokens_still_runs_its_complete_calls():
    class CutEngine(ScriptedEngine):
        async def generate(self, prompt_ids, params):
            self.prompts.append(self.tokenizer.decode(prompt_ids))
            text = self.script.pop(0)
            yield StreamChunk("r", text, [1], None, "length" if "<tool_call>" in text else "stop")

    async def main():
        registry = ToolRegistry()
        registry.register(RecordingTool("alpha", []))
        cut = calls(("alpha", {"x": 1})) + '\n<tool_call>\n{"name": "alpha", "arguments": {"x'
        engine = CutEngine([cut, "Done."])
        return await AgentLoop(engine, HERMES, registry).run([{"role": "user", "content": "go"}], SamplingParams())

    result = asyncio.run(main())
    assert [e.result.text for e in result.executions] == ["alpha says 2"]
    assert len(result.messages[1]["tool_calls"]) == 1  # the cut call is not in the history
    assert result.message.content == "Done."
