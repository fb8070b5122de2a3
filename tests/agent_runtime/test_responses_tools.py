"""Function calls and text.format on the Responses API, through the `openai` client."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

MODEL = "SmolLM2-135M-Instruct"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 40},
                       "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
}


@pytest.fixture(scope="module")
def client(server_url):
    with openai.OpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0, timeout=300) as c:
        yield c


def test_forced_function_call_round_trip_with_previous_response_id(client):
    first = client.responses.create(model=MODEL, input="What is the weather in Paris?", tools=[WEATHER],
                                    tool_choice="required", parallel_tool_calls=False, temperature=0,
                                    max_output_tokens=80)
    assert first.status == "completed"
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER["parameters"])
    assert all(item.type != "message" or not item.content[0].text for item in first.output)

    second = client.responses.create(
        model=MODEL, previous_response_id=first.id, tools=[WEATHER], tool_choice="none", temperature=0,
        max_output_tokens=40,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                "output": json.dumps({"temperature": 18, "sky": "sunny"})}],
    )
    assert second.output_text
    assert not any(item.type == "function_call" for item in second.output)


def test_streamed_function_call_events(client):
    events = list(client.responses.create(model=MODEL, input="Weather in Rome?", tools=[WEATHER],
                                          tool_choice={"type": "function", "name": "get_weather"},
                                          parallel_tool_calls=False, temperature=0, max_output_tokens=80,
                                          stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    added = [e for e in events if e.type == "response.output_item.added" and e.item.type == "function_call"]
    assert len(added) == 1
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == arguments
    jsonschema.validate(json.loads(arguments), WEATHER["parameters"])
    final = events[-1].response
    assert [item.type for item in final.output] == ["function_call"]
    assert final.output[0].arguments == arguments
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_text_format_json_schema(client):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 99}},
              "required": ["name", "age"], "additionalProperties": False}
    response = client.responses.create(model=MODEL, input="Invent a person.", temperature=0, max_output_tokens=60,
                                       text={"format": {"type": "json_schema", "name": "person", "schema": schema,
                                                        "strict": True}})
    jsonschema.validate(json.loads(response.output_text), schema)
    assert response.text.format.type == "json_schema"


def test_unknown_forced_tool_is_a_400(client):
    with pytest.raises(openai.BadRequestError, match="nope"):
        client.responses.create(model=MODEL, input="hi", tools=[WEATHER],
                                tool_choice={"type": "function", "name": "nope"})
