"""One configured MCP server: connect, list its tools, watch for changes and crashes, reconnect with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx2
import mcp.types as types
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from agent_runtime.config import McpServerConfig

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0
PING_INTERVAL_S = 10.0
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 30.0


class ServerUnavailable(RuntimeError):
    """A call reached a server that is not connected right now."""


class ServerConnection:
    """Keeps one server connected for as long as `run()` runs; `call_tool` from any task.

    States: "connecting" -> "ready" -> (lost) "reconnecting" -> ...; "failed" after a failed attempt (it
    is retried with exponential backoff, capped at 30 s); "disabled" when the config says so.
    """

    def __init__(self, config: McpServerConfig, on_tools: Callable[[ServerConnection], Awaitable[None]]) -> None:
        self.config = config
        self.state = "disabled" if not config.enabled else "connecting"
        self.last_error: str | None = None
        self.tools: list[types.Tool] = []
        self.protocol_version: str | None = None
        self.connects = 0
        self._on_tools = on_tools
        self._client: Client | None = None
        self._changed = asyncio.Event()
        self._lost = asyncio.Event()
        self.ready = asyncio.Event()

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def _modern(self) -> bool:
        """A 2026-07-28-era session (stateless requests, subscriptions instead of notifications)."""
        return self.protocol_version is not None and self.protocol_version >= "2026"

    # --- supervision --------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and stay connected until cancelled."""
        if self.config.transport == "websocket":  # nothing to retry: the SDK has no WebSocket client
            self.state = "failed"
            self.last_error = "WebSocket servers are not supported: the mcp SDK's client has stdio, streamable HTTP and SSE"
            log.warning("MCP server %r: %s", self.id, self.last_error)
            return
        delay = BACKOFF_FIRST_S
        while True:
            started = time.monotonic()
            try:
                await self._connected_session()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - any failure of one server is logged and retried
                self.last_error = _describe(exc)
                level = logging.WARNING if self.connects == 0 or self.state == "ready" else logging.DEBUG
                log.log(level, "MCP server %r: %s; retrying in %.1f s", self.id, self.last_error, delay)
            was_ready = self.state == "ready"
            self.state = "reconnecting" if was_ready else "failed"
            self._client = None
            self.ready.clear()
            if self.tools:
                self.tools = []
                await self._on_tools(self)
            if was_ready and time.monotonic() - started > 2 * delay:
                delay = BACKOFF_FIRST_S  # it had been up for a while: start the backoff over
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _connected_session(self) -> None:
        self._lost.clear()
        self._changed.clear()
        client = Client(self._target(), mode="auto", message_handler=self._on_message,
                        read_timeout_seconds=None, raise_exceptions=False)
        timeout = self.config.timeout_s or CONNECT_TIMEOUT_S
        async with contextlib.AsyncExitStack() as stack:
            # asyncio.timeout, not anyio.fail_after: the client's task group outlives this block, and an
            # anyio cancel scope may not be exited while a scope opened inside it is still open.
            async with asyncio.timeout(timeout):
                await stack.enter_async_context(client)
                self.protocol_version = client.protocol_version
                self._client = client
                await self._refresh()
            self.state = "ready"
            self.connects += 1
            self.last_error = None
            self.ready.set()
            log.info("MCP server %r ready (%s, protocol %s): %d tool(s)", self.id, self.config.transport,
                     self.protocol_version, len(self.tools))
            await stack.enter_async_context(self._watch_changes(client))
            await self._serve_until_lost(client)

    async def _serve_until_lost(self, client: Client) -> None:
        """Refresh on list_changed; ping now and then; return (raise) when the connection is gone."""
        while True:
            changed = asyncio.ensure_future(self._changed.wait())
            lost = asyncio.ensure_future(self._lost.wait())
            done, pending = await asyncio.wait({changed, lost}, timeout=PING_INTERVAL_S,
                                               return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if lost in done:
                raise ConnectionError("the connection was lost")
            if changed in done:
                self._changed.clear()
                await self._refresh()
                continue
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                if self._modern:
                    await self._refresh()  # 2026-07-28 has no ping; a fresh listing proves the server is there
                else:
                    with warnings.catch_warnings():  # deprecated for 2026-07-28 only; this session is older
                        warnings.simplefilter("ignore")
                        await client.send_ping()

    @contextlib.asynccontextmanager
    async def _watch_changes(self, client: Client):
        """Modern (2026-07-28) servers announce tool changes on a subscription; legacy ones by notification."""
        if not self._modern:
            yield
            return
        async def listen() -> None:
            try:
                async with client.listen(tools_list_changed=True) as subscription:
                    async for _ in subscription:
                        self._changed.set()
            except Exception as exc:  # noqa: BLE001 - no subscription: changes are simply not seen
                log.debug("MCP server %r: no tools subscription (%s)", self.id, _describe(exc))

        task = asyncio.ensure_future(listen())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _refresh(self) -> None:
        """tools/list, following every page."""
        client = self._client
        tools: list[types.Tool] = []
        cursor = None
        while True:
            page = await client.list_tools(cursor=cursor, cache_mode="refresh") if cursor is not None \
                else await client.list_tools(cache_mode="refresh")
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        if [t.model_dump() for t in tools] != [t.model_dump() for t in self.tools]:
            self.tools = tools
            await self._on_tools(self)

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._changed.set()
        elif isinstance(message, Exception):
            log.debug("MCP server %r sent something unreadable: %s", self.id, _describe(message))

    # --- calls ---------------------------------------------------------------------------------

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        progress: Callable[[float, float | None, str | None], Awaitable[None]] | None = None):
        client = self._client
        if client is None or self.state != "ready":
            raise ServerUnavailable(f"MCP server {self.id!r} is not connected ({self.state}"
                                    f"{': ' + self.last_error if self.last_error else ''})")
        try:
            return await client.call_tool(name, arguments, progress_callback=progress)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            self._lost.set()
            raise ServerUnavailable(f"MCP server {self.id!r} went away during the call") from exc
        except Exception as exc:
            if "closed" in str(exc).lower():
                self._lost.set()
            raise

    # --- transports ----------------------------------------------------------------------------

    def _target(self):
        c = self.config
        headers = dict(c.headers)
        if c.bearer_token:
            headers["Authorization"] = f"Bearer {c.bearer_token}"
        if c.transport == "stdio":
            # Spawned directly (no shell): the command and its arguments are passed as a list.
            return StdioServerParameters(command=c.command, args=list(c.args), env={**os.environ, **dict(c.env)},
                                         cwd=c.cwd)
        if c.transport == "http":
            return _streamable_http(c.url, headers)
        if c.transport == "sse":
            return sse_client(c.url, headers=headers)
        raise ConnectionError(f"transport {c.transport!r} is not supported")


@contextlib.asynccontextmanager
async def _streamable_http(url: str, headers: dict[str, str]):
    """Streamable HTTP with our headers; the HTTP client is closed with the connection."""
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=None)) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            yield streams


def _describe(exc: BaseException) -> str:
    """A one-line reason, digging into the exception groups anyio raises."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "timed out connecting"
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}" if text != exc.__class__.__name__ else text
