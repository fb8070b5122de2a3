"""The agent loop: generate -> parse calls -> run every server-side call of the round concurrently ->
append the calls and their results -> repeat, until the model answers (or asks the client to call).

Server-side tools are those of the ToolRegistry (MCP servers, web search); tools the client sends in
its request are returned to it as usual (client-side execution), and the two can be mixed: a round
with a client-side call ends the loop (after its server-side calls have run) and hands the client
its calls. A forced tool_choice applies to the first round; later rounds are `auto` so the model
can answer; the last allowed round hides the tools so it must.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from agent_runtime.tool_calling import (
    ToolChoice,
    TurnOutput,
    plan_turn,
    render_prompt,
)
from agent_runtime.tool_parsers import FunctionTool, MessageDelta, ParsedMessage, ToolCall, ToolParser
from engine import AsyncEngine, SamplingParams
from engine.guided import GuidedDecoding
from tools import ToolRegistry, ToolResult

DEFAULT_MAX_TOOL_ROUNDS = 8


@dataclass(frozen=True)
class ToolExecution:
    """One server-side call the loop ran, with its result."""

    round: int
    call: ToolCall
    result: ToolResult
    source: str
    started: float
    finished: float

    def public(self) -> dict[str, Any]:
        """The documented `tool_executions` entry of the HTTP responses."""
        return {"round": self.round, "id": self.call.id, "name": self.call.name, "arguments": self.call.arguments,
                "output": self.result.for_model(), "is_error": self.result.is_error, "source": self.source,
                "duration_ms": round((self.finished - self.started) * 1000, 1)}


@dataclass
class AgentEvent:
    """What the loop reports while it runs: message deltas of a round, or a finished tool execution."""

    round: int
    delta: MessageDelta | None = None
    execution: ToolExecution | None = None
    calls_started: tuple[ToolCall, ...] = ()


@dataclass
class AgentResult:
    message: ParsedMessage  # the final round's message (its calls are the client-side ones)
    finish_reason: str
    executions: list[ToolExecution] = field(default_factory=list)
    rounds: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_at: float | None = None
    messages: list[dict] = field(default_factory=list)  # the conversation including every executed round


class AgentLoop:
    """Runs one conversation turn with server-side tools. Stateless between runs; safe to share."""

    def __init__(self, engine: AsyncEngine, parser: ToolParser, registry: ToolRegistry, *,
                 max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS, tool_timeout_s: float | None = None) -> None:
        if max_tool_rounds < 1:
            raise ValueError(f"max_tool_rounds must be >= 1, not {max_tool_rounds}")
        self.engine = engine
        self.parser = parser
        self.registry = registry
        self.max_tool_rounds = max_tool_rounds
        self.tool_timeout_s = tool_timeout_s

    def server_tools(self, client_tools: list[FunctionTool]) -> list[FunctionTool]:
        """Registry tools the model may call this turn (a client tool of the same name wins)."""
        taken = {t.name for t in client_tools}
        return [FunctionTool(s.name, s.description, s.input_schema) for s in self.registry.specs()
                if s.name not in taken]

    async def run(
        self, messages: list[dict], params: SamplingParams, *, client_tools: list[FunctionTool] | None = None,
        choice: ToolChoice | None = None, parallel: bool = True, response_format: GuidedDecoding | None = None,
        template_kwargs: dict | None = None, on_event: Callable[[AgentEvent], Awaitable[None]] | None = None,
        max_tool_rounds: int | None = None,
    ) -> AgentResult:
        client_tools = list(client_tools or [])
        server_tools = self.server_tools(client_tools)
        server_names = {t.name for t in server_tools}
        tools = [*client_tools, *server_tools]
        rounds_allowed = max_tool_rounds or self.max_tool_rounds
        history = list(messages)
        result = AgentResult(ParsedMessage(""), "stop")
        for round_no in range(1, rounds_allowed + 2):
            last = round_no > rounds_allowed  # out of tool rounds: the model must answer now
            round_choice = ToolChoice("none") if last else (choice or ToolChoice() if round_no == 1 else ToolChoice())
            plan = plan_turn(self.parser, tools, round_choice, self.engine.tokenizer, parallel=parallel,
                             response_format=response_format if round_choice.mode != "required" else None)
            prompt_ids, in_reasoning = render_prompt(self.engine.tokenizer, history, plan, **(template_kwargs or {}))
            round_params = replace(params, guided=plan.guided, skip_special_tokens=plan.skip_special_tokens)
            self.engine.check(prompt_ids, round_params)
            output = TurnOutput(plan, in_reasoning)
            finish = "stop"
            result.prompt_tokens += len(prompt_ids)
            async for chunk in self.engine.generate(prompt_ids, round_params):
                result.first_token_at = result.first_token_at or time.perf_counter()
                result.completion_tokens += len(chunk.token_ids)
                delta = output.feed(chunk.text)
                if chunk.finish_reason:
                    finish = chunk.finish_reason
                    delta = _merge(delta, output.finish())
                if on_event is not None and delta:
                    await on_event(AgentEvent(round_no, delta=delta))
            message = output.message()
            result.rounds = round_no
            complete = [c for c in message.tool_calls if finish == "stop" or _is_object(c.arguments)]
            server_calls = [c for c in complete if c.name in server_names]
            client_calls = [c for c in message.tool_calls if c.name not in server_names]
            if not server_calls or (finish != "stop" and client_calls):
                # Nothing to run here (a round cut by max_tokens still runs its complete server-side calls).
                result.message, result.finish_reason = message, _finish(finish, message)
                break
            if on_event is not None:
                await on_event(AgentEvent(round_no, calls_started=tuple(server_calls)))
            executions = await self._execute(round_no, server_calls, on_event)
            result.executions.extend(executions)
            kept = tuple(c for c in message.tool_calls if c in server_calls or c in client_calls)  # not cut ones
            history.append(_assistant(ParsedMessage(message.content, message.reasoning, kept)))
            history.extend({"role": "tool", "tool_call_id": e.call.id, "name": e.call.name,
                            "content": e.result.for_model()} for e in executions)
            if client_calls:  # the client runs these: hand them over (the server-side ones already ran)
                result.message = ParsedMessage(message.content, message.reasoning, tuple(client_calls))
                result.finish_reason = "tool_calls"
                break
        result.messages = history
        return result

    async def _execute(self, round_no: int, calls: list[ToolCall],
                       on_event: Callable[[AgentEvent], Awaitable[None]] | None) -> list[ToolExecution]:
        """Every call of the round at once; results in the calls' order."""

        async def one(call: ToolCall) -> ToolExecution:
            started = time.perf_counter()
            result = await self.registry.call(call.name, call.arguments, self.tool_timeout_s)
            tool = self.registry.get(call.name)
            execution = ToolExecution(round_no, call, result, tool.spec.source if tool else "unknown", started,
                                      time.perf_counter())
            if on_event is not None:
                await on_event(AgentEvent(round_no, execution=execution))
            return execution

        return list(await asyncio.gather(*(one(c) for c in calls)))


def _assistant(message: ParsedMessage) -> dict:
    return {"role": "assistant", "content": message.content,
            "tool_calls": [{"id": c.id, "type": "function",
                            "function": {"name": c.name, "arguments": _arguments(c.arguments)}}
                           for c in message.tool_calls]}


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _finish(engine_reason: str, message: ParsedMessage) -> str:
    return "tool_calls" if message.tool_calls and engine_reason == "stop" else engine_reason


def _merge(a: MessageDelta, b: MessageDelta) -> MessageDelta:
    return MessageDelta(a.content + b.content, a.reasoning + b.reasoning, a.tool_calls + b.tool_calls)
