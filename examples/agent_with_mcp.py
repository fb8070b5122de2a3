"""The agent loop from Python: the embedded model calls a real MCP server's tool, then answers.

Connects the `mcp-server-time` server (installed with the test extras: `pip install mcp-server-time`)
through the McpClientPool, then asks a question whose answer needs its `get_current_time` tool.

    python examples/agent_with_mcp.py
"""

import asyncio
import shutil
import sys
from pathlib import Path

from agent_runtime.agent import AgentLoop
from agent_runtime.config import parse_mcp_config
from agent_runtime.mcp_client import McpClientPool
from agent_runtime.tool_calling import ToolChoice
from agent_runtime.tool_parsers import detect_parser
from engine import AsyncEngine, SamplingParams
from tools import ToolRegistry


def time_server_command() -> str:
    beside_python = Path(sys.executable).with_name("mcp-server-time")
    found = str(beside_python) if beside_python.exists() else shutil.which("mcp-server-time")
    if found is None:
        raise SystemExit("mcp-server-time is not installed: pip install mcp-server-time")
    return found


async def main() -> None:
    engine = AsyncEngine()  # the embedded SmolLM2-135M-Instruct
    config = parse_mcp_config({"servers": [{
        "id": "time", "source": {"type": "Process", "command": time_server_command(),
                                 "args": ["--local-timezone", "UTC"]}}]})
    registry = ToolRegistry()
    pool = McpClientPool(config, registry)
    await pool.start()
    try:
        if not await pool.wait_ready(30):
            raise SystemExit(f"the time server did not start: {pool.status()}")
        print("tools:", ", ".join(registry.names()))
        parser = detect_parser(engine.tokenizer.chat_template, engine.loaded.config.model_type)
        loop = AgentLoop(engine, parser, registry)
        result = await loop.run(
            [{"role": "user", "content": "What time is it now in UTC?"}],
            SamplingParams(temperature=0, max_tokens=80),
            # A 135M model rarely decides to call a tool by itself: force the first round's call.
            choice=ToolChoice("required", ("time__get_current_time",)), parallel=False,
        )
        for execution in result.executions:
            print(f"called {execution.call.name}({execution.call.arguments}) -> {execution.result.text[:120]!r}")
        print(f"answer after {result.rounds} rounds: {result.message.content!r}")
    finally:
        await pool.stop()
        engine.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
