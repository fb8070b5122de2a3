"""Reading JSON in model output before it is complete: where a value ends, and a cursor for markup.

Parsers decide on partial text. `Cursor` raises `NeedMore` when a decision depends on text not yet
generated and `NotMarkup` when the text cannot be the markup it was read as; at the end of the
output (`final`) running out of text is `NotMarkup` too. Every decision therefore depends only on
text already seen, which is what makes a stream's output independent of how the text is chunked.
"""

from __future__ import annotations

import json
import re
from typing import Any

_STRUCTURE = re.compile(r'["{}\[\]]')
_IN_STRING = re.compile(r'["\\]')
_SCALAR = re.compile(r"-?[0-9][0-9.eE+-]*|true|false|null")
_WHITESPACE = " \t\r\n"


class NeedMore(Exception):
    """The text so far ends before the markup can be decided."""


class NotMarkup(Exception):
    """The text cannot be the markup it was being read as."""


class ValueScanner:
    """Finds where one JSON object, array or string ends, fed in pieces.

    Only brackets and strings are tracked (validity is checked with json.loads once complete), so a
    value can be streamed out as it arrives and still be ended at exactly its closing character.
    """

    def __init__(self, depth: int = 0) -> None:
        # depth > 0 starts inside that many open brackets (e.g. the rest of an object).
        self._depth = depth
        self._in_string = False
        self._escaped = False

    def scan(self, text: str, start: int = 0) -> int | None:
        """Index just past the value's end in `text`, or None when `text` ends first (state is kept)."""
        i = start
        while i < len(text):
            if self._escaped:
                self._escaped = False
                i += 1
                continue
            if self._in_string:
                match = _IN_STRING.search(text, i)
                if match is None:
                    return None
                i = match.end()
                if match.group() == "\\":
                    self._escaped = True
                    continue
                self._in_string = False
                if self._depth == 0:
                    return i
                continue
            match = _STRUCTURE.search(text, i)
            if match is None:
                return None
            i = match.end()
            char = match.group()
            if char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth <= 0:
                    return i
        return None


class Cursor:
    """A read position in (possibly partial) text, for recursive-descent reading of markup headers."""

    def __init__(self, text: str, final: bool, pos: int = 0) -> None:
        self.text = text
        self.final = final
        self.pos = pos

    def _out_of_text(self) -> Exception:
        return NotMarkup("the output ended inside markup") if self.final else NeedMore()

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
            self.pos += 1

    def peek(self) -> str:
        if self.pos >= len(self.text):
            raise self._out_of_text()
        return self.text[self.pos]

    def at(self, literal: str) -> bool:
        """Whether `literal` comes next (raises NeedMore while the text is a proper prefix of it)."""
        rest = self.text[self.pos : self.pos + len(literal)]
        if rest == literal:
            return True
        if literal.startswith(rest):
            raise self._out_of_text()
        return False

    def expect(self, literal: str) -> None:
        if not self.at(literal):
            raise NotMarkup(f"expected {literal!r}")
        self.pos += len(literal)

    def until(self, literal: str, max_chars: int = 256) -> str:
        """The text up to `literal` (which is consumed too)."""
        end = self.text.find(literal, self.pos)
        if end < 0 or end - self.pos > max_chars:
            if len(self.text) - self.pos > max_chars + len(literal):
                raise NotMarkup(f"no {literal!r} within {max_chars} characters")
            raise self._out_of_text()
        found = self.text[self.pos : end]
        self.pos = end + len(literal)
        return found

    def match(self, pattern: re.Pattern[str]) -> str:
        """The text `pattern` matches here (raises NeedMore while the match could still grow)."""
        found = pattern.match(self.text, self.pos)
        if found is None or not found.group():
            if self.pos >= len(self.text):
                raise self._out_of_text()
            raise NotMarkup(f"expected {pattern.pattern}")
        if found.end() == len(self.text) and not self.final:
            raise NeedMore()
        self.pos = found.end()
        return found.group()

    def value_end(self) -> int:
        """Index just past the JSON value starting here (not validated)."""
        first = self.peek()
        if first in '{["':
            end = ValueScanner().scan(self.text, self.pos)
            if end is None:
                raise self._out_of_text()
            return end
        start = self.pos
        self.match(_SCALAR)
        end, self.pos = self.pos, start
        return end

    def value(self) -> Any:
        start, end = self.pos, self.value_end()
        try:
            value = json.loads(self.text[start:end])
        except ValueError as error:
            raise NotMarkup(f"invalid JSON: {error}") from error
        self.pos = end
        return value

    def string(self) -> str:
        if self.peek() != '"':
            raise NotMarkup("expected a JSON string")
        return self.value()


CALL_KEYS = frozenset({"name", "arguments", "parameters", "type", "id"})
ARGUMENT_KEYS = ("arguments", "parameters")


def call_from_object(text: str) -> tuple[str, str] | None:
    """(name, raw arguments text) when `text` is a whole call object, else None.

    A call is `{"name": str, "arguments" | "parameters": {...}}`, optionally with `"type": "function"`
    and an `"id"`; anything else (other keys, non-object arguments) is ordinary JSON.
    """
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if (
        not isinstance(value, dict)
        or not set(value) <= CALL_KEYS
        or not isinstance(value.get("name"), str)
        or not value["name"]
    ):
        return None
    if value.get("type", "function") != "function":
        return None
    keys = [key for key in ARGUMENT_KEYS if key in value]
    if len(keys) != 1 or not isinstance(value[keys[0]], dict):
        return None
    cursor = Cursor(text, final=True)
    cursor.skip_ws()
    cursor.expect("{")
    while True:
        cursor.skip_ws()
        key = cursor.string()
        cursor.skip_ws()
        cursor.expect(":")
        cursor.skip_ws()
        start = cursor.pos
        cursor.pos = cursor.value_end()
        if key == keys[0]:
            return value["name"], text[start : cursor.pos]
        cursor.skip_ws()
        cursor.expect(",")
