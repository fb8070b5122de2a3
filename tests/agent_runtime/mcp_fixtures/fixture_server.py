"""A small MCP server (mcp 2.x MCPServer, stdio) with tools that misbehave on purpose, for the pool tests.

    python fixture_server.py [--legacy]

--legacy serves the handshake era only (`server/discover` is refused), so a `mode="auto"` client falls back
to the 2025-11-25 `initialize` handshake; without it an SDK 2.x client negotiates 2026-07-28.
"""

from __future__ import annotations

import argparse
import os
import time

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.runner import serve_loop
from mcp.server.stdio import stdio_server

server = MCPServer("fixture", version="0.1.0")
EVENTS: list[str] = []  # "start:<label>" / "end:<label>" in the order the server saw them
STATE = {"in_flight": 0, "max_in_flight": 0, "arrived": 0}
ARRIVALS = anyio.Event()


@server.tool(description="Echo the text back.")
def echo(text: str) -> str:
    return text


@server.tool(description="Never answers (until cancelled).")
async def hang() -> str:
    EVENTS.append("start:hang")
    try:
        await anyio.sleep_forever()
    finally:
        EVENTS.append("end:hang")  # reached when the client cancels the call
    return "unreachable"


@server.tool(description="Kill the server process at once.")
def crash() -> str:
    os._exit(1)


class _InFlight:
    """Counts this tool call as in flight (and records start/end events) while the block runs."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __enter__(self) -> None:
        EVENTS.append(f"start:{self.label}")
        STATE["in_flight"] += 1
        STATE["max_in_flight"] = max(STATE["max_in_flight"], STATE["in_flight"])

    def __exit__(self, *exc: object) -> None:
        STATE["in_flight"] -= 1
        EVENTS.append(f"end:{self.label}")


@server.tool(description="Sleep `seconds`, recording start/end and how many calls were in flight at once.")
async def slow(label: str, seconds: float = 0.3) -> str:
    with _InFlight(label):
        await anyio.sleep(seconds)
    return label


@server.tool(description="Return once `parties` calls arrived in this call's group (or after `timeout` s).")
async def rendezvous(label: str, parties: int = 2, timeout: float = 10.0) -> str:
    """Calls 1..parties form the first group, the next `parties` calls the second, and so on. A client that
    sends the calls one at a time makes each wait out `timeout` and finish before the next one starts."""
    global ARRIVALS
    with _InFlight(label):
        STATE["arrived"] += 1
        group_end = -(-STATE["arrived"] // parties) * parties
        deadline = time.monotonic() + timeout
        while STATE["arrived"] < group_end and time.monotonic() < deadline:
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                await ARRIVALS.wait()
        arrived, ARRIVALS = ARRIVALS, anyio.Event()
        arrived.set()  # wake the others of this group
    return label


@server.tool(description="What the server recorded: events in order and the most calls in flight at once.")
def stats() -> dict:
    return {"events": list(EVENTS), "max_in_flight": STATE["max_in_flight"], "pid": os.getpid()}


@server.tool(description="Register a new tool `name`, then announce the change (how: legacy/modern/both).")
async def add_tool(name: str, ctx: Context, how: str = "both") -> str:
    def added() -> str:
        return f"I am {name}"

    server.add_tool(added, name=name, description=f"A tool added at run time: {name}")
    if how in ("legacy", "both"):
        await ctx.session.send_tool_list_changed()  # notifications/tools/list_changed (2025-11-25 sessions)
    if how in ("modern", "both"):
        await ctx.notify_tools_changed()  # subscriptions/listen streams (2026-07-28 sessions)
    return f"added {name}"


async def serve_legacy() -> None:
    """stdio, handshake-only loop: `server/discover` is refused, so clients fall back to `initialize`."""
    low = server._lowlevel_server
    async with stdio_server() as (read, write), low.lifespan(low) as state:
        options = low.create_initialization_options()
        await serve_loop(low, read, write, lifespan_state=state, init_options=options)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--legacy", action="store_true", help="serve the 2025-11-25 handshake era only")
    if parser.parse_args().legacy:
        anyio.run(serve_legacy)
    else:
        server.run()


if __name__ == "__main__":
    main()
