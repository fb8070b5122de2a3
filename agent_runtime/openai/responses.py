"""POST /v1/responses and its stored responses: OpenAI's Responses API over the chat template."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import Field
from starlette.background import BackgroundTask

from agent_runtime.agent import AgentLoop, ToolExecution
from agent_runtime.openai.chat import template_messages
from agent_runtime.openai.errors import ApiError, to_api_error
from agent_runtime.openai.generation import sampling_params, with_keepalive
from agent_runtime.openai.protocol import ChatMessage, SamplingFields
from agent_runtime.openai.serving import Admission, usage
from agent_runtime.openai.structured import request_constraint
from agent_runtime.response_store import ResponseStore, StoredResponse
from agent_runtime.tool_calling import (
    TurnOutput,
    TurnPlan,
    function_tools,
    openai_tool_choice,
    plan_turn,
    render_prompt,
)
from agent_runtime.tool_parsers import MessageDelta, ToolCallDelta
from engine import SamplingParams

log = logging.getLogger(__name__)

router = APIRouter()

_TEXT_PARTS = ("input_text", "output_text")


class ResponseRequest(SamplingFields):
    """The body of POST /v1/responses (plus the vLLM-style sampling extras of SamplingFields)."""

    input: str | list[dict[str, Any]]
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    max_output_tokens: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    metadata: dict[str, str] | None = None
    text: dict[str, Any] | None = None  # {"format": {"type": "text" | "json_object" | "json_schema", ...}}
    n: Literal[1] = 1  # one output per response


def input_items(value: str | list[dict[str, Any]]) -> list[dict]:
    """The request's `input` as stored items: messages with text parts, function calls and outputs."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    return [_item(item, i) for i, item in enumerate(value)]


def _item(item: dict, index: int) -> dict:
    kind = item.get("type", "message")
    where = f"input[{index}]"
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise ApiError(400, f"{where}.role: {role!r} is not one of user, assistant, system, developer",
                           param=f"input.{index}.role")
        return {"type": "message", "role": role, "content": _parts(item.get("content"), role, where)}
    if kind == "function_call":
        call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments", "{}")
        if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(arguments, str):
            raise ApiError(400, f"{where}: a function_call item needs string call_id, name and arguments",
                           param=f"input.{index}")
        return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}
    if kind == "reasoning":
        return {"type": "reasoning", "id": item.get("id"), "summary": [], "content": []}
    if kind == "function_call_output":
        call_id, output = item.get("call_id"), item.get("output")
        if isinstance(output, list):
            output = _text(_parts(output, "tool", where))
        if not isinstance(call_id, str) or not isinstance(output, str):
            raise ApiError(400, f"{where}: a function_call_output item needs a string call_id and output",
                           param=f"input.{index}")
        return {"type": "function_call_output", "call_id": call_id, "output": output}
    raise ApiError(400, f"{where}: item type {kind!r} is not supported; use message, function_call or "
                   "function_call_output", param=f"input.{index}.type", code="unsupported_item")


def _parts(content: Any, role: str, where: str) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "output_text" if role == "assistant" else "input_text", "text": content}]
    if not isinstance(content, list):
        raise ApiError(400, f"{where}.content: expected a string or a list of content parts", param="input")
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise ApiError(400, f"{where}.content: part type {kind!r} is not supported by this model; "
                           "use input_text or output_text", param="input", code="unsupported_content")
    return [{"type": part["type"], "text": part["text"]} for part in content]


def _text(parts: list[dict]) -> str:
    return "".join(part["text"] for part in parts)


def chat_messages(instructions: str | None, items: list[dict]) -> list[ChatMessage]:
    """A conversation of items as chat messages; consecutive function calls join one assistant turn."""
    messages: list[dict] = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        if item["type"] == "reasoning":
            continue  # earlier turns' reasoning is not shown to the model again
        if item["type"] in ("mcp_call", "tool_call"):  # a server-side call of an earlier turn, with its output
            call_id = item.get("id") or f"call_{uuid.uuid4().hex}"
            call = {"id": call_id, "type": "function",
                    "function": {"name": item["name"], "arguments": item.get("arguments") or "{}"}}
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
            messages.append({"role": "tool", "tool_call_id": call_id, "content": item.get("output") or ""})
            continue
        if item["type"] == "message":
            messages.append({"role": item["role"], "content": _text(item["content"])})
        elif item["type"] == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        else:
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    return [ChatMessage(**m) for m in messages]


class OutputItems:
    """The response's output items as they form, and the stream events that describe them.

    Message deltas open items in the order the model writes them: a reasoning item, a message with
    one output_text part, one function_call item per call. Each item is closed (its `.done` events)
    when the next one opens or the response ends.
    """

    def __init__(self, event) -> None:
        self._event = event
        self.items: list[dict] = []
        self._open: dict | None = None
        self._calls: dict[int, dict] = {}

    def feed(self, delta: MessageDelta) -> list[dict]:
        events: list[dict] = []
        if delta.reasoning:
            item = self._ensure("reasoning", events)
            item["content"][0]["text"] += delta.reasoning
            events.append(self._event("response.reasoning_text.delta", delta=delta.reasoning, content_index=0,
                                      **self._at(item)))
        if delta.content:
            item = self._ensure("message", events)
            item["content"][0]["text"] += delta.content
            events.append(self._event("response.output_text.delta", delta=delta.content, logprobs=[],
                                      content_index=0, **self._at(item)))
        for call in delta.tool_calls:
            item = self._calls.get(call.index)
            if item is None:
                item = self._calls[call.index] = self._start(
                    {"type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": call.id or "",
                     "name": call.name or "", "arguments": "", "status": "in_progress"}, events)
            if call.arguments:
                item["arguments"] += call.arguments
                events.append(self._event("response.function_call_arguments.delta", delta=call.arguments,
                                          **self._at(item)))
        return events

    def executed(self, execution: ToolExecution) -> list[dict]:
        """A server-side call the agent loop ran: an `mcp_call` item (Responses' shape for remote MCP tools)."""
        events: list[dict] = []
        source = execution.source
        item = {"type": "mcp_call" if source.startswith("mcp:") else "tool_call", "id": f"mcp_{uuid.uuid4().hex}",
                "server_label": source.removeprefix("mcp:"), "name": execution.call.name,
                "arguments": execution.call.arguments, "output": execution.result.for_model(),
                "error": execution.result.text if execution.result.is_error else None, "status": "completed"}
        self._start(item, events)
        self._open = None
        events.append(self._event("response.output_item.done", item=item, output_index=len(self.items) - 1))
        return events

    def close(self, status: str = "completed") -> list[dict]:
        """End the open item; with no item at all, an empty message (every response has one output)."""
        events: list[dict] = []
        if not self.items:
            self._ensure("message", events)
        self._close(events, status)
        return events

    def snapshot(self, status: str) -> list[dict]:
        """The items as they stand, the unfinished one marked `status` (for a cancelled response)."""
        return [{**item, "status": status} if item is self._open else item for item in self.items]

    @property
    def has_calls(self) -> bool:
        return bool(self._calls)

    def _at(self, item: dict) -> dict:
        return {"item_id": item["id"], "output_index": self.items.index(item)}

    def _ensure(self, kind: str, events: list[dict]) -> dict:
        if self._open is not None and self._open["type"] == kind:
            return self._open
        if kind == "reasoning":
            item = {"type": "reasoning", "id": f"rs_{uuid.uuid4().hex}", "summary": [], "status": "in_progress",
                    "content": [{"type": "reasoning_text", "text": ""}]}
            return self._start(item, events)
        item = {"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": "in_progress", "role": "assistant",
                "content": []}
        self._start(item, events)
        part = {"type": "output_text", "text": "", "annotations": []}
        events.append(self._event("response.content_part.added", part=dict(part), content_index=0,
                                  **self._at(item)))
        item["content"].append(part)
        return item

    def _start(self, item: dict, events: list[dict]) -> dict:
        self._close(events, "completed")
        added = {**item, "content": []} if "content" in item and item["type"] == "message" else dict(item)
        self.items.append(item)
        self._open = item
        events.append(self._event("response.output_item.added", item=added, output_index=len(self.items) - 1))
        return item

    def _close(self, events: list[dict], status: str) -> None:
        item, self._open = self._open, None
        if item is None:
            return
        at = self._at(item)
        if item["type"] == "message":
            part = item["content"][0]
            events.append(self._event("response.output_text.done", text=part["text"], logprobs=[], content_index=0,
                                      **at))
            events.append(self._event("response.content_part.done", part=part, content_index=0, **at))
        elif item["type"] == "reasoning":
            events.append(self._event("response.reasoning_text.done", text=item["content"][0]["text"],
                                      content_index=0, **at))
        else:
            events.append(self._event("response.function_call_arguments.done", arguments=item["arguments"],
                                      name=item["name"], **at))
        item["status"] = status
        events.append(self._event("response.output_item.done", item=item, output_index=at["output_index"]))


class ResponseRun:
    """One response being generated: its events, its final object, and its store entry meanwhile."""

    def __init__(self, admission: Admission, prompt_ids: list[int], params: SamplingParams, base: dict,
                 output: TurnOutput | None, agent: tuple[AgentLoop, dict] | None = None) -> None:
        self.admission, self.prompt_ids, self.params, self.base = admission, prompt_ids, params, base
        self.turn = output
        self.agent = agent  # (the loop, its run() arguments) when server-side tools are active
        self._task: asyncio.Task | None = None
        self.prompt_tokens = len(prompt_ids)
        self.finish_reason: str | None = None
        self.items = OutputItems(self._event)
        self.output_tokens = 0
        self.start = time.perf_counter()
        self.first_token_at: float | None = None
        self.entry: StoredResponse | None = None
        self.error: Exception | None = None
        self.final: dict | None = None
        self.sequence = 0

    @property
    def id(self) -> str:
        return self.base["id"]

    def in_progress(self) -> dict:
        """The response object before any output (usage is reported once it is done)."""
        return {**self.base, "status": "in_progress", "output": [], "usage": None}

    def cancel(self) -> dict:
        """Stop generating; the response ends as "cancelled" with the output so far."""
        if self.final is None:
            self.admission.engine.abort(self.id)
            if self._task is not None:
                self._task.cancel()
            self._finish("cancelled")
            log.info("response %s cancelled after %d output tokens", self.id, self.output_tokens)
        return self.final

    def close(self) -> None:
        """Give the capacity slot back; a response that never finished ends as "cancelled" (idempotent)."""
        self.admission.end()
        if self.final is None:  # the client went away mid-stream, or before the stream began
            self._finish("cancelled")

    def _finish(self, status: str, **fields) -> None:
        """Fix the final response object (with the output so far) and store it."""
        u = usage(self.prompt_tokens, self.output_tokens, self.start, self.first_token_at)
        output = self.items.items if status == "completed" else self.items.snapshot("incomplete")
        if not output:
            output = [{"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": "incomplete",
                       "role": "assistant", "content": [{"type": "output_text", "text": "", "annotations": []}]}]
        self.final = {
            **self.base, "status": status, "completed_at": int(time.time()),
            "output": output,
            "usage": {
                "input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"],
                "total_tokens": u["total_tokens"],
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
                "input_tokens_per_second": u["prompt_tokens_per_second"],
                "output_tokens_per_second": u["completion_tokens_per_second"],
            },
            **fields,
        }
        if self.entry is not None:
            self.entry.response, self.entry.cancel = self.final, None

    def _event(self, type_: str, **fields) -> dict:
        self.sequence += 1
        return {"type": type_, "sequence_number": self.sequence - 1, **fields}

    async def events(self) -> AsyncIterator[dict]:
        """The stream's events, from response.created to the terminal one; generates as it goes."""
        try:
            yield self._event("response.created", response=self.in_progress())
            yield self._event("response.in_progress", response=self.in_progress())
            finish_reason = None
            if self.final is None:  # not cancelled before it began
                generate = self._agent_rounds() if self.agent is not None else self._one_generation()
                try:
                    async with aclosing(generate) as events:
                        async for event in events:
                            yield event
                    finish_reason = self.finish_reason
                except Exception as exc:  # noqa: BLE001 - ends the response as failed, reported below
                    self.error = exc
            if self.final is None:
                if self.error is None:
                    closing = self.items.close("completed" if finish_reason not in ("length", "abort")
                                               else "incomplete")
                    for event in closing:
                        yield event
                self._finish_as(finish_reason)
            terminal = {"completed": "response.completed", "failed": "response.failed"}
            yield self._event(terminal.get(self.final["status"], "response.incomplete"), response=self.final)
        finally:
            self.close()

    async def _one_generation(self) -> AsyncIterator[dict]:
        engine = self.admission.engine
        async with aclosing(engine.generate(self.prompt_ids, self.params, self.id)) as chunks:
            async for chunk in chunks:
                if self.final is not None:
                    break
                self.first_token_at = self.first_token_at or time.perf_counter()
                self.output_tokens += len(chunk.token_ids)
                self.finish_reason = chunk.finish_reason
                for event in self.items.feed(self.turn.feed(chunk.text)):
                    yield event
                if chunk.finish_reason:
                    for event in self.items.feed(self.turn.finish()):
                        yield event

    async def _agent_rounds(self) -> AsyncIterator[dict]:
        """The agent loop: round text as it streams, each server-side call as an `mcp_call` item (or
        `tool_call` for native tools), then the calls the client must run as function_call items."""
        loop, run_kwargs = self.agent
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        async def drive():
            try:
                return await loop.run(**run_kwargs, on_event=queue.put)
            finally:
                await queue.put(done)

        self._task = asyncio.create_task(drive())
        try:
            while (event := await queue.get()) is not done:
                if event.delta is not None:
                    self.first_token_at = self.first_token_at or time.perf_counter()
                    for item_event in self.items.feed(MessageDelta(event.delta.content, event.delta.reasoning)):
                        yield item_event
                elif event.execution is not None:
                    for item_event in self.items.executed(event.execution):
                        yield item_event
            result = self._task.result()
        finally:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.prompt_tokens, self.output_tokens = result.prompt_tokens, result.completion_tokens
        self.finish_reason = "stop" if result.finish_reason == "tool_calls" else result.finish_reason
        calls = tuple(ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(result.message.tool_calls))
        for item_event in self.items.feed(MessageDelta(tool_calls=calls)):
            yield item_event

    def _finish_as(self, finish_reason: str | None) -> None:
        if self.error is not None:
            err = to_api_error(self.error)
            self._finish("failed", error={"code": "server_error", "message": err.message})
        elif finish_reason == "length":
            self._finish("incomplete", incomplete_details={"reason": "max_output_tokens"})
        elif finish_reason == "abort":
            self._finish("cancelled")
        else:
            self._finish("completed")


def response_plan(body: ResponseRequest, engine, parser) -> TurnPlan:
    """tools (flat function tools), tool_choice, parallel_tool_calls and text.format as one plan."""
    tools = function_tools(body.tools, flat=True)
    choice = openai_tool_choice(body.tool_choice if tools or body.tool_choice != "auto" else "none", flat=True)
    text_format = (body.text or {}).get("format") if isinstance(body.text, dict) else None
    guided = request_constraint(body, text_format, flat=True, param="text.format")
    return plan_turn(parser, tools, choice, engine.tokenizer, parallel=body.parallel_tool_calls,
                     response_format=guided)


@router.post("/v1/responses")
async def create_response(body: ResponseRequest, request: Request):
    store: ResponseStore = request.app.state.runtime.responses
    items = input_items(body.input)
    if body.previous_response_id is not None:
        items = [*_previous(store, body.previous_response_id).conversation, *items]
    admission = Admission.begin(request, body.model)
    runtime = request.app.state.runtime
    try:
        engine = admission.engine
        parser = runtime.tool_parser(admission.model)
        messages = template_messages(chat_messages(body.instructions, items))
        if len(runtime.registry):  # server-side tools: the agent loop (agent_runtime/agent.py)
            loop = AgentLoop(engine, parser, runtime.registry, max_tool_rounds=runtime.settings.max_tool_rounds)
            text_format = body.text.get("format") if isinstance(body.text, dict) else None
            agent = (loop, dict(
                messages=messages, params=sampling_params(body, None, body.max_output_tokens, 0),
                client_tools=function_tools(body.tools, flat=True),
                choice=openai_tool_choice(body.tool_choice, flat=True), parallel=body.parallel_tool_calls,
                response_format=request_constraint(body, text_format, flat=True, param="text.format")))
            run = ResponseRun(admission, [], agent[1]["params"], _base(body, admission.model), None, agent)
        else:
            plan = response_plan(body, engine, parser)
            prompt_ids, in_reasoning = render_prompt(engine.tokenizer, messages, plan)
            params = sampling_params(body, None, body.max_output_tokens, 0, guided=plan.guided,
                                     skip_special_tokens=plan.skip_special_tokens)
            engine.check(prompt_ids, params)
            run = ResponseRun(admission, prompt_ids, params, _base(body, admission.model),
                              TurnOutput(plan, in_reasoning))
    except BaseException:
        admission.end()
        raise
    if body.store:
        run.entry = store.put(StoredResponse(run.in_progress(), items, run.cancel))
    if body.stream:
        keepalive = request.app.state.runtime.settings.keepalive_s
        return StreamingResponse(with_keepalive(_sse(run), keepalive), media_type="text/event-stream",
                                 background=BackgroundTask(run.close))
    try:
        async with aclosing(run.events()) as events:
            async for _ in events:
                pass
    finally:
        run.close()
    if run.error is not None:
        raise run.error
    return run.final


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, request: Request):
    return _stored(request.app.state.runtime.responses, response_id).response


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, request: Request):
    store: ResponseStore = request.app.state.runtime.responses
    _stored(store, response_id)
    store.delete(response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.post("/v1/responses/{response_id}/cancel")
async def cancel_response(response_id: str, request: Request):
    entry = _stored(request.app.state.runtime.responses, response_id)
    if entry.cancel is not None:
        return entry.cancel()
    if entry.response["status"] == "cancelled":
        return entry.response
    raise ApiError(400, f"response {response_id!r} is {entry.response['status']}: only a response still being "
                   "generated can be cancelled", param="response_id", code="not_cancellable")


def _stored(store: ResponseStore, response_id: str) -> StoredResponse:
    entry = store.get(response_id)
    if entry is None:
        raise ApiError(404, f"response {response_id!r} not found: it was never stored (store=false), was "
                       "deleted, or was evicted", param="response_id", code="response_not_found")
    return entry


def _previous(store: ResponseStore, response_id: str) -> StoredResponse:
    entry = store.get(response_id)
    if entry is None:
        raise ApiError(404, f"previous response {response_id!r} not found: it was never stored (store=false), "
                       "was deleted, or was evicted", param="previous_response_id", code="previous_response_not_found")
    if entry.cancel is not None:
        raise ApiError(400, f"previous response {response_id!r} is still in progress; continue it once it "
                       "has finished", param="previous_response_id")
    return entry


def _base(body: ResponseRequest, model: str) -> dict:
    """The fields of a response object that the request decides."""
    return {
        "id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()), "model": model,
        "instructions": body.instructions, "previous_response_id": body.previous_response_id,
        "metadata": body.metadata or {}, "user": body.user, "store": body.store, "background": False,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p, "max_output_tokens": body.max_output_tokens,
        "tools": body.tools or [], "tool_choice": body.tool_choice, "parallel_tool_calls": body.parallel_tool_calls,
        "text": body.text or {"format": {"type": "text"}}, "truncation": "disabled", "error": None, "incomplete_details": None,
        "completed_at": None,
    }


class _EventStream(StreamingResponse):
    """The run's events as SSE; stopped as soon as the client leaves, not when garbage collection
    gets to the abandoned iterator (Starlette only stops sending)."""

    def __init__(self, run: ResponseRun, keepalive_s: float) -> None:
        self.events = with_keepalive(_sse(run), keepalive_s)
        super().__init__(self.events, media_type="text/event-stream")
        self.run = run

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.events.aclose()
            self.run.close()  # also when the client left before the stream began


async def _sse(run: ResponseRun) -> AsyncIterator[str]:
    async with aclosing(run.events()) as events:
        async for event in events:
            yield f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
