"""A real HTTP server on 127.0.0.1 (uvicorn in a thread) over the embedded model, for client tests."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from agent_runtime.openai import create_app
from agent_runtime.runtime import Runtime, ServerSettings
from engine import AsyncEngine, EngineConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(runtime: Runtime):
    """Run the app for `runtime` on a free 127.0.0.1 port; yield its base URL; stop it after."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        raise RuntimeError("the test server did not come up")
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="session")
def smollm_engine():
    # The fp32 reference path: tests compare batched with lone outputs and logprob orders, which bf16
    # activations (the default for the quantized GGUF) do not keep bit-stable across batch shapes.
    engine = AsyncEngine(EngineConfig(dtype="f32", isq="none"))
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
def server_url(smollm_engine):
    """The embedded model served without an API key."""
    runtime = Runtime({"SmolLM2-135M-Instruct": smollm_engine}, ServerSettings(keepalive_s=10))
    with serve(runtime) as base:
        yield base


@pytest.fixture(scope="session")
def runtime_of(server_url, smollm_engine):
    return smollm_engine


def wait_for_serve(proc: subprocess.Popen, base: str, timeout: float) -> None:
    """Wait until a `serve` process we started answers /health; fail the test with its stderr tail if
    it exits or does not come up in time."""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stderr = proc.stderr.read()[-3000:] if proc.poll() is not None and proc.stderr is not None else ""
    pytest.fail(f"server did not start within {timeout:.0f} s: {stderr}")


def stop_serve(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM a `serve` process we started; fail the test (after killing it) if it does not exit in time."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("serve did not stop on SIGTERM")
