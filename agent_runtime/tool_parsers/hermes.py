"""Hermes-style calls (Hermes 2/3, Qwen 2.5, Qwen 3, SmolLM2/3; the default for templates without
tool support): `<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>`, one block per call.

Also read: a JSON list of call objects in one block (SmolLM2 was trained on that), `"parameters"` for
`"arguments"`, and a last block left unclosed.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import FunctionTool, ParserStream, SpecialToken, ToolCall, ToolParser
from .json_calls import JsonCallsReader, Status, render_call_object
from .lark_grammar import call_objects, lark, marker
from .markup_stream import MarkupStream

OPEN, CLOSE = "<tool_call>", "</tool_call>"


class HermesToolParser(ToolParser):
    name = "hermes"
    call_start = r"(?s:.*<tool_call>.*)"

    def stream(self, *, in_reasoning: bool = False) -> ParserStream:
        return _HermesStream(self.new_call_id, in_reasoning=in_reasoning)

    def render_calls(self, calls: Sequence[ToolCall]) -> str:
        return "\n".join(f"{OPEN}\n{render_call_object(call, 'arguments')}\n{CLOSE}" for call in calls)

    def grammar(self, tools: Sequence[FunctionTool], special: SpecialToken, *, parallel: bool) -> str:
        call = f'call: {marker(special, OPEN)} "\\n" call_object "\\n" {marker(special, CLOSE)}'
        start = 'call ("\\n" call)*' if parallel else "call"
        return lark(start, [call, *call_objects("call_object", tools, "arguments")])


class _HermesStream(MarkupStream):
    def begin(self) -> bool:
        self.state = self._content
        return True

    def _content(self) -> bool:
        if self.text_until([OPEN], self.content) is None:
            return False
        self.take(len(OPEN))
        self._reader = JsonCallsReader(self, lists=True)
        self.state = self._calls
        return True

    def _calls(self) -> bool:
        status = self._reader.step()
        if status is Status.REJECT:
            self.content.write(OPEN)
            self.state = self._content
        elif status is Status.DONE:
            self.state = self._close
        return status is not Status.WAIT

    def _close(self) -> bool:
        if not self.skip_closing(CLOSE):
            return False
        self.state = self._content
        return True
