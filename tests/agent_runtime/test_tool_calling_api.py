"""Tool calls and structured output through the `openai` client, with the embedded SmolLM2 model.

SmolLM2's template cannot render tools, so the tools go into the system prompt in the Hermes
format (agent_runtime/tool_calling.py) and forced calls are held to that format by a grammar.
"""

from __future__ import annotations

import json
import re

import jsonschema
import openai
import pytest

MODEL = "SmolLM2-135M-Instruct"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "details": {
                    "type": "object",
                    "properties": {"hourly": {"type": "boolean"}, "days": {"type": "integer", "minimum": 1,
                                                                              "maximum": 7}},
                    "required": ["hourly"],
                },
            },
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a timezone",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 40}},
                       "required": ["timezone"]},
    },
}
TOOLS = [WEATHER, TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]


@pytest.fixture(scope="module")
def client(server_url):
    with openai.OpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0, timeout=300) as c:
        yield c


def assert_valid_calls(calls, names=None):
    assert calls
    for call in calls:
        assert call.type == "function" and call.id
        assert names is None or call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_required_tool_choice_gives_schema_valid_calls_20_of_20(client):
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", n=20, temperature=0.9, seed=1,
        max_tokens=160, parallel_tool_calls=False,
    )
    assert len(response.choices) == 20
    for choice in response.choices:
        assert choice.finish_reason == "tool_calls", choice.message
        assert len(choice.message.tool_calls) == 1
        assert_valid_calls(choice.message.tool_calls)
        assert not choice.message.content  # no markup leaks into content


def test_required_with_parallel_calls_gives_valid_calls(client):
    """Parallel calls allowed: the model may chain several; every finished one is schema-valid.
    (A 135M model sometimes repeats a call until max_tokens; that turn ends with "length".)"""
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", n=8, temperature=0.9, seed=1,
        max_tokens=200,
    )
    finished = [c for c in response.choices if c.finish_reason == "tool_calls"]
    assert len(finished) >= 4
    assert any(len(c.message.tool_calls) > 1 for c in finished)
    for choice in finished:
        assert_valid_calls(choice.message.tool_calls)
        assert len({c.id for c in choice.message.tool_calls}) == len(choice.message.tool_calls)


def test_named_function_is_the_one_called_20_of_20(client):
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, n=20, temperature=0.9, seed=2, max_tokens=160,
        tool_choice={"type": "function", "function": {"name": "get_time"}}, parallel_tool_calls=False,
    )
    for choice in response.choices:
        assert choice.finish_reason == "tool_calls"
        assert_valid_calls(choice.message.tool_calls, {"get_time"})


def test_parallel_tool_calls_off_gives_exactly_one_call(client):
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, n=4,
        temperature=0.9, seed=3, max_tokens=160,
    )
    for choice in response.choices:
        assert len(choice.message.tool_calls) == 1


def test_allowed_tools_limits_the_forced_call(client):
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, n=4, temperature=0.9, seed=4, max_tokens=160,
        tool_choice={"type": "allowed_tools", "allowed_tools": {
            "mode": "required", "tools": [{"type": "function", "function": {"name": "get_weather"}}]}},
    )
    for choice in response.choices:
        assert_valid_calls(choice.message.tool_calls, {"get_weather"})


def test_tool_choice_none_hides_the_tools(client):
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="none",
                                              temperature=0, max_tokens=24)
    choice = response.choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason in ("stop", "length")
    assert choice.message.content


def forced_round_trip(client, stream: bool) -> tuple[list[dict], str]:
    """Forced call -> tool message with its tool_call_id -> final answer (tool_choice auto)."""
    kwargs = dict(model=MODEL, tools=TOOLS, temperature=0, max_tokens=120)
    forced = {"type": "function", "function": {"name": "get_weather"}}
    if stream:
        calls: dict[int, dict] = {}
        finish = None
        for chunk in client.chat.completions.create(messages=ASK, tool_choice=forced, stream=True, **kwargs):
            choice = chunk.choices[0]
            assert not choice.delta.content  # markup never reaches content
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                if delta.id:
                    assert call["id"] is None  # the id comes once
                    call["id"] = delta.id
                if delta.function and delta.function.name:
                    assert not call["name"]  # the name comes once
                    call["name"] = delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
            finish = choice.finish_reason or finish
        assert finish == "tool_calls"
        tool_calls = [{"id": c["id"], "type": "function",
                       "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls.values()]
    else:
        message = client.chat.completions.create(messages=ASK, tool_choice=forced, **kwargs).choices[0].message
        tool_calls = [c.model_dump() for c in message.tool_calls]
    assert tool_calls and all(c["function"]["name"] == "get_weather" for c in tool_calls)
    for c in tool_calls:
        jsonschema.validate(json.loads(c["function"]["arguments"]), SCHEMAS["get_weather"])
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": tool_calls},
        *[{"role": "tool", "tool_call_id": c["id"], "content": json.dumps({"temperature": 18, "sky": "sunny"})}
          for c in tool_calls],
    ]
    final = client.chat.completions.create(messages=history, tool_choice="none", **kwargs).choices[0]
    assert final.finish_reason in ("stop", "length") and final.message.content
    return tool_calls, final.message.content


def test_forced_tool_round_trip_non_streamed(client):
    forced_round_trip(client, stream=False)


def test_forced_tool_round_trip_streamed_matches_non_streamed(client):
    calls_streamed, answer_streamed = forced_round_trip(client, stream=True)
    calls_whole, answer_whole = forced_round_trip(client, stream=False)
    # Greedy: the same call and the same answer, whether streamed or not (ids differ).
    assert [c["function"] for c in calls_streamed] == [c["function"] for c in calls_whole]
    assert answer_streamed == answer_whole


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "role": {"enum": ["engineer", "doctor", "artist"]},
        "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                                     "country": {"enum": ["FR", "DE", "US"]}},
                    "required": ["city", "country"], "additionalProperties": False},
    },
    "required": ["name", "role", "address"],
    "additionalProperties": False,
}


def test_response_format_json_schema_validates_20_of_20(client):
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Describe a person."}], n=20, temperature=0.9, seed=5,
        max_tokens=120, response_format={"type": "json_schema",
                                         "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
    )
    for choice in response.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), PERSON)


def test_response_format_streams_too(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Describe a person."}], temperature=0, max_tokens=120,
        stream=True, response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}},
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    jsonschema.validate(json.loads(text), PERSON)


def test_regex_and_choice_extras_on_chat_and_completions(client):
    pattern = r"[A-Z][a-z]+ is [0-9]{1,3} years old\."
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell me about someone."}], n=20, temperature=0.9,
        seed=6, max_tokens=30, extra_body={"response_format": {"type": "regex", "regex": pattern}},
    )
    for choice in chat.choices:
        assert re.fullmatch(pattern, choice.message.content), choice.message.content
    completion = client.completions.create(model=MODEL, prompt="Is water wet? Answer:", max_tokens=5,
                                           temperature=0, extra_body={"guided_choice": ["yes", "no"]})
    assert completion.choices[0].text in ("yes", "no")


def test_completions_json_object(client):
    completion = client.completions.create(model=MODEL, prompt="A JSON object describing a cat:", max_tokens=80,
                                           temperature=0, extra_body={"response_format": {"type": "json_object"}})
    text = completion.choices[0].text
    assert text.startswith("{")
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize(
    ("kwargs", "param_or_text"),
    [
        ({"tool_choice": "required"}, "no tools were given"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "'nope'"),
        ({"tools": [{"type": "retrieval"}]}, "only function tools"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "bad name!"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "sometimes"),
        ({"response_format": {"type": "yaml"}}, "yaml"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "json_schema.schema"),
        ({"response_format": {"type": "regex", "regex": "[a-"}}, "invalid regex"),
        ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
         "cannot be combined"),
    ],
)
def test_bad_tool_and_format_requests_get_a_400_naming_the_problem(client, kwargs, param_or_text):
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k == "response_format"}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=8, extra_body=extra or None, **kwargs)
    assert param_or_text in info.value.body["message"]


def test_strict_tool_under_auto_either_answers_or_calls_validly(client):
    strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=[strict, TIME], n=12,
                                              temperature=1.0, seed=7, max_tokens=120, parallel_tool_calls=False)
    for choice in response.choices:  # (which of the two the small model picks is its business)
        for call in choice.message.tool_calls or []:
            if call.function.name == "get_weather":
                jsonschema.validate(json.loads(call.function.arguments), SCHEMAS["get_weather"])
        assert "<tool_call>" not in (choice.message.content or "")


@pytest.mark.parametrize("call", [{"id": "c1", "type": "function", "function": {}}, {"id": "c1"},
                                  {"id": "c1", "function": {"name": 3}}])
def test_history_tool_calls_without_a_function_name_are_a_400(client, call):
    with pytest.raises(openai.BadRequestError, match="string name"):
        client.chat.completions.create(model=MODEL, max_tokens=4, messages=[
            *ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "x"}])
