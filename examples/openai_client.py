"""The `openai` client against `agent-runtime serve`: a chat completion, a stream, a forced tool call.

    python examples/openai_client.py

Starts the server as a subprocess on a free 127.0.0.1 port (embedded SmolLM2-135M-Instruct, no
embeddings, no MCP endpoint), waits for /health, and stops it at the end.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx
from openai import OpenAI

MODEL = "SmolLM2-135M-Instruct"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(base: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    sys.exit("the server was not ready in time")


def main() -> None:
    port = free_port()
    # `agent-runtime serve ...` is the same as `python -m agent_runtime serve ...`
    server = subprocess.Popen([sys.executable, "-m", "agent_runtime", "serve", "--port", str(port),
                               "--no-embeddings", "--no-mcp"], stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, server)
        client = OpenAI(base_url=f"{base}/v1", api_key="unused")  # no --api-key: any key is accepted

        question = [{"role": "user", "content": "What is the capital of France?"}]
        reply = client.chat.completions.create(model=MODEL, messages=question, temperature=0, max_tokens=30)
        print(f"chat: {reply.choices[0].message.content!r} ({reply.usage.completion_tokens} tokens)")

        print("stream: ", end="")
        stream = client.chat.completions.create(model=MODEL, messages=question, temperature=0, max_tokens=30,
                                                stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="", flush=True)
        print()

        # tool_choice naming a function forces a call of it, with arguments valid for its schema.
        ask = [{"role": "user", "content": "What's the weather in Paris?"}]
        forced = client.chat.completions.create(
            model=MODEL, messages=ask, tools=[WEATHER_TOOL], temperature=0, max_tokens=60,
            parallel_tool_calls=False,
            tool_choice={"type": "function", "function": {"name": "get_weather"}})
        call = forced.choices[0].message.tool_calls[0]
        print(f"tool call: {call.function.name}({json.loads(call.function.arguments)}) "
              f"[finish={forced.choices[0].finish_reason}]")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
