"""The streaming machinery every parser shares: a buffer of undecided text, a state machine over it,
the leading `<think>` reasoning block, and the builder of message deltas.

A format is a `MarkupStream` subclass whose states (methods returning whether they made progress)
consume text from the front of `buf` only once it is decided. Text that could still be the start of
a marker stays in `buf` (see `text_until`), so markup never reaches `content`, and since every
decision depends only on text already seen, any chunking of the output gives the same message.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .base import MessageDelta, ParserStream, ToolCallDelta

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Between two separate runs of text in one channel (e.g. content before and after a call).
RUN_SEPARATOR = "\n\n"

State = Callable[[], bool]


class TextRun:
    """One output channel (content or reasoning). Text is passed through verbatim except at markup:
    whitespace touching a marker (before a call, after `</think>`, inside a reasoning block's edges)
    is dropped, and separate runs are joined by a blank line. Output with no markup at all comes out
    exactly as the model wrote it."""

    def __init__(self, emit: Callable[[str], None], *, delimited: bool = False) -> None:
        self._emit = emit
        self._delimited = delimited
        self._after_markup = delimited  # a delimited channel (reasoning) always starts after markup
        self._open = False  # a run with visible text is in progress
        self._emitted = False
        self._pending = ""  # whitespace held until more text shows it is not trailing

    def write(self, text: str) -> None:
        if not self._open:
            if self._after_markup:
                text = text.lstrip()
            if not text:
                return
            self._open = True
            self._pending = RUN_SEPARATOR if self._emitted else ""
        body = text.rstrip()
        if body:
            self._emit(self._pending + body)
            self._emitted = True
            self._pending = text[len(body) :]
        else:
            self._pending += text

    def end(self, *, at_markup: bool = True) -> None:
        """The current run is over: at markup its trailing whitespace is dropped; at the end of the
        output (at_markup=False) it is kept, unless this channel is delimited by markup."""
        if not at_markup and self._open and self._pending and not self._delimited:
            self._emit(self._pending)
        self._open = False
        self._pending = ""
        if at_markup:
            self._after_markup = True


@dataclass
class _CallPiece:
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class DeltaBuilder:
    """Collects what one feed() adds: text per channel, and calls (id and name once, then arguments)."""

    def __init__(self, new_id: Callable[[], str]) -> None:
        self._new_id = new_id
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._calls: list[_CallPiece] = []
        self.calls_started = 0

    def content(self, text: str) -> None:
        self._content.append(text)

    def reasoning(self, text: str) -> None:
        self._reasoning.append(text)

    def start_call(self, name: str, call_id: str | None = None) -> None:
        self._calls.append(_CallPiece(self.calls_started, call_id or self._new_id(), name))
        self.calls_started += 1

    def arguments(self, text: str) -> None:
        if not text:
            return
        index = self.calls_started - 1
        if not self._calls or self._calls[-1].index != index:
            self._calls.append(_CallPiece(index))
        self._calls[-1].arguments += text

    def take(self) -> MessageDelta:
        delta = MessageDelta(
            "".join(self._content),
            "".join(self._reasoning),
            tuple(ToolCallDelta(piece.index, piece.id, piece.name, piece.arguments) for piece in self._calls),
        )
        self._content, self._reasoning, self._calls = [], [], []
        return delta


def held_suffix(text: str, markers: Sequence[str]) -> int:
    """Length of the longest end of `text` that is a proper prefix of one of `markers`."""
    longest = min(len(text), max((len(m) for m in markers), default=1) - 1)
    for size in range(longest, 0, -1):
        tail = text[-size:]
        if any(m.startswith(tail) for m in markers):
            return size
    return 0


class MarkupStream(ParserStream):
    """Buffer, state loop and `<think>` handling. Subclasses implement `begin` (the state after any
    leading reasoning block) and their further states; a state returns False when it needs more text
    (at `final`, when there is nothing left to do)."""

    def __init__(self, new_id: Callable[[], str], *, in_reasoning: bool = False) -> None:
        self.buf = ""
        self.final = False
        self.out = DeltaBuilder(new_id)
        self.content = TextRun(self.out.content)
        self.reasoning = TextRun(self.out.reasoning, delimited=True)
        # With the reasoning block opened by the prompt, a repeated `<think>` is dropped all the same.
        self._after_leading: State = self._think if in_reasoning else self.begin
        self.state: State = self._leading

    # -- ParserStream -------------------------------------------------------------------------
    def feed(self, text: str) -> MessageDelta:
        self.buf += text
        self._run()
        return self.out.take()

    def finish(self) -> MessageDelta:
        self.final = True
        self._run()
        self.content.end(at_markup=False)
        self.reasoning.end()
        return self.out.take()

    def _run(self) -> None:
        while self.state():
            pass

    # -- helpers for states -------------------------------------------------------------------
    def take(self, size: int) -> str:
        taken, self.buf = self.buf[:size], self.buf[size:]
        return taken

    def start_call(self, name: str, call_id: str | None = None) -> None:
        """A call begins: the content run before it is over."""
        self.content.end()
        self.out.start_call(name, call_id)

    def text_until(self, markers: Sequence[str], run: TextRun) -> str | None:
        """Write text to `run` up to the first of `markers`, which is returned (left at the front of
        `buf`); None when no marker is in sight (a possible marker start stays buffered)."""
        found: tuple[int, str] | None = None
        for marker in markers:
            at = self.buf.find(marker)
            if at >= 0 and (found is None or at < found[0]):
                found = (at, marker)
        if found is not None:
            run.write(self.take(found[0]))
            return found[1]
        keep = 0 if self.final else held_suffix(self.buf, markers)
        run.write(self.take(len(self.buf) - keep))
        return None

    def skip_ws(self) -> bool:
        """Drop leading whitespace; whether a non-whitespace character is now at the front."""
        self.take(len(self.buf) - len(self.buf.lstrip()))
        return bool(self.buf)

    def skip_closing(self, literal: str) -> bool:
        """Consume optional whitespace and `literal` if they come next; False while undecided."""
        text = self.buf.lstrip()
        if text.startswith(literal):
            self.take(len(self.buf) - len(text) + len(literal))
        elif (not text or literal.startswith(text)) and not self.final:
            return False
        return True

    def starts_with(self, literal: str) -> bool | None:
        """Whether `buf` starts with `literal`; None while it could still (a proper prefix of it)."""
        if self.buf.startswith(literal):
            return True
        if literal.startswith(self.buf) and not self.final:
            return None
        return False

    # -- states -------------------------------------------------------------------------------
    def _leading(self) -> bool:
        """Start of output: a `<think>` block here (after whitespace) is reasoning."""
        text = self.buf.lstrip()
        if text.startswith(THINK_OPEN):
            self.take(len(self.buf) - len(text) + len(THINK_OPEN))
            self.state = self._think
            return True
        if (not text or THINK_OPEN.startswith(text)) and not self.final:
            return False
        self.state = self._after_leading
        return True

    def _think(self) -> bool:
        if self.text_until([THINK_CLOSE], self.reasoning) is None:
            return False
        self.take(len(THINK_CLOSE))
        self.reasoning.end()
        self.content.end()  # content after `</think>` starts after markup
        self.state = self.begin
        return True

    @abstractmethod
    def begin(self) -> bool:
        """The format's first state, after any leading reasoning block."""

    def plain(self) -> bool:
        """Everything from here is content."""
        self.content.write(self.take(len(self.buf)))
        return False


class _ReasoningStream(MarkupStream):
    def begin(self) -> bool:
        self.state = self.plain
        return True


def reasoning_stream(*, in_reasoning: bool = False) -> ParserStream:
    """A stream that only splits the leading reasoning block from content (turns that parse no calls)."""
    return _ReasoningStream(lambda: "", in_reasoning=in_reasoning)
