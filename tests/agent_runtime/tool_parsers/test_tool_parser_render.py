"""render_calls writes calls that parse back to the same names and arguments, streamed or whole."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_runtime.tool_parsers import ToolCall, get_parser, parser_names
from tests.agent_runtime.tool_parsers.chunking import cut_points, streamed, summary

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
CALLS = st.lists(
    st.builds(
        ToolCall,
        id=st.just("call_x"),
        name=st.from_regex(r"[A-Za-z_][A-Za-z0-9_\-]{0,20}", fullmatch=True),
        arguments=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4).map(
            lambda arguments: json.dumps(arguments, ensure_ascii=False)
        ),
    ),
    min_size=1,
    max_size=3,
)


def _calls(message) -> list[tuple[str, object]]:
    return [(call.name, json.loads(call.arguments)) for call in message.tool_calls]


@pytest.mark.parametrize("name", parser_names())
@settings(max_examples=30, deadline=None)
@given(calls=CALLS, data=st.data())
def test_rendered_calls_parse_back(name: str, calls: list[ToolCall], data):
    parser = get_parser(name)
    text = parser.render_calls(calls)
    message = parser.parse(text)
    assert message.content == "" and message.reasoning == ""
    assert _calls(message) == [(call.name, json.loads(call.arguments)) for call in calls]
    assert summary(streamed(parser, text, data.draw(cut_points(text)))) == summary(message)


@pytest.mark.parametrize("name", parser_names())
def test_no_calls_render_as_nothing(name: str):
    assert get_parser(name).render_calls([]) == ""


def test_gemma_renders_python_when_it_can_and_json_otherwise():
    gemma = get_parser("gemma")
    python = ToolCall("1", "get_weather", '{"city": "Paris", "days": 3, "metric": true}')
    assert gemma.render_calls([python]) == "```tool_code\nget_weather(city='Paris', days=3, metric=True)\n```"
    hyphen = ToolCall("2", "get-weather", '{"city": "Paris"}')
    assert (
        gemma.render_calls([hyphen])
        == '```json\n[{"name": "get-weather", "parameters": {"city": "Paris"}}]\n```'
    )
