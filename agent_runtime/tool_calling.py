"""One assistant turn with tools: which tools the model sees, whether a call is forced, the prompt.

Every API (chat completions, responses, Anthropic messages, later the agent loop) normalises its
own tool and tool_choice shapes into `FunctionTool`s and a `ToolChoice`, then `plan_turn` decides:

- `none`: no tools in the prompt, nothing parsed as a call;
- `auto`: tools in the prompt, calls parsed from whatever the model writes;
- `required` / a named function: tools in the prompt and an llguidance grammar (the parser's own
  format, see tool_parsers) that only admits one call (or several, with parallel calls) whose
  arguments match the tool's JSON schema;
- `allowed_tools`: the same modes over a subset; only that subset is shown to the model.

Templates that cannot render tools (no `tools` in the Jinja source, e.g. SmolLM2, Gemma 3) get
the tool list as a system-prompt block in the parser's format, and earlier calls and results as
text (`inline_tools`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from agent_runtime.tool_parsers import (
    FunctionTool,
    MessageDelta,
    ParsedMessage,
    ToolCall,
    ToolParser,
    collect,
    reasoning_stream,
)
from engine import InvalidRequestError
from engine.guided import GuidedDecoding
from engine.tokenizer import Tokenizer

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


@dataclass(frozen=True)
class ToolChoice:
    """none / auto / required, optionally limited to some tool names (a named function: one)."""

    mode: Literal["none", "auto", "required"] = "auto"
    allowed: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TurnPlan:
    """What one generation does with tools."""

    parser: ToolParser
    tools: tuple[FunctionTool, ...]  # shown to the model
    parse_calls: bool
    guided: GuidedDecoding | None  # a forced call (or the response_format constraint)
    parallel: bool

    @property
    def skip_special_tokens(self) -> bool:
        return self.parser.skip_special_tokens or not (self.parse_calls or self.parser.always_parse)


def function_tools(tools: Sequence[dict[str, Any]] | None, *, flat: bool = False, where: str = "tools") \
        -> list[FunctionTool]:
    """OpenAI tools (`{"type": "function", "function": {...}}`, or flat `{"type": "function", "name": ...}`
    as the Responses API sends them) as FunctionTools; anything else is a 400-style error."""
    out: list[FunctionTool] = []
    seen: set[str] = set()
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            raise InvalidRequestError(f"{where}[{i}]: tool type {kind!r} is not supported; only function tools are")
        spec = tool if flat or "function" not in tool else tool["function"]
        if not isinstance(spec, dict):
            raise InvalidRequestError(f"{where}[{i}].function must be an object with a name")
        out.append(function_tool(spec.get("name"), spec.get("description"), spec.get("parameters"),
                                 bool(spec.get("strict") or False), f"{where}[{i}]"))
        if out[-1].name in seen:
            raise InvalidRequestError(f"{where}[{i}]: the tool name {out[-1].name!r} is used twice")
        seen.add(out[-1].name)
    return out


def function_tool(name: Any, description: Any, parameters: Any, strict: bool, where: str) -> FunctionTool:
    """One validated FunctionTool (shared by the OpenAI and Anthropic tool shapes)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequestError(f"{where}: the name {name!r} must be 1-128 letters, digits, '_', '-', '.' or ':'")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise InvalidRequestError(f"{where}: parameters must be a JSON schema object, not {type(parameters).__name__}")
    if description is not None and not isinstance(description, str):
        raise InvalidRequestError(f"{where}: description must be a string")
    return FunctionTool(name, description or "", parameters, strict)


def openai_tool_choice(value: Any, *, flat: bool = False) -> ToolChoice:
    """tool_choice as chat completions (`{"type": "function", "function": {"name"}}`) or the Responses
    API (`{"type": "function", "name"}`) send it, including `allowed_tools`."""
    if value is None:
        return ToolChoice()
    if isinstance(value, str):
        if value not in ("none", "auto", "required"):
            raise InvalidRequestError(f"tool_choice {value!r} is not one of none, auto, required, or an object")
        return ToolChoice(value)
    if isinstance(value, dict):
        kind = value.get("type")
        if kind == "function":
            name = value.get("name") if flat or "function" not in value else (value.get("function") or {}).get("name")
            if not isinstance(name, str):
                raise InvalidRequestError("tool_choice of type function needs the function's name")
            return ToolChoice("required", (name,))
        if kind == "allowed_tools":
            spec = value if flat or "allowed_tools" not in value else value["allowed_tools"]
            mode = spec.get("mode", "auto")
            if mode not in ("auto", "required"):
                raise InvalidRequestError(f"tool_choice.allowed_tools.mode {mode!r} is not auto or required")
            names = []
            for i, tool in enumerate(spec.get("tools") or []):
                name = tool.get("name") or (tool.get("function") or {}).get("name") if isinstance(tool, dict) else None
                if not isinstance(name, str):
                    raise InvalidRequestError(f"tool_choice.allowed_tools.tools[{i}] needs a function name")
                names.append(name)
            if not names:
                raise InvalidRequestError("tool_choice.allowed_tools.tools must name at least one tool")
            return ToolChoice(mode, tuple(names))
    raise InvalidRequestError(f"tool_choice {value!r} is not supported: use none, auto, required, "
                              "a function, or allowed_tools")


def plan_turn(
    parser: ToolParser, tools: Sequence[FunctionTool], choice: ToolChoice, tokenizer: Tokenizer, *,
    parallel: bool = True, response_format: GuidedDecoding | None = None,
) -> TurnPlan:
    """Decide the turn; a choice that names an unknown tool or asks for calls without tools is refused."""
    by_name = {t.name: t for t in tools}
    offered = list(tools)
    if choice.allowed is not None:
        unknown = [n for n in choice.allowed if n not in by_name]
        if unknown:
            raise InvalidRequestError(f"tool_choice names {', '.join(map(repr, unknown))}, which "
                                      f"{'is' if len(unknown) == 1 else 'are'} not in tools")
        offered = [by_name[n] for n in choice.allowed]
    if choice.mode == "none" or not tools:
        if choice.mode == "required":
            raise InvalidRequestError("tool_choice requires a tool call but no tools were given")
        return TurnPlan(parser, (), False, response_format, parallel)
    guided = response_format
    if choice.mode == "required":
        if response_format is not None:
            raise InvalidRequestError("a forced tool call cannot be combined with response_format: "
                                      "the output is the call")
        grammar = parser.grammar(offered, special_token_lookup(tokenizer), parallel=parallel)
        guided = GuidedDecoding.lark(grammar)
    elif response_format is None and parser.auto_strict and any(t.strict for t in offered):
        # Strict tools under auto: free text, or calls whose strict arguments follow their schemas.
        loose = [t if t.strict else replace(t, parameters={"type": "object"}) for t in offered]
        calls = parser.grammar(loose, special_token_lookup(tokenizer), parallel=parallel)
        guided = GuidedDecoding.lark(free_text_or(calls, parser.call_start))
    return TurnPlan(parser, tuple(offered), True, guided, parallel)


def free_text_or(call_grammar: str, call_start: str | None) -> str:
    """A Lark grammar: any text that does not begin a call (see ToolParser.call_start), or the calls."""
    if not call_grammar.startswith("start:"):
        raise ValueError("a parser's call grammar must begin with its start rule")
    free = "/(?s:.*)/" + (f" & ~/{call_start}/" if call_start else "")
    return f"start: FREE | calls\nFREE: {free}\ncalls:{call_grammar[len('start:'):]}"


def special_token_lookup(tokenizer: Tokenizer):
    """`special(text)` for parser grammars: `<[id]>` when `text` is one added/special token, else None."""
    added = tokenizer.hf.get_added_vocab()

    def special(text: str) -> str | None:
        token_id = added.get(text)
        return None if token_id is None else f"<[{token_id}]>"

    return special


def render_prompt(tokenizer: Tokenizer, messages: list[dict], plan: TurnPlan, **template_kwargs) -> tuple[list[int], bool]:
    """The prompt ids for this turn, and whether the prompt leaves the model inside a reasoning block."""
    tools = [t.openai() for t in plan.tools] or None
    if not template_renders_tools(tokenizer.chat_template):
        messages, tools = inline_tools(messages, plan.tools, plan.parser), None
    text = tokenizer.render_chat(messages, tools, **template_kwargs)
    in_reasoning = text.rstrip().endswith("<think>")
    return tokenizer.encode(text, add_special_tokens=False), in_reasoning


def template_renders_tools(template: str | None) -> bool:
    return bool(template) and "tools" in template


_TOOL_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

To call a function, reply with nothing but the call, in exactly this format:
{example}"""


def inline_tools(messages: list[dict], tools: Sequence[FunctionTool], parser: ToolParser) -> list[dict]:
    """Messages for a template that cannot render tools: tools in the system prompt, earlier calls
    written in the parser's format, results as user turns (some templates allow no `tool` role)."""
    out: list[dict] = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            calls = [ToolCall(c.get("id", ""), c["function"]["name"], _arguments(c["function"].get("arguments")))
                     for c in message["tool_calls"]]
            content = (content + "\n" if content else "") + parser.render_calls(calls)
            message = {"role": "assistant", "content": content}
        elif role == "tool":
            message = {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}
        else:
            message = {"role": role, "content": content}
        if out and out[-1]["role"] == message["role"] == "user":
            out[-1] = {"role": "user", "content": out[-1]["content"] + "\n" + message["content"]}
        else:
            out.append(message)
    if tools:
        listing = "\n".join(json.dumps(t.openai(), ensure_ascii=False) for t in tools)
        example = parser.render_calls([ToolCall("call_0", "<function-name>", '{"<argument>": "<value>"}')])
        block = _TOOL_PROMPT.format(tools=listing, example=example)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + block}
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


def _arguments(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value if value is not None else {}, ensure_ascii=False)


class TurnOutput:
    """One choice's output under a plan: text deltas in, message deltas out (calls only when parsed;
    with parallel calls off, only the first call is kept)."""

    def __init__(self, plan: TurnPlan, in_reasoning: bool) -> None:
        self._plan = plan
        self._stream = plan.parser.stream(in_reasoning=in_reasoning) \
            if plan.parse_calls or plan.parser.always_parse else reasoning_stream(in_reasoning=in_reasoning)
        self.deltas: list[MessageDelta] = []

    def feed(self, text: str) -> MessageDelta:
        return self._keep(self._stream.feed(text)) if text else MessageDelta()

    def finish(self) -> MessageDelta:
        return self._keep(self._stream.finish())

    @property
    def has_calls(self) -> bool:
        return any(d.tool_calls for d in self.deltas)

    def message(self) -> ParsedMessage:
        return collect(self.deltas)

    def _keep(self, delta: MessageDelta) -> MessageDelta:
        if not self._plan.parse_calls and delta.tool_calls:  # a format parsed only for its channels
            delta = replace(delta, tool_calls=())
        if not self._plan.parallel and any(c.index > 0 for c in delta.tool_calls):
            delta = replace(delta, tool_calls=tuple(c for c in delta.tool_calls if c.index == 0))
        self.deltas.append(delta)
        return delta


def parse_turn(plan: TurnPlan, text: str, in_reasoning: bool) -> ParsedMessage:
    """The finished message of one choice's whole text."""
    output = TurnOutput(plan, in_reasoning)
    output.feed(text)
    output.finish()
    return output.message()
