"""Llama 3.1 / 3.2 / 3.3 JSON tool calls: the message is `{"name": "f", "parameters": {...}}` (or
`"arguments"`, or 3.2's `{"type": "function", "name": ..., "parameters": ...}`), optionally after
`<|python_tag|>`, several separated by `;`. JSON that is not such an object is ordinary content.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import FunctionTool, ParserStream, SpecialToken, ToolCall, ToolParser
from .json_calls import JsonCallsReader, Status, render_call_object
from .lark_grammar import call_objects, lark, literal
from .markup_stream import MarkupStream

PYTHON_TAG = "<|python_tag|>"
SEPARATOR = "; "


class Llama3JsonToolParser(ToolParser):
    name = "llama3_json"
    skip_special_tokens = False
    call_start = r"(?s:\s*[\[{].*)"

    def stream(self, *, in_reasoning: bool = False) -> ParserStream:
        return _Llama3JsonStream(self.new_call_id, in_reasoning=in_reasoning)

    def render_calls(self, calls: Sequence[ToolCall]) -> str:
        return SEPARATOR.join(render_call_object(call, "parameters") for call in calls)

    def grammar(self, tools: Sequence[FunctionTool], special: SpecialToken, *, parallel: bool) -> str:
        start = f"call ({literal(SEPARATOR)} call)*" if parallel else "call"
        return lark(start, call_objects("call", tools, "parameters"))


class _Llama3JsonStream(MarkupStream):
    def begin(self) -> bool:
        """Where a call may start: a `{` or the python tag, else the rest is content."""
        text = self.buf.lstrip()
        if text.startswith("{"):
            return self._read_calls(tagged=False)
        if text.startswith(PYTHON_TAG):
            self.take(len(self.buf) - len(text) + len(PYTHON_TAG))
            return self._read_calls(tagged=True)
        if (not text or PYTHON_TAG.startswith(text)) and not self.final:
            return False
        self.state = self._content
        return True

    def _read_calls(self, *, tagged: bool) -> bool:
        self._tagged = tagged
        self._reader = JsonCallsReader(self, lists=False)
        self.state = self._calls
        return True

    def _content(self) -> bool:
        if self.text_until([PYTHON_TAG], self.content) is None:
            return False
        self.take(len(PYTHON_TAG))
        return self._read_calls(tagged=True)

    def _calls(self) -> bool:
        status = self._reader.step()
        if status is Status.REJECT:
            if self._tagged:
                self.content.write(PYTHON_TAG)
            self.state = self._content
        elif status is Status.DONE:
            self.state = self._between
        return status is not Status.WAIT

    def _between(self) -> bool:
        if not self.skip_ws():
            if self.final:
                self.state = self._content
            return self.final
        if self.buf.startswith(";"):
            self.take(1)
        self.state = self.begin
        return True
