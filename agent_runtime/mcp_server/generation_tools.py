"""The `chat` and `complete` tools: generation on the runtime's engines, streamed to the client as progress.

While a call generates, a client that sent a progressToken gets one `notifications/progress` per engine
step: progress = tokens generated so far, total = max_tokens, message = the text that step added (its
concatenation is the answer). Cancelling the call (`notifications/cancelled`) cancels the handler, and
leaving `engine.generate` aborts the request and frees its KV blocks at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import aclosing, contextmanager
from typing import Annotated, Any, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from agent_runtime.agent import AgentEvent, AgentLoop
from agent_runtime.mcp_server import client_log
from agent_runtime.mcp_server.errors import tool_errors
from agent_runtime.runtime import Runtime
from agent_runtime.tool_calling import ToolChoice, TurnOutput, plan_turn, render_prompt
from agent_runtime.tool_parsers import MessageDelta
from engine import SamplingParams

Model = Annotated[str | None, Field(description="a served model id (see list_models); default: the first")]
MaxTokens = Annotated[int, Field(ge=1, description="most tokens to generate")]
Temperature = Annotated[float, Field(ge=0, description="sampling temperature; 0 = greedy (deterministic)")]
TopP = Annotated[float | None, Field(gt=0, le=1, description="nucleus sampling: keep the smallest set of "
                                                             "tokens whose probability adds up to top_p")]
Seed = Annotated[int | None, Field(ge=-(2**63), lt=2**63, description="seed for reproducible sampling")]
Stop = Annotated[str | list[str] | None, Field(description="stop string(s), not included in the text")]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Completion(BaseModel):
    text: str
    model: str
    finish_reason: str = Field(description="stop (end of text or a stop string), length (max_tokens), "
                                           "or tool_calls")
    usage: Usage


class ChatAnswer(Completion):
    reasoning: str | None = Field(None, description="the model's thinking, for models that reason first")
    tool_executions: list[dict[str, Any]] = Field(
        default_factory=list, description="server-side tool calls run (use_tools): round, id, name, "
                                          "arguments, output, is_error, source, duration_ms")


def register_generation(server: MCPServer, runtime: Runtime) -> None:
    """Add the `chat` and `complete` tools."""

    @server.tool(description=(
        "Chat with a local model: send `messages` (a conversation of {role, content}) or a single `prompt` "
        "(one user message). Returns the assistant's answer. With use_tools, the model may call the server's "
        "registered tools (MCP servers, web search) in an agent loop before it answers. Sends the text as "
        "progress notifications while it generates."))
    async def chat(
        ctx: Context,
        messages: Annotated[list[ChatMessage] | None, Field(
            description="the conversation so far; give this or prompt")] = None,
        prompt: Annotated[str | None, Field(description="one user message; give this or messages")] = None,
        model: Model = None,
        max_tokens: MaxTokens = 256,
        temperature: Temperature = 0.7,
        top_p: TopP = None,
        seed: Seed = None,
        stop: Stop = None,
        use_tools: Annotated[bool, Field(description="let the model call the server's tools")] = False,
    ) -> Annotated[CallToolResult, ChatAnswer]:
        if (messages is None) == (prompt is None):
            raise ToolError("chat needs exactly one of `messages` (a list of {role, content}) "
                            "or `prompt` (a string)")
        conversation = [m.model_dump() for m in messages] if messages is not None else \
            [{"role": "user", "content": prompt}]
        if not conversation:
            raise ToolError("messages is empty: send at least one {role, content} message")
        with tool_errors():
            model_id, _ = runtime.engine(model)
            params = _params(max_tokens, temperature, top_p, seed, stop)
        with _admitted(runtime, model_id):
            if use_tools and len(runtime.registry):
                answer = await _agent_chat(ctx, runtime, model_id, conversation, params)
            else:
                answer = await _plain_chat(ctx, runtime, model_id, conversation, params)
        return CallToolResult(content=[TextContent(type="text", text=answer.text)],
                              structured_content=answer.model_dump(mode="json"))

    @server.tool(description=(
        "Continue a raw text prompt with a local model (no chat template): returns the generated "
        "continuation. Sends the text as progress notifications while it generates."))
    async def complete(
        ctx: Context,
        prompt: Annotated[str, Field(min_length=1, description="the text to continue")],
        model: Model = None,
        max_tokens: MaxTokens = 256,
        temperature: Temperature = 0.7,
        top_p: TopP = None,
        seed: Seed = None,
        stop: Stop = None,
    ) -> Annotated[CallToolResult, Completion]:
        with tool_errors():
            model_id, engine = runtime.engine(model)
            params = _params(max_tokens, temperature, top_p, seed, stop)
            prompt_ids = engine.tokenizer.encode(prompt)
            engine.check(prompt_ids, params)
        with _admitted(runtime, model_id):
            stream = _Stream(ctx, params.max_tokens)
            await _log_start(ctx, "complete", model_id, len(prompt_ids), params)
            text: list[str] = []
            with tool_errors():
                async with aclosing(engine.generate(prompt_ids, params)) as chunks:
                    async for chunk in chunks:
                        text.append(chunk.text)
                        await stream.step(len(chunk.token_ids), chunk.text, chunk.finish_reason)
            await _log_end(ctx, "complete", stream)
        answer = Completion(text="".join(text), model=model_id, finish_reason=stream.finish_reason,
                            usage=_usage(len(prompt_ids), stream.tokens))
        return CallToolResult(content=[TextContent(type="text", text=answer.text)],
                              structured_content=answer.model_dump(mode="json"))


async def _plain_chat(ctx: Context, runtime: Runtime, model_id: str, conversation: list[dict],
                      params: SamplingParams) -> ChatAnswer:
    """One turn through the chat template; reasoning split from the answer as the chat API does."""
    engine = runtime.engines[model_id]
    with tool_errors():
        plan = plan_turn(runtime.tool_parser(model_id), [], ToolChoice("none"), engine.tokenizer)
        prompt_ids, in_reasoning = render_prompt(engine.tokenizer, conversation, plan)
        engine.check(prompt_ids, params)
    output = TurnOutput(plan, in_reasoning)
    stream = _Stream(ctx, params.max_tokens)
    await _log_start(ctx, "chat", model_id, len(prompt_ids), params)
    with tool_errors():
        async with aclosing(engine.generate(prompt_ids, params)) as chunks:
            async for chunk in chunks:
                delta = output.feed(chunk.text)
                if chunk.finish_reason:
                    end = output.finish()
                    delta = MessageDelta(delta.content + end.content, delta.reasoning + end.reasoning)
                await stream.step(len(chunk.token_ids), delta.content, chunk.finish_reason)
    await _log_end(ctx, "chat", stream)
    message = output.message()
    return ChatAnswer(text=message.content, model=model_id, finish_reason=stream.finish_reason,
                      usage=_usage(len(prompt_ids), stream.tokens), reasoning=message.reasoning or None)


async def _agent_chat(ctx: Context, runtime: Runtime, model_id: str, conversation: list[dict],
                      params: SamplingParams) -> ChatAnswer:
    """The agent loop over the registry's tools; answer text streamed, each executed call logged."""
    engine = runtime.engines[model_id]
    loop = AgentLoop(engine, runtime.tool_parser(model_id), runtime.registry,
                     max_tool_rounds=runtime.settings.max_tool_rounds)
    stream = _Stream(ctx, None)  # each round has max_tokens: no fixed total; progress counts text pieces

    async def on_event(event: AgentEvent) -> None:
        if event.delta is not None and event.delta.content:
            await stream.step(1, event.delta.content, None)
        if event.execution is not None:
            e = event.execution
            await client_log.send(ctx, "warning" if e.result.is_error else "info",
                                  f"chat: tool {e.call.name} ran in {1000 * (e.finished - e.started):.0f} ms"
                                  f"{' (error)' if e.result.is_error else ''}")

    await client_log.send(ctx, "info", f"chat: {model_id} with {len(runtime.registry)} tool(s), up to "
                                       f"{runtime.settings.max_tool_rounds} round(s)")
    with tool_errors():
        result = await loop.run(conversation, params, on_event=on_event)
    await client_log.send(ctx, "info", f"chat: {result.completion_tokens} tokens in {result.rounds} "
                                       f"round(s), {len(result.executions)} tool call(s), "
                                       f"finish_reason={result.finish_reason}")
    return ChatAnswer(text=result.message.content, model=model_id, finish_reason=result.finish_reason,
                      usage=_usage(result.prompt_tokens, result.completion_tokens),
                      reasoning=result.message.reasoning or None,
                      tool_executions=[e.public() for e in result.executions])


class _Stream:
    """Counts a generation's tokens and reports each step's text as a progress notification."""

    def __init__(self, ctx: Context, total: int | None) -> None:
        self.ctx, self.total = ctx, total
        self.tokens = 0
        self.finish_reason = "stop"
        self.started = time.perf_counter()

    async def step(self, tokens: int, text: str, finish_reason: str | None) -> None:
        self.finish_reason = finish_reason or self.finish_reason
        if not tokens:
            return
        self.tokens += tokens  # progress must grow with every notification: only steps with tokens
        await self.ctx.report_progress(self.tokens, self.total, text or None)


def _params(max_tokens: int, temperature: float, top_p: float | None, seed: int | None,
            stop: str | list[str] | None) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=temperature,
                          top_p=1.0 if top_p is None else top_p, seed=seed, stop=stop or ())


def _usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens)


@contextmanager
def _admitted(runtime: Runtime, model_id: str) -> Iterator[None]:
    """Counts the call in the model's in-flight requests (shared with the HTTP API's capacity limit)."""
    if not runtime.capacity_left(model_id):
        raise ToolError(f"model {model_id!r} is at capacity (running and queued requests); retry shortly")
    runtime.in_flight[model_id] = runtime.in_flight.get(model_id, 0) + 1
    try:
        yield
    finally:
        runtime.in_flight[model_id] -= 1


async def _log_start(ctx: Context, tool: str, model_id: str, prompt_tokens: int,
                     params: SamplingParams) -> None:
    await client_log.send(ctx, "info", f"{tool}: {model_id} generating up to {params.max_tokens} tokens "
                                       f"after a {prompt_tokens}-token prompt")


async def _log_end(ctx: Context, tool: str, stream: _Stream) -> None:
    seconds = time.perf_counter() - stream.started
    await client_log.send(ctx, "info", f"{tool}: {stream.tokens} tokens in {seconds:.2f} s "
                                       f"(finish_reason={stream.finish_reason})")
