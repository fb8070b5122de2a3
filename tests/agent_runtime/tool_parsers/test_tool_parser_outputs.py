"""Recorded outputs of every format parse to their calls, and stream identically under any chunking."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_runtime.tool_parsers import collect, get_parser, reasoning_stream
from tests.agent_runtime.tool_parsers.chunking import (
    check_call_deltas,
    cut_points,
    stream_deltas,
    streamed,
    summary,
)
from tests.agent_runtime.tool_parsers.recorded_outputs import MARKERS, RECORDED, Recorded


@pytest.mark.parametrize("case", RECORDED, ids=str)
def test_recorded_output_parses_to_content_reasoning_and_calls(case: Recorded):
    message = get_parser(case.parser).parse(case.text, in_reasoning=case.in_reasoning)
    assert message.content == case.content
    assert message.reasoning == case.reasoning
    assert [(call.name, json.loads(call.arguments)) for call in message.tool_calls] == list(case.calls)
    assert len({call.id for call in message.tool_calls}) == len(message.tool_calls)


@pytest.mark.parametrize("case", RECORDED, ids=str)
def test_one_character_at_a_time_streams_the_whole_parse(case: Recorded):
    parser = get_parser(case.parser)
    deltas = stream_deltas(parser, case.text, range(len(case.text)), in_reasoning=case.in_reasoning)
    check_call_deltas(deltas)
    whole = parser.parse(case.text, in_reasoning=case.in_reasoning)
    assert summary(
        streamed(parser, case.text, range(len(case.text)), in_reasoning=case.in_reasoning)
    ) == summary(whole)


@pytest.mark.parametrize("case", RECORDED, ids=str)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_any_chunking_streams_the_whole_parse_without_markup_in_content(case: Recorded, data):
    parser = get_parser(case.parser)
    cuts = data.draw(cut_points(case.text))
    deltas = stream_deltas(parser, case.text, cuts, in_reasoning=case.in_reasoning)
    check_call_deltas(deltas)
    for delta in deltas:
        assert not any(marker in delta.content for marker in MARKERS[case.parser])
    whole = parser.parse(case.text, in_reasoning=case.in_reasoning)
    assert summary(streamed(parser, case.text, cuts, in_reasoning=case.in_reasoning)) == summary(whole)


def test_mistral_call_ids_are_nine_alphanumerics_and_a_given_call_id_is_kept():
    parser = get_parser("mistral")
    parallel = next(case for case in RECORDED if str(case) == "mistral-v11-parallel")
    ids = [call.id for call in parser.parse(parallel.text).tool_calls]
    assert all(re.fullmatch(r"[A-Za-z0-9]{9}", call_id) for call_id in ids) and len(set(ids)) == 2
    with_id = next(case for case in RECORDED if str(case) == "mistral-v11-call-id")
    assert parser.parse(with_id.text).tool_calls[0].id == "a1B2c3D4e"


# A prefix of each format's output that stops inside the arguments: they must already be streaming.
PARTIAL_CALLS = [
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa'),
    ("llama3_json", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Pa'),
    ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Pa'),
    ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Pa'),
    ("deepseek_v3", '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Pa'),
    (
        "deepseek_v3",
        '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"city": "Pa',
    ),
    ("harmony", '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Pa'),
    ("gemma", '```json\n{"name": "get_weather", "parameters": {"city": "Pa'),
    ("json", '{"name": "get_weather", "arguments": {"city": "Pa'),
]


@pytest.mark.parametrize(("parser_name", "prefix"), PARTIAL_CALLS)
def test_arguments_stream_before_the_call_is_complete(parser_name: str, prefix: str):
    stream = get_parser(parser_name).stream()
    delta = stream.feed(prefix)
    assert delta.content == ""
    (call,) = delta.tool_calls
    assert (call.index, call.name, call.arguments) == (0, "get_weather", '{"city": "Pa')
    assert call.id
    rest = stream.feed('ris"}')
    assert [(c.index, c.id, c.name, c.arguments) for c in rest.tool_calls] == [(0, None, None, 'ris"}')]


def test_content_that_may_start_a_marker_is_held_until_decided():
    stream = get_parser("hermes").stream()
    assert stream.feed("I will <tool").content == "I will"
    assert stream.feed("s help").content == " <tools help"
    assert stream.finish().content == ""


def test_python_tool_code_calls_are_emitted_when_the_fence_closes():
    stream = get_parser("gemma").stream()
    assert not stream.feed('```tool_code\nget_weather(city="Par').tool_calls
    (call,) = stream.feed('is")\n```').tool_calls
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})


def test_reasoning_stream_only_splits_the_reasoning_block():
    stream = reasoning_stream()
    deltas = [
        stream.feed("<thi"),
        stream.feed("nk>plan <tool_call></th"),
        stream.feed("ink>\n\nAnswer <tool_call>"),
    ]
    message = collect([*deltas, stream.finish()])
    assert (message.content, message.reasoning, message.tool_calls) == (
        "Answer <tool_call>",
        "plan <tool_call>",
        (),
    )


def test_a_think_tag_repeated_after_the_prompt_opened_reasoning_is_dropped():
    message = get_parser("hermes").parse("<think>\nhmm\n</think>\nHello", in_reasoning=True)
    assert (message.content, message.reasoning) == ("Hello", "hmm")
