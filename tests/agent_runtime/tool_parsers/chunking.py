"""Feeding a parser's stream an output cut at given points, and checking the deltas it returns."""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import strategies as st

from agent_runtime.tool_parsers import MessageDelta, ParsedMessage, ToolParser, collect


def stream_deltas(
    parser: ToolParser, text: str, cuts: Iterable[int], *, in_reasoning: bool = False
) -> list[MessageDelta]:
    stream = parser.stream(in_reasoning=in_reasoning)
    bounds = [0, *sorted(set(cuts)), len(text)]
    deltas = [stream.feed(text[start:end]) for start, end in zip(bounds, bounds[1:], strict=False)]
    return [*deltas, stream.finish()]


def streamed(
    parser: ToolParser, text: str, cuts: Iterable[int], *, in_reasoning: bool = False
) -> ParsedMessage:
    return collect(stream_deltas(parser, text, cuts, in_reasoning=in_reasoning))


def summary(message: ParsedMessage) -> tuple[str, str, list[tuple[str, str]]]:
    """Everything but the ids (which each stream generates)."""
    return message.content, message.reasoning, [(call.name, call.arguments) for call in message.tool_calls]


def cut_points(text: str) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, len(text)), max_size=16)


def check_call_deltas(deltas: list[MessageDelta]) -> None:
    """Each call's first delta brings its index (in order), id and name; later ones only arguments."""
    seen: list[int] = []
    for delta in deltas:
        for call in delta.tool_calls:
            if call.index not in seen:
                assert call.index == len(seen), "calls must be numbered 0, 1, 2, ... in order"
                assert call.id and call.name, "a call's first delta carries its id and name"
                seen.append(call.index)
            else:
                assert call.id is None and call.name is None, "id and name come once"
                assert call.index == seen[-1], "arguments only for the latest call"
