"""The client under test for the official MCP conformance suite, driving OUR McpClientPool.

    conformance client --command "<python> conformance_client.py" --scenario <name>

The suite appends the server URL as the last argument and sets MCP_CONFORMANCE_SCENARIO. This script builds
an McpConfig with one streamable-HTTP server at that URL, starts the pool, waits until it is ready, lists the
tools through the ToolRegistry, calls the ones the scenario expects (by MCP tool name), and stops the pool.
Exit status 0 when every step worked, 1 otherwise (the suite also judges what it saw on the wire).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from agent_runtime.config import parse_mcp_config
from agent_runtime.mcp_client import McpClientPool
from tools import ToolRegistry

# Arguments for the tools the client scenarios expose; any other tool is listed but not called.
CALLS = {
    "add_numbers": {"a": 5, "b": 3},                # tools_call
    "test_reconnection": {},                        # sse-retry
    "test_client_elicitation_defaults": {},         # elicitation-sep1034-client-defaults
}


async def run(url: str, scenario: str) -> int:
    config = parse_mcp_config({"servers": [{"id": "peer", "source": {"type": "Http", "url": url}}],
                               "tool_timeout_secs": 20}, f"conformance:{scenario}")
    registry = ToolRegistry()
    pool = McpClientPool(config, registry)
    await pool.start()
    try:
        if not await pool.wait_ready(20):
            print(f"not ready: {pool.status()}", file=sys.stderr)
            return 1
        status = pool.status()[0]
        print(f"[{scenario}] connected: protocol {status.protocol_version}, tools {registry.names()}")
        failed = False
        for spec in registry.specs():
            arguments = CALLS.get(spec.original_name)
            if arguments is None:
                continue
            result = await registry.call(spec.name, arguments)
            print(f"[{scenario}] {spec.name}{arguments} -> error={result.is_error}: {result.text}")
            failed |= result.is_error
        return 1 if failed else 0
    finally:
        await pool.stop()


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return asyncio.run(run(sys.argv[-1], os.environ.get("MCP_CONFORMANCE_SCENARIO", "")))


if __name__ == "__main__":
    sys.exit(main())
