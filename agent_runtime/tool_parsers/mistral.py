"""Mistral tool calls after the `[TOOL_CALLS]` special token, in either tokenizer generation's form:

- up to v7: a JSON list, `[TOOL_CALLS][{"name": "f", "arguments": {...}, "id": "..."}, ...]`;
- v11 and later: `[TOOL_CALLS]f[ARGS]{...}`, repeated per parallel call (`[CALL_ID]abc123xyz` may come
  before `[ARGS]`).

Mistral's templates require 9-character alphanumeric call ids.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from .base import FunctionTool, ParserStream, SpecialToken, ToolCall, ToolParser, alphanumeric_id
from .json_calls import JsonCallsReader, Status, render_call_object, stream_call
from .json_scan import Cursor, NeedMore, NotMarkup
from .lark_grammar import alternatives, call_objects, json_value, lark, literal, marker
from .markup_stream import MarkupStream

TOOL_CALLS, ARGS, CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_ID = re.compile(r"[A-Za-z0-9]+")
_VALID_ID = re.compile(r"[A-Za-z0-9]{9}")


class MistralToolParser(ToolParser):
    name = "mistral"
    skip_special_tokens = False

    def stream(self, *, in_reasoning: bool = False) -> ParserStream:
        return _MistralStream(self.new_call_id, in_reasoning=in_reasoning)

    def new_call_id(self) -> str:
        return alphanumeric_id()

    def render_calls(self, calls: Sequence[ToolCall]) -> str:
        if not calls:
            return ""
        return TOOL_CALLS + "[" + ", ".join(render_call_object(call, "arguments") for call in calls) + "]"

    def grammar(self, tools: Sequence[FunctionTool], special: SpecialToken, *, parallel: bool) -> str:
        tool_calls = marker(special, TOOL_CALLS)
        args = special(ARGS)
        if args is not None:  # a v11+ tokenizer: the model was trained on name[ARGS]{...}
            calls = [
                f"{tool_calls} {literal(tool.name)} {args} {json_value(tool.parameters)}" for tool in tools
            ]
            return lark("call+" if parallel else "call", alternatives("call", calls))
        objects = 'call_object (", " call_object)*' if parallel else "call_object"
        return lark(f'{tool_calls} "[" {objects} "]"', call_objects("call_object", tools, "arguments"))


class _MistralStream(MarkupStream):
    def __init__(self, new_id: Callable[[], str], *, in_reasoning: bool) -> None:
        super().__init__(new_id, in_reasoning=in_reasoning)
        self._given_ids: set[str] = set()  # [CALL_ID]s the model wrote; a repeated one gets a fresh id

    def begin(self) -> bool:
        self.state = self._content
        return True

    def _content(self) -> bool:
        if self.text_until([TOOL_CALLS], self.content) is None:
            return False
        self.take(len(TOOL_CALLS))
        self.state = self._after_marker
        return True

    def _after_marker(self) -> bool:
        if self.buf.lstrip()[:1] in ("[", "{"):
            self._reader = JsonCallsReader(self, lists=True)
            self.state = self._json_calls
            return True
        cursor = Cursor(self.buf, self.final)
        try:
            cursor.skip_ws()
            name = cursor.match(_NAME)
            call_id = None
            if cursor.at(CALL_ID):
                cursor.pos += len(CALL_ID)
                call_id = cursor.match(_ID)
            cursor.expect(ARGS)
            cursor.skip_ws()
            if cursor.peek() != "{":
                raise NotMarkup("the arguments must be a JSON object")
        except NeedMore:
            return False
        except NotMarkup:
            self.content.write(TOOL_CALLS)
            self.state = self._content
            return True
        self.take(cursor.pos)
        if call_id is None or not _VALID_ID.fullmatch(call_id) or call_id in self._given_ids:
            call_id = None
        else:
            self._given_ids.add(call_id)
        stream_call(self, name, self._content, call_id)
        return True

    def _json_calls(self) -> bool:
        status = self._reader.step()
        if status is Status.REJECT:
            self.content.write(TOOL_CALLS)
        if status in (Status.REJECT, Status.DONE):
            self.state = self._content
        return status is not Status.WAIT
