"""OpenAI Harmony (GPT-OSS): the output is a sequence of messages, each a header and a body,
`<|channel|>analysis<|message|>...<|end|><|start|>assistant<|channel|>commentary to=functions.f
<|constrain|>json<|message|>{...}<|call|>` ... `<|channel|>final<|message|>...<|return|>`.

The analysis channel is reasoning, final (and commentary without a recipient: preambles) is content,
`to=functions.NAME` (in the header, before or after the channel) is a call whose arguments are the
body. Messages to other recipients (built-in tools) count as reasoning. Text with no channel
markup at all is content.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from .base import FunctionTool, ParserStream, SpecialToken, ToolCall, ToolParser
from .json_calls import arguments_text, stream_call
from .json_scan import Cursor, NeedMore, NotMarkup
from .lark_grammar import alternatives, json_value, lark, literal, marker
from .markup_stream import MarkupStream, TextRun

START, END, MESSAGE, CHANNEL = "<|start|>", "<|end|>", "<|message|>", "<|channel|>"
CONSTRAIN, RETURN, CALL = "<|constrain|>", "<|return|>", "<|call|>"
FUNCTIONS = "functions."
_BODY_ENDS = (END, RETURN, CALL)
_HEADER_MAX = 256
_RECIPIENT = re.compile(r"to=([^\s<]+)")
_CHANNEL_NAME = re.compile(r"\s*([^\s<]*)")


class HarmonyToolParser(ToolParser):
    name = "harmony"
    skip_special_tokens = False
    auto_strict = False
    always_parse = True

    def stream(self, *, in_reasoning: bool = False) -> ParserStream:
        return _HarmonyStream(self.new_call_id, in_reasoning=in_reasoning)

    def render_calls(self, calls: Sequence[ToolCall]) -> str:
        return f"{START}assistant".join(
            f"{CHANNEL}commentary to={FUNCTIONS}{call.name} {CONSTRAIN}json{MESSAGE}{arguments_text(call)}{CALL}"
            for call in calls
        )

    def grammar(self, tools: Sequence[FunctionTool], special: SpecialToken, *, parallel: bool) -> str:
        # One call whatever `parallel` says: <|call|> ends the turn (it is the end-of-sequence token).
        channel, constrain, message = (marker(special, text) for text in (CHANNEL, CONSTRAIN, MESSAGE))
        calls = [
            f'{channel} {literal(f"commentary to={FUNCTIONS}{tool.name} ")} {constrain} "json" {message} '
            f"{json_value(tool.parameters)}"
            for tool in tools
        ]
        return lark("call", alternatives("call", calls))


class _HarmonyStream(MarkupStream):
    def __init__(self, new_id: Callable[[], str], *, in_reasoning: bool) -> None:
        super().__init__(new_id, in_reasoning=in_reasoning)
        self._body: TextRun = self.content
        self._function = ""

    def begin(self) -> bool:
        self.state = self._between
        return True

    def _between(self) -> bool:
        """Outside any message: text here is content."""
        if self.text_until([START, CHANNEL], self.content) is None:
            return False
        self.state = self._header
        return True

    def _header(self) -> bool:
        cursor = Cursor(self.buf, self.final)
        try:
            header = cursor.until(MESSAGE, _HEADER_MAX)
            if any(token in header[1:] for token in (START, MESSAGE, *_BODY_ENDS)):
                raise NotMarkup("not a message header")
        except NeedMore:
            return False
        except NotMarkup:
            opener = START if self.buf.startswith(START) else CHANNEL
            self.content.write(self.take(len(opener)))
            self.state = self._between
            return True
        self.take(cursor.pos)
        recipient = _RECIPIENT.search(header)
        _, _, after_channel = header.partition(CHANNEL)
        channel = _CHANNEL_NAME.match(after_channel).group(1)
        if recipient and recipient.group(1).startswith(FUNCTIONS) and recipient.group(1) != FUNCTIONS:
            self._function = recipient.group(1)[len(FUNCTIONS) :]
            self.state = self._arguments_start
            return True
        self._body = self.reasoning if recipient or channel == "analysis" else self.content
        self.state = self._text_body
        return True

    def _text_body(self) -> bool:
        found = self.text_until([*_BODY_ENDS, START, CHANNEL], self._body)
        if found is None:
            return False
        self._body.end()
        if found in _BODY_ENDS:
            self.take(len(found))
            self.state = self._between
        else:
            self.state = self._header
        return True

    def _arguments_start(self) -> bool:
        if not self.skip_ws() and not self.final:
            return False
        if not self.buf.startswith("{"):  # not JSON: show the body as text
            self._body = self.content
            self.state = self._text_body
            return True
        stream_call(self, self._function, self._call_end)
        return True

    def _call_end(self) -> bool:
        cursor = Cursor(self.buf, self.final)
        try:
            cursor.skip_ws()
            for token in (CALL, END):
                if cursor.at(token):
                    cursor.pos += len(token)
                    break
        except NeedMore:
            return False
        except NotMarkup:
            pass
        self.take(cursor.pos)
        self.state = self._between
        return True
