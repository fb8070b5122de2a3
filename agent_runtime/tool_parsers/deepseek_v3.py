"""DeepSeek V3 / R1 / V3.1 tool calls, between `<｜tool▁calls▁begin｜>` and `<｜tool▁calls▁end｜>`:

- V3 / R1: `<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\n{...}\\n```<｜tool▁call▁end｜>`;
- V3.1: `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>`.

Calls are separated by newlines; a `<｜tool▁call▁begin｜>` without the enclosing section is read too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from .base import FunctionTool, ParserStream, SpecialToken, ToolCall, ToolParser
from .json_calls import arguments_text, stream_call
from .json_scan import Cursor, NeedMore, NotMarkup
from .lark_grammar import alternatives, json_value, lark, literal, marker
from .markup_stream import MarkupStream

CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL_BEGIN, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
FENCE_OPEN, FENCE_CLOSE = "\n```json\n", "\n```"
_NAME_LINE = re.compile(r"[^\n`{<]+")


class DeepSeekV3ToolParser(ToolParser):
    name = "deepseek_v3"
    skip_special_tokens = False

    def stream(self, *, in_reasoning: bool = False) -> ParserStream:
        return _DeepSeekStream(self.new_call_id, in_reasoning=in_reasoning)

    def render_calls(self, calls: Sequence[ToolCall]) -> str:
        if not calls:
            return ""
        rendered = "\n".join(
            f"{CALL_BEGIN}function{SEP}{call.name}{FENCE_OPEN}{arguments_text(call)}{FENCE_CLOSE}{CALL_END}"
            for call in calls
        )
        return CALLS_BEGIN + rendered + CALLS_END

    def grammar(self, tools: Sequence[FunctionTool], special: SpecialToken, *, parallel: bool) -> str:
        begin, end, sep = (marker(special, text) for text in (CALL_BEGIN, CALL_END, SEP))
        calls = []
        for tool in tools:  # either generation's form; the model picks the one it was trained on
            arguments = json_value(tool.parameters)
            calls.append(
                f'{begin} "function" {sep} {literal(tool.name + FENCE_OPEN)} {arguments} '
                f"{literal(FENCE_CLOSE)} {end}"
            )
            calls.append(f"{begin} {literal(tool.name)} {sep} {arguments} {end}")
        body = 'call ("\\n" call)*' if parallel else "call"
        return lark(
            f"{marker(special, CALLS_BEGIN)} {body} {marker(special, CALLS_END)}", alternatives("call", calls)
        )


class _DeepSeekStream(MarkupStream):
    def __init__(self, new_id: Callable[[], str], *, in_reasoning: bool) -> None:
        super().__init__(new_id, in_reasoning=in_reasoning)
        self._opened = ""  # markup read since the last call started: re-emitted if it is not a call
        self._in_section = False

    def begin(self) -> bool:
        self.state = self._content
        return True

    def _content(self) -> bool:
        found = self.text_until([CALLS_BEGIN, CALL_BEGIN], self.content)
        if found is None:
            return False
        self._opened = self.take(len(found))
        self._in_section = found == CALLS_BEGIN
        self.state = self._section if self._in_section else self._call
        return True

    def _not_markup(self) -> bool:
        self.content.write(self._opened)
        self._opened = ""
        self.state = self._content
        return True

    def _section(self) -> bool:
        if not self.skip_ws() and not self.final:
            return False
        call, end = self.starts_with(CALL_BEGIN), self.starts_with(CALLS_END)
        if call:
            self._opened += self.take(len(CALL_BEGIN))
            self.state = self._call
        elif end:
            self.take(len(CALLS_END))
            self.state = self._content
        elif call is None or end is None:
            return False
        else:
            return self._not_markup()
        return True

    def _call(self) -> bool:
        cursor = Cursor(self.buf, self.final)
        try:
            name = cursor.until(SEP).strip()
            cursor.skip_ws()
            if cursor.peek() != "{" and name == "function":  # V3: the name follows on its own line
                name = cursor.match(_NAME_LINE).strip()
                cursor.skip_ws()
                cursor.expect("```")
                if cursor.at("json"):
                    cursor.pos += len("json")
                cursor.skip_ws()
            if cursor.peek() != "{" or not name:
                raise NotMarkup("expected a name and JSON arguments")
        except NeedMore:
            return False
        except NotMarkup:
            return self._not_markup()
        self.take(cursor.pos)
        self._opened = ""
        stream_call(self, name, self._call_end)
        return True

    def _call_end(self) -> bool:
        cursor = Cursor(self.buf, self.final)
        try:
            cursor.skip_ws()
            if cursor.at("```"):
                cursor.pos += len("```")
                cursor.skip_ws()
            cursor.expect(CALL_END)
        except NeedMore:
            return False
        except NotMarkup:
            self.state = self._content
            return True
        self.take(cursor.pos)
        self.state = self._section if self._in_section else self._content
        return True
