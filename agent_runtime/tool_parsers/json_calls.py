"""Calls written as JSON: streaming an arguments object, and reading `{"name": ..., "arguments": {...}}`
objects (or a list of them), the body of most formats' tool-call blocks."""

from __future__ import annotations

import json
from enum import Enum

from .base import ToolCall
from .json_scan import ARGUMENT_KEYS, Cursor, NeedMore, NotMarkup, ValueScanner, call_from_object
from .markup_stream import MarkupStream, State


class ArgumentsStream:
    """Moves one JSON object from the front of the stream's buffer into the current call's arguments
    as it arrives (the raw text, as the model wrote it), up to and including its closing brace."""

    def __init__(self, stream: MarkupStream) -> None:
        self._stream = stream
        self._scanner = ValueScanner()

    def step(self) -> bool:
        """Consume what is buffered; whether the object has ended."""
        end = self._scanner.scan(self._stream.buf)
        self._stream.out.arguments(self._stream.take(len(self._stream.buf) if end is None else end))
        return end is not None


def stream_call(stream: MarkupStream, name: str, then: State, call_id: str | None = None) -> None:
    """Start a call whose arguments (one JSON object) come next in `stream`: they stream into the call as
    they arrive, and once the object has ended the stream goes on in state `then`."""
    stream.start_call(name, call_id)
    arguments = ArgumentsStream(stream)

    def streaming() -> bool:
        if not arguments.step():
            return False
        stream.state = then
        return True

    stream.state = streaming


class Status(Enum):
    MORE = "more"  # progress made, step again
    WAIT = "wait"  # needs more text
    DONE = "done"  # finished reading calls; the text after them is the caller's
    REJECT = "reject"  # not calls at all, nothing consumed or emitted: the caller re-reads it as text


class JsonCallsReader:
    """Reads one call object or (with `lists`) a JSON list of them from the front of a stream.

    When `"name"` comes before the arguments the call starts as soon as the arguments' `{` is read and
    the arguments stream out; any other key order is held until the object is complete. A malformed
    first object rejects the whole reading; a malformed later one (or junk after a started call) ends
    the reading, leaving the rest of the text to the caller.
    """

    def __init__(self, stream: MarkupStream, *, lists: bool) -> None:
        self._stream = stream
        self._lists = lists
        self._in_list = False
        self._calls = 0
        self._arguments: ArgumentsStream | None = None
        self._scanner = ValueScanner()
        self._object_start = 0
        self._scanned = 0
        self._state = self._first

    def step(self) -> Status:
        status = self._state()
        if status is Status.WAIT and self._stream.final:
            return Status.DONE if self._calls else Status.REJECT
        return status

    def _first(self) -> Status:
        cursor = Cursor(self._stream.buf, self._stream.final)
        try:
            cursor.skip_ws()
            opener = cursor.peek()
            if opener == "[" and self._lists:
                cursor.pos += 1
                cursor.skip_ws()
                return self._element(cursor, in_list=True)
            if opener == "{":
                return self._element(cursor, in_list=False)
            return Status.REJECT
        except NeedMore:
            return Status.WAIT
        except NotMarkup:
            return Status.REJECT

    def _next(self) -> Status:
        cursor = Cursor(self._stream.buf, self._stream.final)
        try:
            cursor.skip_ws()
            return self._element(cursor, in_list=True)
        except NeedMore:
            return Status.WAIT
        except NotMarkup:
            return Status.DONE

    def _element(self, cursor: Cursor, *, in_list: bool) -> Status:
        self._in_list = in_list
        start = cursor.pos
        header = _read_header(cursor)
        if header is None:
            self._object_start = self._scanned = start
            self._scanner = ValueScanner()
            self._state = self._buffered
            return Status.MORE
        name, arguments_at = header
        self._stream.take(arguments_at)
        self._begin_call(name)
        self._arguments = ArgumentsStream(self._stream)
        self._state = self._streaming
        return Status.MORE

    def _begin_call(self, name: str) -> None:
        self._stream.start_call(name)
        self._calls += 1

    def _buffered(self) -> Status:
        buf = self._stream.buf
        end = self._scanner.scan(buf, self._scanned)
        if end is None:
            self._scanned = len(buf)
            return Status.WAIT
        call = call_from_object(buf[self._object_start : end])
        if call is None:
            return Status.DONE if self._calls else Status.REJECT
        self._stream.take(end)
        self._begin_call(call[0])
        self._stream.out.arguments(call[1])
        self._state = self._after_object
        return Status.MORE

    def _streaming(self) -> Status:
        assert self._arguments is not None
        if not self._arguments.step():
            return Status.WAIT
        self._state = self._after_arguments
        return Status.MORE

    def _after_arguments(self) -> Status:
        if not self._stream.skip_ws():
            return Status.WAIT
        char = self._stream.buf[0]
        if char == "}":
            self._stream.take(1)
        elif char == ",":  # more keys (e.g. an "id"): skip to the object's end
            self._stream.take(1)
            self._scanner = ValueScanner(depth=1)
            self._state = self._rest_of_object
            return Status.MORE
        self._state = self._after_object  # a missing closing brace is tolerated
        return Status.MORE

    def _rest_of_object(self) -> Status:
        end = self._scanner.scan(self._stream.buf)
        self._stream.take(len(self._stream.buf) if end is None else end)
        if end is None:
            return Status.WAIT
        self._state = self._after_object
        return Status.MORE

    def _after_object(self) -> Status:
        if not self._in_list:
            return Status.DONE
        if not self._stream.skip_ws():
            return Status.WAIT
        char = self._stream.buf[0]
        if char == ",":
            self._stream.take(1)
            self._state = self._next
            return Status.MORE
        if char == "]":
            self._stream.take(1)
        return Status.DONE


def _read_header(cursor: Cursor) -> tuple[str, int] | None:
    """Read a call object's keys up to its arguments: (name, index of the arguments' `{`) when
    "name" comes first, None when the object must be read whole to decide; NotMarkup if not a call."""
    cursor.expect("{")
    name: str | None = None
    while True:
        cursor.skip_ws()
        key = cursor.string()
        cursor.skip_ws()
        cursor.expect(":")
        cursor.skip_ws()
        if key == "name" and name is None:
            name = cursor.string()
            if not name:
                raise NotMarkup("a call needs a name")
        elif key in ARGUMENT_KEYS and name is not None and cursor.peek() == "{":
            return name, cursor.pos
        elif key == "type" and cursor.peek() == '"':
            if cursor.string() != "function":
                raise NotMarkup("not a function call")
        else:
            return None
        cursor.skip_ws()
        if cursor.peek() != ",":
            raise NotMarkup("a call object needs arguments")
        cursor.pos += 1


def arguments_text(call: ToolCall) -> str:
    """A call's arguments as JSON text to write back (empty means no arguments)."""
    return call.arguments.strip() or "{}"


def render_call_object(call: ToolCall, arguments_key: str) -> str:
    """`{"name": ..., "<arguments_key>": ...}` with the arguments text as given."""
    return (
        f'{{"name": {json.dumps(call.name, ensure_ascii=False)}, "{arguments_key}": {arguments_text(call)}}}'
    )
