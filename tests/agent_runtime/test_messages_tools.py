"""Tool use on POST /v1/messages through the official anthropic client, with the embedded SmolLM2 model.

SmolLM2's template cannot render tools: they go into the system prompt in the Hermes format and a
forced call (tool_choice any / tool) is held to that format by a grammar (agent_runtime/tool_calling.py).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import anthropic
import jsonschema
import pytest

from agent_runtime.openai.messages import BlockEvents, content_blocks
from agent_runtime.tool_calling import TurnOutput, TurnPlan
from agent_runtime.tool_parsers import MessageDelta, ParsedMessage, ToolCall, get_parser

MODEL = "SmolLM2-135M-Instruct"

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name", "maxLength": 40},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
}
TIME = {
    "name": "get_time",
    "description": "Current time in a timezone",
    "input_schema": {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 40}},
                     "required": ["timezone"]},
}
TOOLS = [WEATHER, TIME]
SCHEMAS = {t["name"]: t["input_schema"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]
ONE_CALL = {"disable_parallel_tool_use": True}
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def client(server_url):
    with anthropic.Anthropic(base_url=server_url, api_key="x", max_retries=0, timeout=300) as c:
        yield c


def create(client, **kwargs):
    """messages.create with the fields this SDK has no argument for (temperature, seed) in extra_body."""
    extra = {k: kwargs.pop(k) for k in ("temperature", "seed") if k in kwargs}
    return client.messages.create(model=MODEL, max_tokens=kwargs.pop("max_tokens", 120), extra_body=extra, **kwargs)


def concurrently(calls):
    """Run the thunks at once, so the engine batches them."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def tool_uses(message) -> list:
    return [block for block in message.content if block.type == "tool_use"]


def assert_valid_tool_use(message, names=None) -> None:
    assert message.stop_reason == "tool_use", message.content
    assert [block.type for block in message.content] == ["tool_use"]  # no call markup leaks into text
    for block in tool_uses(message):
        assert block.id.startswith("toolu_") and len(block.id) > len("toolu_")
        assert names is None or block.name in names
        jsonschema.validate(block.input, SCHEMAS[block.name])


def test_any_gives_schema_valid_tool_use_10_of_10_and_seeds_reproduce(client):
    def sample(seed: int):
        return lambda: create(client, messages=ASK, tools=TOOLS, tool_choice={"type": "any", **ONE_CALL},
                              temperature=0.9, seed=seed)

    *messages, again = concurrently([sample(seed) for seed in range(10)] + [sample(0)])
    for message in messages:
        assert_valid_tool_use(message)
    assert [(b.name, b.input) for b in tool_uses(again)] == [(b.name, b.input) for b in tool_uses(messages[0])]
    assert len({json.dumps([(b.name, b.input) for b in tool_uses(m)]) for m in messages}) > 1  # seeds sampled


def test_named_tool_is_the_one_called(client):
    forced = {"type": "tool", "name": "get_time", **ONE_CALL}
    messages = concurrently([lambda seed=seed: create(client, messages=ASK, tools=TOOLS, tool_choice=forced,
                                                      temperature=0.9, seed=seed) for seed in range(3)])
    for message in messages:
        assert_valid_tool_use(message, {"get_time"})


def streamed(client, **kwargs) -> tuple[list, anthropic.types.Message]:
    """The raw events of a streamed create(), and the message the SDK's stream helper builds of them."""
    extra = {k: kwargs.pop(k) for k in ("temperature", "seed") if k in kwargs}
    with client.messages.stream(model=MODEL, max_tokens=kwargs.pop("max_tokens", 120), extra_body=extra,
                                **kwargs) as stream:
        events = [event for event in stream if event.type in (
            "message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
            "message_stop")]
        return events, stream.get_final_message()


def blocks_of(events) -> list[dict]:
    """Content blocks rebuilt from raw events, checking the start / delta / stop framing on the way."""
    assert events[0].type == "message_start" and events[-2].type == "message_delta"
    assert events[-1].type == "message_stop"
    blocks: list[dict] = []
    open_index = None
    for event in events[1:-2]:
        if event.type == "content_block_start":
            assert open_index is None and event.index == len(blocks)
            open_index = event.index
            blocks.append({**event.content_block.model_dump(), "deltas": []})
        elif event.type == "content_block_delta":
            assert event.index == open_index
            blocks[-1]["deltas"].append(event.delta.model_dump())
        else:
            assert event.type == "content_block_stop" and event.index == open_index
            open_index = None
    assert open_index is None
    return blocks


def round_trip_history(call) -> list[dict]:
    """ASK, the assistant's tool_use and the user's tool_result for it."""
    return [
        *ASK,
        {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name,
                                           "input": call.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                      "content": json.dumps({"temperature": 18, "sky": "sunny"})}]},
    ]


def test_forced_tool_round_trip_streamed_matches_non_streamed(client):
    forced = {"type": "tool", "name": "get_weather", **ONE_CALL}
    whole = create(client, messages=ASK, tools=TOOLS, tool_choice=forced, **GREEDY)
    assert_valid_tool_use(whole, {"get_weather"})
    (call,) = tool_uses(whole)

    events, final = streamed(client, messages=ASK, tools=TOOLS, tool_choice=forced, **GREEDY)
    (block,) = blocks_of(events)
    assert block["type"] == "tool_use" and block["name"] == "get_weather" and block["input"] == {}
    assert block["id"].startswith("toolu_")
    assert {d["type"] for d in block["deltas"]} == {"input_json_delta"}
    assert json.loads("".join(d["partial_json"] for d in block["deltas"])) == call.input
    assert events[-2].delta.stop_reason == "tool_use"
    assert final.stop_reason == "tool_use" and final.content[0].input == call.input
    assert final.usage.output_tokens == whole.usage.output_tokens

    # The tool's result goes back with the call's id; the answer is text, streamed or not.
    history = round_trip_history(call)
    answer = create(client, messages=history, tools=TOOLS, tool_choice={"type": "none"}, max_tokens=40, **GREEDY)
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert [b.type for b in answer.content] == ["text"] and answer.content[0].text
    events, final = streamed(client, messages=history, tools=TOOLS, tool_choice={"type": "none"}, max_tokens=40,
                             **GREEDY)
    (block,) = blocks_of(events)
    assert block["type"] == "text" and "".join(d["text"] for d in block["deltas"]) == answer.content[0].text
    assert final.content[0].text == answer.content[0].text and final.stop_reason == answer.stop_reason


def test_auto_after_a_tool_result_streamed_matches_non_streamed(client):
    call = anthropic.types.ToolUseBlock(type="tool_use", id="toolu_1", name="get_weather",
                                        input={"city": "Paris", "unit": "celsius"})
    kwargs = dict(messages=round_trip_history(call), tools=TOOLS, tool_choice={"type": "auto"}, max_tokens=40,
                  **GREEDY)
    whole, (events, final) = concurrently([lambda: create(client, **kwargs), lambda: streamed(client, **kwargs)])
    calls = tool_uses(whole)
    assert whole.stop_reason == "tool_use" if calls else whole.stop_reason in ("end_turn", "max_tokens")
    for block in calls:
        jsonschema.validate(block.input, SCHEMAS[block.name])
    assert [b["type"] for b in blocks_of(events)] == [b.type for b in whole.content]
    assert [b.model_dump(exclude={"id", "parsed_output"}) for b in final.content] == \
        [b.model_dump(exclude={"id"}) for b in whole.content]
    assert final.stop_reason == whole.stop_reason


@pytest.mark.parametrize("tool_choice, match", [
    ({"type": "bogus"}, "bogus"),
    ({"type": "tool", "name": "no_such_tool"}, "no_such_tool"),
    ({"type": "tool"}, "name"),
    ({"type": "any"}, "no tools"),
])
def test_bad_tool_choice_is_a_bad_request(client, tool_choice, match):
    tools = [] if match == "no tools" else TOOLS
    with pytest.raises(anthropic.BadRequestError, match=match) as caught:
        create(client, messages=ASK, tools=tools, tool_choice=tool_choice, max_tokens=4)
    assert caught.value.body["error"]["type"] == "invalid_request_error"


def test_server_tools_and_duplicate_names_are_bad_requests(client):
    with pytest.raises(anthropic.BadRequestError, match="web_search_20250305"):
        create(client, messages=ASK, max_tokens=4, tools=[{"type": "web_search_20250305", "name": "web_search"}])
    with pytest.raises(anthropic.BadRequestError, match="used twice"):
        create(client, messages=ASK, max_tokens=4, tools=[WEATHER, WEATHER])


# -- the block framing without the model ------------------------------------------------------------

def events_of(raw: list[str]) -> list[tuple[str, dict]]:
    out = []
    for event in raw:
        name, data = event.strip().split("\n")
        out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_block_events_open_a_block_per_kind_in_order():
    plan = TurnPlan(get_parser("hermes"), (), parse_calls=True, guided=None, parallel=True)
    text = ('<think>Need the weather.</think>Checking.<tool_call>\n{"name": "get_weather", '
            '"arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>\n<tool_call>\n'
            '{"name": "get_time", "arguments": {"timezone": "CET"}}\n</tool_call>')
    output, blocks, raw = TurnOutput(plan, in_reasoning=False), BlockEvents(), []
    for i in range(0, len(text), 3):  # small chunks, as tokens come
        raw += blocks.feed(output.feed(text[i:i + 3]))
    raw += blocks.feed(output.finish()) + blocks.close()
    events = events_of(raw)
    assert [name for name, _ in events if name not in ("content_block_delta", "ping")] == [
        "content_block_start", "content_block_stop"] * 4
    assert events[1][0] == "ping"  # right after the first block starts, as Anthropic sends it
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert [s["type"] for s in starts] == ["thinking", "text", "tool_use", "tool_use"]
    assert [s.get("name") for s in starts[2:]] == ["get_weather", "get_time"]
    assert all(s["id"].startswith("toolu_") and s["input"] == {} for s in starts[2:])
    deltas: dict[int, list[dict]] = {}
    for name, data in events:
        if name == "content_block_delta":
            deltas.setdefault(data["index"], []).append(data["delta"])
    assert "".join(d["thinking"] for d in deltas[0]) == "Need the weather."
    assert "".join(d["text"] for d in deltas[1]) == "Checking."
    assert json.loads("".join(d["partial_json"] for d in deltas[2])) == {"city": "Paris", "unit": "celsius"}
    assert json.loads("".join(d["partial_json"] for d in deltas[3])) == {"timezone": "CET"}
    assert blocks.has_calls


def test_block_events_of_an_empty_message_is_one_empty_text_block():
    blocks = BlockEvents()
    events = events_of(blocks.feed(MessageDelta()) + blocks.close())
    assert [name for name, _ in events] == ["content_block_start", "ping", "content_block_stop"]
    assert events[0][1]["content_block"] == {"type": "text", "text": ""}
    assert not blocks.has_calls


def test_content_blocks_order_and_cut_off_calls():
    parsed = ParsedMessage("Checking.", "Need the weather.", (
        ToolCall("call_abc", "get_weather", '{"city": "Paris", "unit": "celsius"}'),
        ToolCall("call_def", "get_time", '{"timezone": "CE'),  # cut by max_tokens
    ))
    assert content_blocks(parsed) == [
        {"type": "thinking", "thinking": "Need the weather.", "signature": ""},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_abc", "name": "get_weather", "input": {"city": "Paris", "unit": "celsius"}},
    ]
    assert content_blocks(ParsedMessage("")) == [{"type": "text", "text": ""}]
