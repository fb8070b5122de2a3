"""Plain JSON calls (SmolLM3's JSON style, and a generic fallback): the message, optionally in a
```json fence, is `{"name": ..., "arguments" | "parameters": {...}}` or a JSON list of them. Any
other message, or text after the calls, is content.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import FunctionTool, ParserStream, SpecialToken, ToolCall, ToolParser
from .json_calls import JsonCallsReader, Status, render_call_object
from .lark_grammar import call_objects, lark
from .markup_stream import MarkupStream

FENCE, FENCE_END = "```json", "```"


class JsonToolParser(ToolParser):
    name = "json"
    call_start = r"(?s:\s*(```json\s*)?[\[{].*)"

    def stream(self, *, in_reasoning: bool = False) -> ParserStream:
        return _JsonStream(self.new_call_id, in_reasoning=in_reasoning)

    def render_calls(self, calls: Sequence[ToolCall]) -> str:
        if not calls:
            return ""
        objects = [render_call_object(call, "arguments") for call in calls]
        return objects[0] if len(objects) == 1 else "[" + ", ".join(objects) + "]"

    def grammar(self, tools: Sequence[FunctionTool], special: SpecialToken, *, parallel: bool) -> str:
        start = 'call | "[" call (", " call)* "]"' if parallel else "call"
        return lark(start, call_objects("call", tools, "arguments"))


class _JsonStream(MarkupStream):
    def begin(self) -> bool:
        text = self.buf.lstrip()
        self._fenced = text.startswith(FENCE)
        if self._fenced:
            self.take(len(self.buf) - len(text) + len(FENCE))
        elif (not text or FENCE.startswith(text)) and not self.final:
            return False
        elif text[:1] not in ("{", "["):
            self.state = self.plain
            return True
        self._reader = JsonCallsReader(self, lists=True)
        self.state = self._calls
        return True

    def _calls(self) -> bool:
        status = self._reader.step()
        if status is Status.REJECT:
            if self._fenced:
                self.content.write(FENCE)
            self.state = self.plain
        elif status is Status.DONE:
            self.state = self._fence_end if self._fenced else self.plain
        return status is not Status.WAIT

    def _fence_end(self) -> bool:
        if not self.skip_closing(FENCE_END):
            return False
        self.state = self.plain
        return True
