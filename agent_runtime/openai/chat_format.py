"""The chat API's message shapes: a parsed assistant message, a streamed delta, the finish reason."""

from __future__ import annotations

from agent_runtime.tool_parsers import MessageDelta, ParsedMessage


def openai_message(parsed: ParsedMessage) -> dict:
    """The chat API's assistant message: content (null beside calls when empty), reasoning, tool calls."""
    message: dict = {"role": "assistant", "content": parsed.content or (None if parsed.tool_calls else "")}
    if parsed.reasoning:
        message["reasoning_content"] = parsed.reasoning
    if parsed.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in parsed.tool_calls
        ]
    return message


def openai_delta(delta: MessageDelta) -> dict:
    out: dict = {}
    if delta.content:
        out["content"] = delta.content
    if delta.reasoning:
        out["reasoning_content"] = delta.reasoning
    if delta.tool_calls:
        calls = []
        for c in delta.tool_calls:
            call: dict = {"index": c.index}
            if c.id:
                call["id"], call["type"] = c.id, "function"
            function = {}
            if c.name:
                function["name"] = c.name
            if c.arguments or c.name:
                function["arguments"] = c.arguments
            call["function"] = function
            calls.append(call)
        out["tool_calls"] = calls
    return out


def finish_reason(engine_reason: str | None, has_calls: bool) -> str | None:
    return "tool_calls" if has_calls and engine_reason == "stop" else engine_reason


def merge_deltas(a: dict, b: dict) -> dict:
    """Two OpenAI deltas as one (the last text chunk and what the parser released at the end)."""
    out = dict(a)
    for key in ("content", "reasoning_content"):
        if key in b:
            out[key] = out.get(key, "") + b[key]
    if "tool_calls" in b:
        out["tool_calls"] = [*out.get("tool_calls", []), *b["tool_calls"]]
    return out
