"""McpClientPool: every configured MCP server connected side by side, their tools in the ToolRegistry."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from agent_runtime.config import McpConfig
from agent_runtime.mcp_client.connection import ServerConnection, ServerUnavailable
from agent_runtime.mcp_client.naming import assign_names
from agent_runtime.mcp_client.results import tool_result
from tools import Tool, ToolRegistry, ToolResult, ToolSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerStatus:
    id: str
    name: str
    transport: str
    state: str
    tools: int
    protocol_version: str | None
    last_error: str | None


class McpTool(Tool):
    """One MCP server tool in the registry; calls go through the pool (its concurrency limit)."""

    def __init__(self, spec: ToolSpec, pool: McpClientPool, server: ServerConnection) -> None:
        self.spec = spec
        self._pool = pool
        self._server = server

    async def call(self, arguments: dict[str, Any]) -> ToolResult:
        return await self._pool.call(self._server.id, self.spec.original_name, arguments)


class McpClientPool:
    """Connects every enabled server concurrently at start(); a server that fails never blocks the others.

    Tool calls: a global limit of `max_concurrent_calls`, a per-call timeout of `tool_timeout_s` (the
    call is cancelled at the server, which the SDK does with notifications/cancelled), and every failure
    returned as an error result rather than raised.
    """

    def __init__(self, config: McpConfig, registry: ToolRegistry) -> None:
        self.config = config
        self.registry = registry
        self.servers = [ServerConnection(server, self._tools_changed) for server in config.servers]
        self._limit = asyncio.Semaphore(config.max_concurrent_calls)
        self._tasks: list[asyncio.Task] = []
        self._lock = asyncio.Lock()

    async def start(self, wait_s: float = 0.0) -> None:
        """Start connecting every enabled server; wait up to `wait_s` for them to be ready (never fails)."""
        for server in self.servers:
            if server.config.enabled:
                self._tasks.append(asyncio.create_task(server.run(), name=f"mcp-{server.id}"))
        if wait_s > 0:
            await self.wait_ready(wait_s)

    async def wait_ready(self, timeout_s: float) -> bool:
        """True when every enabled server is ready within the timeout."""
        waits = [s.ready.wait() for s in self.servers if s.config.enabled]
        if not waits:
            return True
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout_s)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for server in self.servers:
            self.registry.replace_source(_source(server.id), [])

    def server(self, server_id: str) -> ServerConnection:
        for server in self.servers:
            if server.id == server_id:
                return server
        raise KeyError(server_id)

    def status(self) -> list[ServerStatus]:
        return [ServerStatus(s.id, s.config.name, s.config.transport, s.state, len(s.tools), s.protocol_version,
                             s.last_error) for s in self.servers]

    async def call(self, server_id: str, tool: str, arguments: dict[str, Any],
                   timeout_s: float | None = None) -> ToolResult:
        """Call `tool` on a server; errors, timeouts and a disconnected server come back as error results."""
        server = self.server(server_id)
        timeout = self.config.tool_timeout_s if timeout_s is None else timeout_s
        async with self._limit:
            try:
                async with asyncio.timeout(timeout):  # in this task: no extra task per call, as wait_for makes
                    result = await server.call_tool(tool, arguments, _log_progress(server_id, tool))
            except TimeoutError:
                return ToolResult.error(f"the MCP tool {tool!r} of {server_id!r} did not answer within {timeout:g} s "
                                        "(the call was cancelled)")
            except ServerUnavailable as exc:
                return ToolResult.error(str(exc))
            except Exception as exc:  # noqa: BLE001 - protocol and server errors are results the model reads
                return ToolResult.error(f"the MCP tool {tool!r} of {server_id!r} failed: {exc}")
        return tool_result(result)

    async def _tools_changed(self, _server: ServerConnection) -> None:
        """A server's tool list changed (connected, refreshed, lost): rename all, deterministically."""
        async with self._lock:
            live = [s for s in self.servers if s.tools and self.config.auto_register_tools]
            names = assign_names([(s.id, s.config.tool_prefix or s.id, [t.name for t in s.tools]) for s in live])
            for server in self.servers:
                tools = []
                for t in server.tools if server in live else []:
                    spec = ToolSpec(names[(server.id, t.name)], t.description or t.title or "",
                                    dict(t.input_schema or {"type": "object"}), _source(server.id), t.name)
                    tools.append(McpTool(spec, self, server))
                self.registry.replace_source(_source(server.id), tools)


def _source(server_id: str) -> str:
    return f"mcp:{server_id}"


def _log_progress(server_id: str, tool: str):
    async def progress(done: float, total: float | None, message: str | None) -> None:
        log.debug("MCP %s/%s progress %s/%s %s", server_id, tool, done, total, message or "")

    return progress
