"""The tool-call parser interface: typed results, per-choice streaming state, forcing grammars.

A parser is stateless and registered by name (registry.py). It knows one model family's output
format both ways: `parse` reads finished text into content / reasoning / calls, `stream()` returns
a per-choice `ParserStream` that turns text deltas into OpenAI-style message deltas, `render_calls`
writes calls back in the format (for templates that cannot render tool calls themselves), and
`grammar` gives an llguidance Lark grammar that accepts exactly "one or more calls in this format"
(used to force tool_choice="required" or a named function).
"""

from __future__ import annotations

import secrets
import string
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class FunctionTool:
    """One callable function as the model is told about it (OpenAI `tools[i].function`)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool = False

    def openai(self) -> dict[str, Any]:
        """The OpenAI `{"type": "function", "function": {...}}` form chat templates read."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolCall:
    """A complete call: `arguments` is the JSON text of the arguments object."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ParsedMessage:
    """A finished assistant message split into its parts."""

    content: str
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class ToolCallDelta:
    """One piece of a streamed call: id and name come once (first delta), then argument fragments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class MessageDelta:
    """What one chunk of generated text adds to the message."""

    content: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.content or self.reasoning or self.tool_calls)


# Resolves a special token's text (e.g. "[TOOL_CALLS]") to the grammar fragment matching that one
# token, e.g. "<[5]>"; None when the tokenizer has no such special token (the grammar then spells
# the text out).
SpecialToken = Callable[[str], str | None]


class ParserStream(ABC):
    """Streaming state of one choice. feed() text deltas in order, then finish() once.

    Concatenating every delta's content, reasoning and per-index argument fragments gives the
    same message as `parser.parse(whole_text)`, whatever the chunking (for well-formed text).
    Text that may still turn out to be markup is held back, never emitted as content.
    """

    @abstractmethod
    def feed(self, text: str) -> MessageDelta: ...

    @abstractmethod
    def finish(self) -> MessageDelta: ...


class ToolParser(ABC):
    """One output format. Subclasses set `name` and implement the abstract methods."""

    name: ClassVar[str]
    # False when the format's markers are special tokens a normal decode would drop.
    skip_special_tokens: ClassVar[bool] = True
    # Strict tools under tool_choice="auto" (tool_calling.plan_turn): the output is either free text
    # or calls that follow `grammar`. `call_start` is a regex of the free text that would begin a call
    # (free text may not match it); None when calls begin with a special token, which free text
    # cannot produce. False `auto_strict` for formats where every message is markup (Harmony).
    call_start: ClassVar[str | None] = None
    auto_strict: ClassVar[bool] = True
    # True when the format carries the answer itself (Harmony's channels): the parser reads every output,
    # with or without tools, and a turn without tools only drops its calls.
    always_parse: ClassVar[bool] = False

    @abstractmethod
    def stream(self, *, in_reasoning: bool = False) -> ParserStream:
        """Fresh per-choice state; in_reasoning when the prompt already opened a reasoning block."""

    def parse(self, text: str, *, in_reasoning: bool = False) -> ParsedMessage:
        """Split finished text; malformed markup stays in `content`, never raises."""
        stream = self.stream(in_reasoning=in_reasoning)
        return collect([stream.feed(text), stream.finish()])

    @abstractmethod
    def render_calls(self, calls: Sequence[ToolCall]) -> str:
        """The text this model family emits for `calls` (parse(render_calls(c)) gives c back)."""

    @abstractmethod
    def grammar(self, tools: Sequence[FunctionTool], special: SpecialToken, *, parallel: bool) -> str:
        """llguidance Lark grammar: one call (or, if parallel, one or more) to one of `tools`, whose
        arguments match that tool's JSON schema, in this format, and nothing else."""

    def new_call_id(self) -> str:
        return "call_" + secrets.token_hex(12)


def collect(deltas: Sequence[MessageDelta], new_id: Callable[[], str] | None = None) -> ParsedMessage:
    """Fold message deltas into the finished message (ids come from the deltas)."""
    content, reasoning = [], []
    calls: dict[int, list[str]] = {}
    ids: dict[int, str] = {}
    for delta in deltas:
        content.append(delta.content)
        reasoning.append(delta.reasoning)
        for call in delta.tool_calls:
            parts = calls.setdefault(call.index, ["", ""])
            if call.id:
                ids[call.index] = call.id
            if call.name:
                parts[0] += call.name
            parts[1] += call.arguments
    tool_calls = tuple(
        ToolCall(ids.get(i) or (new_id() if new_id else f"call_{i}"), name, arguments)
        for i, (name, arguments) in sorted(calls.items())
    )
    return ParsedMessage("".join(content), "".join(reasoning), tool_calls)


def alphanumeric_id(length: int = 9) -> str:
    """Mistral's templates require 9-character alphanumeric tool call ids."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))
