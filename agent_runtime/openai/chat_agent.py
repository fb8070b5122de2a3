"""Chat completions with server-side tools: the agent loop behind /v1/chat/completions.

When the runtime has registered tools (MCP servers, web search) the model may call them; the loop
runs those calls and feeds the results back until the model answers. The client sees the final
answer, plus the documented extension `tool_executions` (each executed call: round, id, name,
arguments, output, is_error, source, duration_ms): a field of the completion, and in a stream one
chunk per finished call (`"choices": []` with a `tool_execution` object). Content and reasoning of
every round stream as they are generated; tool calls the client must run itself (its own `tools`)
come as usual `tool_calls` with finish_reason "tool_calls".
"""

from __future__ import annotations

import asyncio
import time

from agent_runtime.agent import AgentEvent, AgentLoop, AgentResult
from agent_runtime.openai.chat_format import openai_delta, openai_message
from agent_runtime.openai.errors import error_body, to_api_error
from agent_runtime.openai.generation import sse
from agent_runtime.openai.serving import Admission, usage
from agent_runtime.tool_parsers import MessageDelta, ToolCallDelta


async def run_agent(loop: AgentLoop, run_kwargs: dict, meta: dict, admission: Admission) -> dict:
    """The whole loop, answered as one chat.completion (with `tool_executions`)."""
    start = time.perf_counter()
    try:
        result = await loop.run(**run_kwargs)
    finally:
        admission.end()
    return {**meta, "object": "chat.completion",
            "choices": [{"index": 0, "message": openai_message(result.message), "logprobs": None,
                         "finish_reason": result.finish_reason}],
            "usage": _usage(result, start), "tool_executions": [e.public() for e in result.executions]}


async def stream_agent(loop: AgentLoop, run_kwargs: dict, meta: dict, admission: Admission, include_usage: bool):
    """The loop as SSE chunks: round deltas (server-side calls hidden), executions, then the client's calls."""
    chunk_meta = {**meta, "object": "chat.completion.chunk"}
    events: asyncio.Queue = asyncio.Queue()
    done = object()
    start = time.perf_counter()

    async def on_event(event: AgentEvent) -> None:
        await events.put(event)

    async def drive() -> AgentResult:
        try:
            return await loop.run(**run_kwargs, on_event=on_event)
        finally:
            await events.put(done)

    task = asyncio.create_task(drive())
    try:
        yield sse({**chunk_meta, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                              "logprobs": None, "finish_reason": None}]})
        while (event := await events.get()) is not done:
            if event.execution is not None:
                yield sse({**chunk_meta, "choices": [], "tool_execution": event.execution.public()})
            elif event.delta is not None:
                text = MessageDelta(event.delta.content, event.delta.reasoning)  # calls: decided after the round
                if text:
                    yield sse({**chunk_meta, "choices": [{"index": 0, "delta": openai_delta(text), "logprobs": None,
                                                          "finish_reason": None}]})
        try:
            result = task.result()
        except Exception as exc:  # noqa: BLE001 - reported in-stream: the status line is already sent
            err = to_api_error(exc)
            yield sse(error_body(err.message, err.type, err.param, err.code))
            yield sse("[DONE]")
            return
        calls = tuple(ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(result.message.tool_calls))
        delta = openai_delta(MessageDelta(tool_calls=calls)) if calls else {}
        yield sse({**chunk_meta, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                              "finish_reason": result.finish_reason}]})
        if include_usage:
            yield sse({**chunk_meta, "choices": [], "usage": _usage(result, start)})
        yield sse("[DONE]")
    finally:
        task.cancel()  # the client left: stop generating and abandon (cancel) running tool calls
        await asyncio.gather(task, return_exceptions=True)
        admission.end()


def _usage(result: AgentResult, start: float) -> dict:
    out = usage(result.prompt_tokens, result.completion_tokens, start, result.first_token_at)
    out["tool_rounds"] = result.rounds
    return out
