"""HTTP load test: many concurrent streaming chat clients against the OpenAI-compatible server.

Starts `agent-runtime serve` on the embedded default model as a subprocess (or targets --url), then
runs --clients concurrent clients for --duration seconds. Each client loops: one streaming
/v1/chat/completions request (a short prompt, --max-tokens new tokens, EOS ignored so every request
asks for the same work), then the next. No request starts after the deadline; those in flight finish
and count. It prints:
  - requests/s and completion tokens/s over the whole run (tokens from each stream's usage chunk);
  - p50/p99 TTFT (request sent -> first content chunk; queueing included), nearest rank;
  - errors: non-200 answers, in-stream error events, transport failures;
  - the server's RSS after a warm-up request, its peak while loaded, and after the load once the
    server is idle again (psutil; needs the server's pid: the one started here, or --pid),
    and whether it came back within 10% of the warm value.

    .venv/bin/python benchmarks/load_server.py                             # start a server, 64 clients, 30 s
    .venv/bin/python benchmarks/load_server.py --clients 16 --duration 10 --max-tokens 32
    .venv/bin/python benchmarks/load_server.py --url http://127.0.0.1:1234 --pid 12345
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import psutil

PROMPTS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "Write one sentence about the sea.",
    "What is 12 times 12?",
    "Give me a synonym for happy.",
    "Why is the sky blue?",
    "Describe a cat in five words.",
    "What does a compiler do?",
]
RSS_TOLERANCE = 0.10


@dataclass
class LoadResult:
    """What the clients saw, all together."""

    requests: int = 0
    tokens: int = 0
    ttfts: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank, as engine/metrics.py computes it; 0.0 for none."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout_s: float, server: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url}/health did not answer 200 within {timeout_s:.0f} s")


@contextmanager
def started_server(port: int, extra_args: list[str]):
    """`agent-runtime serve` as a subprocess (stderr to a temp log); yields (url, pid); stops it after."""
    log = tempfile.NamedTemporaryFile("w+", prefix="load_server-", suffix=".log", delete=False)
    command = [sys.executable, "-m", "agent_runtime", "serve", "--port", str(port), *extra_args]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        start = time.perf_counter()
        wait_healthy(url, 600, server)
        print(f"server pid {server.pid} ready in {time.perf_counter() - start:.1f} s ({' '.join(command[1:])})")
        yield url, server.pid
    except BaseException:
        log.seek(0)
        print(f"server log ({log.name}), last lines:\n" + "".join(log.readlines()[-30:]), file=sys.stderr)
        raise
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        os.unlink(log.name)


async def one_request(client: httpx.AsyncClient, url: str, body: dict, result: LoadResult) -> None:
    sent = time.perf_counter()
    first = None
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                result.errors.append(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
                return
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[len("data: "):])
                if "error" in event:
                    result.errors.append(f"in-stream error: {event['error'].get('message')}")
                    return
                if first is None and any(c["delta"].get("content") for c in event.get("choices", [])):
                    first = time.perf_counter()
                if event.get("usage"):
                    result.tokens += event["usage"]["completion_tokens"]
    except httpx.HTTPError as exc:
        result.errors.append(f"{exc.__class__.__name__}: {exc}")
        return
    result.requests += 1
    if first is not None:
        result.ttfts.append(first - sent)


async def run_load(
    url: str, clients: int, duration_s: float, max_tokens: int, model: str | None
) -> tuple[LoadResult, float]:
    result = LoadResult()
    deadline = time.perf_counter() + duration_s

    async def client_loop(index: int, client: httpx.AsyncClient) -> None:
        turn = 0
        while time.perf_counter() < deadline:
            body = {"messages": [{"role": "user", "content": PROMPTS[(index + turn) % len(PROMPTS)]}],
                    "max_tokens": max_tokens, "temperature": 0.7, "ignore_eos": True, "stream": True,
                    "stream_options": {"include_usage": True}}
            if model:
                body["model"] = model
            await one_request(client, url, body, result)
            turn += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=30), limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(i, client) for i in range(clients)))
        return result, time.perf_counter() - start


def wait_idle(url: str, timeout_s: float = 60) -> None:
    """Until /metrics shows no running or waiting request (the aborts of cut streams included)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        busy = [line for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
                if line.startswith(("agent_runtime_requests_running{", "agent_runtime_requests_waiting{"))
                and float(line.rsplit(" ", 1)[1]) > 0]
        if not busy:
            return
        time.sleep(0.5)


async def sample_peak_rss(process: psutil.Process | None, stop: asyncio.Event) -> int:
    peak = 0
    while process is not None and not stop.is_set():
        peak = max(peak, process.memory_info().rss)
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass
    return peak


async def measured_load(args: argparse.Namespace, url: str, process: psutil.Process | None):
    """run_load, sampling the server's RSS meanwhile; ((result, elapsed s), peak RSS)."""
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_peak_rss(process, stop))
    try:
        outcome = await run_load(url, args.clients, args.duration, args.max_tokens, args.model)
    finally:
        stop.set()
    return outcome, await sampler


def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def report(args: argparse.Namespace, url: str, process: psutil.Process | None) -> int:
    """Warm up, measure RSS, run the load, wait for the server to idle, measure again; print it all."""
    warm_up = {"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 8}
    if args.model:
        warm_up["model"] = args.model
    httpx.post(f"{url}/v1/chat/completions", json=warm_up, timeout=300).raise_for_status()
    rss_before = process.memory_info().rss if process else None
    print(f"load: {args.clients} concurrent streaming clients for {args.duration:.0f} s, max_tokens={args.max_tokens} "
          f"(EOS ignored), load average {os.getloadavg()[0]:.2f}")
    (result, elapsed), peak = asyncio.run(measured_load(args, url, process))
    wait_idle(url)
    time.sleep(2)
    rss_after = process.memory_info().rss if process else None

    print(f"  completed requests   {result.requests} in {elapsed:.1f} s")
    print(f"  requests/s           {result.requests / elapsed:.2f}")
    print(f"  tokens/s             {result.tokens / elapsed:.1f}  ({result.tokens} completion tokens)")
    print(f"  TTFT p50 / p99       {percentile(result.ttfts, 50):.3f} s / {percentile(result.ttfts, 99):.3f} s")
    print(f"  errors               {len(result.errors)}")
    for error in sorted(set(result.errors))[:5]:
        print(f"    {result.errors.count(error)} x {error}")
    if process is None:
        print("  server RSS           not measured (pass --pid with --url)")
        return 1 if result.errors else 0
    returned = rss_after <= rss_before * (1 + RSS_TOLERANCE)
    print(f"  server RSS           before {mib(rss_before)} (after warm-up), peak {mib(peak)}, after {mib(rss_after)} "
          f"({(rss_after / rss_before - 1) * 100:+.1f}%)")
    print(f"  RSS returned within {RSS_TOLERANCE:.0%}: {'yes' if returned else 'NO'}")
    return 1 if result.errors or not returned else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="target this server instead of starting one")
    parser.add_argument("--pid", type=int, default=None, help="the --url server's pid, to measure its RSS")
    parser.add_argument("--port", type=int, default=None, help="port for the started server (default: a free one)")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra argument for the started `agent-runtime serve` (repeatable)")
    parser.add_argument("--model", default=None, help="model id to request (default: the server's default)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds during which requests start")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    if args.url:
        wait_healthy(args.url.rstrip("/"), 30)
        return report(args, args.url.rstrip("/"), psutil.Process(args.pid) if args.pid else None)
    with started_server(args.port or free_port(), args.server_arg) as (url, pid):
        return report(args, url, psutil.Process(pid))


if __name__ == "__main__":
    sys.exit(main())
