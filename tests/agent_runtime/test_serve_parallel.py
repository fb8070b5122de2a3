"""`agent-runtime serve --data-parallel-size 2 --tensor-parallel-size 2`: split replicas over HTTP."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time

import httpx
import psutil
from conftest import stop_serve, wait_for_serve

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "engine"))
from tiny_models import save_tiny_model  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_with_replicas_of_a_split_model_answers_uses_both_and_leaves_no_worker(tmp_path):
    model = save_tiny_model("llama", tmp_path / "tiny")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent_runtime",
            "serve",
            "--model",
            f"tiny={model}",
            "--port",
            str(port),
            "--no-embeddings",
            "--data-parallel-size",
            "2",
            "--tensor-parallel-size",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    workers: list[psutil.Process] = []
    try:
        wait_for_serve(proc, base, timeout=120)
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert len(workers) == 2  # one rank-1 worker per replica

        async def complete(client, i):
            reply = await client.post(
                "/v1/completions",
                json={"model": "tiny", "prompt": f"request {i}: hello", "max_tokens": 8, "temperature": 0},
                timeout=60,
            )
            assert reply.status_code == 200, reply.text
            return reply.json()["choices"][0]["text"]

        async def burst():
            async with httpx.AsyncClient(base_url=base) as client:
                return await asyncio.gather(*(complete(client, i) for i in range(8)))

        texts = asyncio.run(burst())
        assert len(texts) == 8
        metrics = httpx.get(f"{base}/metrics").text
        routed = re.findall(
            r'agent_runtime_replica_requests_routed_total\{model="tiny",replica="(\d)"\} (\S+)', metrics
        )
        assert sorted(r for r, n in routed if float(n) > 0) == ["0", "1"], metrics
    finally:
        stop_serve(proc, timeout=60)
    deadline = time.time() + 10
    while time.time() < deadline and any(
        w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers
    ):
        time.sleep(0.1)
    assert not [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
