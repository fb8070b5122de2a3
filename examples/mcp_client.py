"""The official MCP Python SDK against `agent-runtime mcp` over stdio.

    python examples/mcp_client.py

Spawns `agent-runtime mcp --no-embeddings` (embedded SmolLM2-135M-Instruct) as Claude Desktop
would, lists its tools, calls `chat` while printing the text that progress notifications stream,
then calls `list_models`.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp import Client, StdioServerParameters

# `agent-runtime mcp ...` is the same as `python -m agent_runtime mcp ...`. The SDK starts the server
# with a minimal environment unless given one: pass ours (venv, HF_HUB_OFFLINE, ...).
SERVER = StdioServerParameters(command=sys.executable, args=["-m", "agent_runtime", "mcp", "--no-embeddings"],
                               env=dict(os.environ))


async def main() -> None:
    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        print(message or "", end="", flush=True)  # each message is the text of one step

    # mode="legacy" (protocol 2025-11-25), the era Claude Desktop speaks, with progress notifications.
    async with Client(SERVER, mode="legacy") as client:
        print(f"server: {client.server_info.name} {client.server_info.version}")
        tools = (await client.list_tools()).tools
        print("tools:", ", ".join(tool.name for tool in tools))

        print("chat (streamed): ", end="")
        result = await client.call_tool("chat", {"prompt": "What is the capital of France?", "max_tokens": 30,
                                                 "temperature": 0}, progress_callback=on_progress)
        print(f"\nchat result: {result.content[0].text!r} "
              f"[finish={result.structured_content['finish_reason']}]")

        models = (await client.call_tool("list_models", {})).structured_content["models"]
        for model in models:
            print(f"model: {model['id']} ({model['kind']}, context {model['context_length']}, "
                  f"{model['dtype']}, {model['device']})")


if __name__ == "__main__":
    asyncio.run(main())
