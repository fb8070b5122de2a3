"""What the MCP client pool adds to a tool call: `echo` on server-everything (stdio), through the pool
(ToolRegistry -> McpClientPool -> ServerConnection -> SDK) vs the bare SDK `mcp.Client`, sequentially and
with 10 concurrent callers. Prints p50/p99 latency and calls/s for both, and the ratio.

    bash scripts/install_mcp_peers.sh                 # once: the npm servers
    .venv/bin/python benchmarks/bench_mcp_pool.py     # 1000 calls each way
    .venv/bin/python benchmarks/bench_mcp_pool.py --calls 5000 --concurrency 10
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from mcp import Client, StdioServerParameters

from agent_runtime.config import parse_mcp_config
from agent_runtime.mcp_client import McpClientPool
from tools import ToolRegistry

EVERYTHING = Path(__file__).resolve().parents[1] / ".mcp-peers" / "node_modules" / ".bin" / "mcp-server-everything"


async def measure(call: Callable[[int], Awaitable[object]], calls: int, concurrency: int) -> tuple[list[float], float]:
    """Latencies (ms) of `calls` calls spread over `concurrency` workers, and the wall time (s)."""
    latencies: list[float] = []
    counter = iter(range(calls))

    async def worker() -> None:
        for i in counter:
            start = time.perf_counter()
            await call(i)
            latencies.append((time.perf_counter() - start) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - start


def row(label: str, latencies: list[float], wall: float) -> tuple[float, float, float]:
    q = statistics.quantiles(latencies, n=100)
    p50, p99, rate = q[49], q[98], len(latencies) / wall
    print(f"{label:<26} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   {rate:8.1f} calls/s")
    return p50, p99, rate


async def main(calls: int, concurrency: int) -> None:
    if not EVERYTHING.exists():
        raise SystemExit(f"{EVERYTHING} is missing: run scripts/install_mcp_peers.sh")
    params = StdioServerParameters(command=str(EVERYTHING), args=["stdio"])
    registry = ToolRegistry()
    pool = McpClientPool(parse_mcp_config({"servers": [{"id": "everything", "source": {
        "type": "Process", "command": str(EVERYTHING), "args": ["stdio"]}}], "max_concurrent_calls": 64}), registry)
    await pool.start()
    if not await pool.wait_ready(30):
        raise SystemExit(f"server-everything did not start: {pool.status()}")
    async with Client(params, mode="auto") as bare:
        async def sdk(i: int):
            return await bare.call_tool("echo", {"message": f"m{i}"})

        async def ours(i: int):
            result = await registry.call("everything__echo", {"message": f"m{i}"})
            if result.is_error:
                raise RuntimeError(result.text)
            return result

        for fn in (sdk, ours):  # warm both paths
            await measure(fn, 50, 1)
        print(f"{calls} echo calls on server-everything (stdio), protocol {bare.protocol_version}")
        for level in sorted({1, concurrency}):
            base = row(f"bare SDK, {level} caller(s)", *await measure(sdk, calls, level))
            pool_row = row(f"pool, {level} caller(s)", *await measure(ours, calls, level))
            print(f"{'':<26} pool/SDK: p50 {pool_row[0] / base[0]:.2f}x   p99 {pool_row[1] / base[1]:.2f}x   "
                  f"throughput {pool_row[2] / base[2]:.2f}x")
    await pool.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=10)
    args = ap.parse_args()
    if args.calls < 100 or args.concurrency < 1:
        ap.error(f"invalid --calls {args.calls} / --concurrency {args.concurrency}: need >= 100 and >= 1")
    asyncio.run(main(args.calls, args.concurrency))
