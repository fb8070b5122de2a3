"""Malformed markup degrades to content and never raises, however it is chunked."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_runtime.tool_parsers import get_parser, parser_names
from tests.agent_runtime.tool_parsers.chunking import cut_points, stream_deltas, streamed, summary
from tests.agent_runtime.tool_parsers.recorded_outputs import MALFORMED, MARKERS, Malformed


@pytest.mark.parametrize("case", MALFORMED, ids=str)
def test_malformed_markup_is_content_not_a_call(case: Malformed):
    message = get_parser(case.parser).parse(case.text)
    assert message.tool_calls == ()
    assert case.content_contains in message.content


@pytest.mark.parametrize("case", MALFORMED, ids=str)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_malformed_markup_streams_like_the_whole_parse(case: Malformed, data):
    parser = get_parser(case.parser)
    cuts = data.draw(cut_points(case.text))
    assert summary(streamed(parser, case.text, cuts)) == summary(parser.parse(case.text))


def test_a_call_broken_after_it_started_stops_and_the_rest_is_content():
    text = '<tool_call>\n{"name": "f", "arguments": {"a": 1}} trailing junk'
    message = get_parser("hermes").parse(text)
    assert [(call.name, call.arguments) for call in message.tool_calls] == [("f", '{"a": 1}')]
    assert message.content == "trailing junk"


def test_truncated_arguments_end_the_call_without_raising():
    stream = get_parser("mistral").stream()
    stream.feed('[TOOL_CALLS]f[ARGS]{"a": [1, 2')
    assert stream.finish().tool_calls == ()


def test_reasoning_opened_in_the_prompt_and_never_closed_is_all_reasoning():
    message = get_parser("deepseek_v3").parse("still thinking <｜tool▁calls▁begin｜>", in_reasoning=True)
    assert (message.content, message.reasoning, message.tool_calls) == (
        "",
        "still thinking <｜tool▁calls▁begin｜>",
        (),
    )


# Pieces of every format's markup and of JSON, so random texts hit partial and broken structures.
PIECES = sorted(
    {marker for markers in MARKERS.values() for marker in markers}
    | {
        "{",
        "}",
        "[",
        "]",
        '"',
        "\\",
        ":",
        ",",
        ";",
        " ",
        "\n",
        "<",
        "|",
        "a",
        "1",
        '"name"',
        '"arguments"',
        '"f"',
        '"type"',
        '"function"',
        "<think>",
        "</think>",
        "```",
        "f(a=1)",
        "[TOOL_CALLS]",
        "[ARGS]",
        "<|python_tag|>",
        "<|channel|>analysis",
        "<|channel|>final",
        " to=functions.f ",
        "<|message|>",
        "<tool_call>",
        "</tool_call>",
        "function<｜tool▁sep｜>",
        "<｜tool▁call▁begin｜>",
        "<｜tool▁call▁end｜>",
    }
)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(parser_names()),
    text=st.lists(st.sampled_from(PIECES), max_size=30).map("".join),
    in_reasoning=st.booleans(),
    data=st.data(),
)
def test_arbitrary_markup_soup_never_raises_and_is_chunking_independent(name, text, in_reasoning, data):
    parser = get_parser(name)
    cuts = data.draw(cut_points(text))
    stream_deltas(parser, text, cuts, in_reasoning=in_reasoning)
    whole = parser.parse(text, in_reasoning=in_reasoning)
    assert summary(streamed(parser, text, cuts, in_reasoning=in_reasoning)) == summary(whole)


def test_rejected_markup_keeps_the_surrounding_text_as_written():
    message = get_parser("hermes").parse("See <tool_call> tags:\n<tool_call>oops")
    assert message.content == "See <tool_call> tags:\n<tool_call>oops"


@pytest.mark.parametrize("name", parser_names())
@pytest.mark.parametrize("text", ["  hello  \n", "code:\n    x = 1\n\n", "a <tool or [TOOL and <|chan  "])
def test_text_without_markup_comes_back_verbatim(name, text):
    assert get_parser(name).parse(text).content == text
