"""`agent-runtime mcp`: the runtime as an MCP server over stdio (what Claude Desktop launches).

stdout carries the protocol and nothing else: while the models load, file descriptor 1 points at stderr
(so a stray print or a native library's output cannot corrupt the stream), and while serving the SDK's
stdio transport keeps it diverted the same way. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator

import anyio

from agent_runtime.mcp_server import build_mcp_server
from agent_runtime.mcp_server.stdio import serve_stdio
from agent_runtime.runtime import Runtime, ServerSettings
from agent_runtime.serve_command import build_runtime

log = logging.getLogger(__name__)

POOL_WAIT_S = 10.0  # with --mcp-reexport: how long the first tools/list may wait for the MCP servers


def run_mcp(args: argparse.Namespace) -> int:
    with _stdout_to_stderr():
        runtime = build_runtime(args, ServerSettings(max_tool_rounds=args.max_tool_rounds,
                                                     mcp_reexport=args.mcp_reexport))
    try:
        anyio.run(_serve_stdio, runtime)
    finally:
        runtime.shutdown()
    return 0


async def _serve_stdio(runtime: Runtime) -> None:
    server = build_mcp_server(runtime, reexport=runtime.settings.mcp_reexport)
    pool = runtime.mcp_pool
    if pool is not None:
        await pool.start(wait_s=POOL_WAIT_S if runtime.settings.mcp_reexport else 0.0)
    tools = await server.list_tools()
    log.info("MCP server on stdio: %d tool(s) (%s), models %s", len(tools), ", ".join(t.name for t in tools),
             ", ".join(runtime.engines))
    try:
        await serve_stdio(server)
    finally:
        if pool is not None:
            await pool.stop()
    log.info("MCP client disconnected (stdin closed)")


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Point fd 1 (and sys.stdout) at stderr for the duration; restore the protocol's stdout after."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
