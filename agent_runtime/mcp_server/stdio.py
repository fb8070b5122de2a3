"""serve_stdio: the MCP server on stdin/stdout, answering lines that are not JSON-RPC with a Parse error.

The SDK's stdio transport hands a malformed line to the session as an exception item, which the session
drops (debug log only), so the client would wait forever for an answer. JSON-RPC 2.0 wants a -32700
error with a null id, as the SDK's HTTP transport sends; this sits between the two and sends it.
"""

from __future__ import annotations

import logging

import anyio
import mcp.types as types
from mcp.server import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

log = logging.getLogger(__name__)


async def serve_stdio(server: MCPServer) -> None:
    """Serve one client on stdin/stdout until stdin closes."""
    lowlevel = server._lowlevel_server  # run_stdio_async has no hook between the transport and the session
    async with stdio_server() as (lines, write):
        forward, inbox = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def screen() -> None:
            async with forward:
                async for item in lines:
                    if isinstance(item, Exception):
                        message = f"Parse error: the line is not a JSON-RPC 2.0 message ({_reason(item)})"
                        log.warning("stdin: %s", message)
                        error = types.ErrorData(code=types.PARSE_ERROR, message=message)
                        reply = types.JSONRPCError(jsonrpc="2.0", id=None, error=error)
                        await write.send(SessionMessage(reply))
                    else:
                        await forward.send(item)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(screen)
            await lowlevel.run(inbox, write, lowlevel.create_initialization_options())


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and exc.errors():
        return exc.errors()[0]["msg"][:200]
    return str(exc)[:200]
