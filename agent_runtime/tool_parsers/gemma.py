"""Gemma 3 function calling, which has no special tokens; either prompt style's answers are read:

- Python in a fence: ```tool_code\\nget_weather(city="London")\\n``` (a list of calls, or one per line);
- JSON `{"name": ..., "parameters" | "arguments": {...}}` (or a list of them), bare at the start of the
  message or anywhere in a ```json fence.

Python calls are emitted whole when their fence closes; JSON arguments stream.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import FunctionTool, ParserStream, SpecialToken, ToolCall, ToolParser
from .json_calls import JsonCallsReader, Status, render_call_object
from .lark_grammar import call_objects, lark
from .markup_stream import MarkupStream
from .pythonic_calls import parse_pythonic_calls, render_pythonic_call

CODE_FENCE, JSON_FENCE, FENCE_END = "```tool_code", "```json", "```"


class GemmaToolParser(ToolParser):
    name = "gemma"
    call_start = r"(?s:\s*[\[{].*)|(?s:.*```(tool_code|json).*)"

    def stream(self, *, in_reasoning: bool = False) -> ParserStream:
        return _GemmaStream(self.new_call_id, in_reasoning=in_reasoning)

    def render_calls(self, calls: Sequence[ToolCall]) -> str:
        if not calls:
            return ""
        python = [render_pythonic_call(call) for call in calls]
        if all(line is not None for line in python):
            return CODE_FENCE + "\n" + "\n".join(python) + "\n" + FENCE_END  # type: ignore[arg-type]
        objects = ", ".join(render_call_object(call, "parameters") for call in calls)
        return f"{JSON_FENCE}\n[{objects}]\n{FENCE_END}"

    def grammar(self, tools: Sequence[FunctionTool], special: SpecialToken, *, parallel: bool) -> str:
        start = 'call | "[" call (", " call)* "]"' if parallel else "call"
        return lark(start, call_objects("call", tools, "parameters"))


class _GemmaStream(MarkupStream):
    def begin(self) -> bool:
        text = self.buf.lstrip()
        if not text and not self.final:
            return False
        if text[:1] in ("{", "["):
            self._reader = JsonCallsReader(self, lists=True)
            self._fenced = False
            self.state = self._json_calls
        else:
            self.state = self._content
        return True

    def _content(self) -> bool:
        found = self.text_until([CODE_FENCE, JSON_FENCE], self.content)
        if found is None:
            return False
        self.take(len(found))
        if found == JSON_FENCE:
            self._reader = JsonCallsReader(self, lists=True)
            self._fenced = True
            self.state = self._json_calls
        else:
            self._searched = 0
            self.state = self._tool_code
        return True

    def _json_calls(self) -> bool:
        status = self._reader.step()
        if status is Status.REJECT:
            if self._fenced:
                self.content.write(JSON_FENCE)
            self.state = self._content
        elif status is Status.DONE:
            self.state = self._fence_end if self._fenced else self._content
        return status is not Status.WAIT

    def _fence_end(self) -> bool:
        if not self.skip_closing(FENCE_END):
            return False
        self.state = self._content
        return True

    def _tool_code(self) -> bool:
        end = self.buf.find(FENCE_END, self._searched)
        if end < 0 and not self.final:
            self._searched = max(0, len(self.buf) - len(FENCE_END) + 1)
            return False
        code = self.buf if end < 0 else self.buf[:end]
        calls = parse_pythonic_calls(code)
        if calls is None:
            self.content.write(CODE_FENCE)
        else:
            self.take(len(self.buf) if end < 0 else end + len(FENCE_END))
            for name, arguments in calls:
                self.start_call(name)
                self.out.arguments(arguments)
        self.state = self._content
        return True
