"""POST /v1/messages through the official anthropic client against a real server over SmolLM2."""

from __future__ import annotations

import time

import anthropic
import httpx
import pytest

from agent_runtime.openai.messages import MessagesRequest, template_messages, template_tools
from agent_runtime.runtime import Runtime, ServerSettings
from tests.agent_runtime.conftest import serve

MODEL = "SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# This SDK version dropped `temperature` from create()'s arguments; the API still takes it.
GREEDY = {"extra_body": {"temperature": 0}}


@pytest.fixture(scope="module")
def client(server_url):
    with anthropic.Anthropic(base_url=server_url, api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def greedy(client):
    return client.messages.create(model=MODEL, max_tokens=16, **GREEDY, messages=QUESTION)


def test_greedy_answer_mentions_paris_with_usage(greedy):
    assert greedy.id.startswith("msg_")
    assert greedy.role == "assistant" and greedy.model == MODEL
    assert [block.type for block in greedy.content] == ["text"]
    assert "Paris" in greedy.content[0].text
    assert greedy.stop_reason in ("end_turn", "max_tokens")
    assert greedy.usage.input_tokens > 5
    assert 0 < greedy.usage.output_tokens <= 16


def test_stream_gives_the_non_stream_text_and_a_final_message(client, greedy):
    with client.messages.stream(model=MODEL, max_tokens=16, **GREEDY, messages=QUESTION) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == greedy.content[0].text
    assert final.content[0].text == text
    assert final.stop_reason == greedy.stop_reason
    assert final.usage.input_tokens == greedy.usage.input_tokens
    assert final.usage.output_tokens == greedy.usage.output_tokens


def test_stream_events_use_anthropic_framing(server_url):
    body = {"model": MODEL, "max_tokens": 3, "temperature": 0, "messages": QUESTION, "stream": True}
    with httpx.stream("POST", f"{server_url}/v1/messages", json=body, timeout=60) as response:
        assert response.status_code == 200
        raw = response.read().decode()
    events = [block.splitlines()[0].removeprefix("event: ") for block in raw.split("\n\n") if block.strip()]
    assert events[:3] == ["message_start", "content_block_start", "ping"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(events[3:-3]) == {"content_block_delta"}


def test_stop_sequence_cuts_the_text_and_is_reported(client, greedy):
    answer = greedy.content[0].text
    message = client.messages.create(model=MODEL, max_tokens=16, **GREEDY, messages=QUESTION,
                                     stop_sequences=["Paris"])
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "Paris"
    assert message.content[0].text == answer[: answer.index("Paris")]


def test_max_tokens_ends_with_stop_reason_max_tokens(client):
    message = client.messages.create(model=MODEL, max_tokens=3, **GREEDY,
                                     messages=[{"role": "user", "content": "Tell me a long story."}])
    assert message.stop_reason == "max_tokens"
    assert message.stop_sequence is None
    assert message.usage.output_tokens == 3


def test_system_prompt_is_accepted_as_string_or_text_blocks(client, greedy):
    system = "Answer in one word."
    as_string = client.messages.create(model=MODEL, max_tokens=4, **GREEDY, system=system, messages=QUESTION)
    as_blocks = client.messages.create(model=MODEL, max_tokens=4, **GREEDY, messages=QUESTION,
                                       system=[{"type": "text", "text": system}])
    assert as_string.content[0].text == as_blocks.content[0].text
    assert as_string.usage.input_tokens == as_blocks.usage.input_tokens != greedy.usage.input_tokens


TOOLS = [{"name": "get_weather", "description": "Current weather of a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}]
TOOL_HISTORY = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1",
         "content": [{"type": "text", "text": "sunny, 24 C"}]},
        {"type": "text", "text": "So?"},
    ]},
]


def test_tool_history_becomes_template_tool_calls_and_tool_messages():
    body = MessagesRequest(model=MODEL, max_tokens=4, system="Be brief.", tools=TOOLS, messages=TOOL_HISTORY)
    assert template_messages(body) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        ]},
        {"role": "tool", "tool_call_id": "toolu_1", "name": "get_weather", "content": "sunny, 24 C"},
        {"role": "user", "content": "So?"},
    ]
    assert template_tools(body) == [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather of a city",
        "parameters": TOOLS[0]["input_schema"]}}]


def test_tool_use_and_tool_result_history_renders(client):
    message = client.messages.create(model=MODEL, max_tokens=4, **GREEDY, tools=TOOLS,
                                     tool_choice={"type": "auto"}, messages=TOOL_HISTORY)
    assert message.content[0].type == "text"
    assert message.usage.input_tokens > 20


def test_unknown_model_is_not_found(client):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-model", max_tokens=4, messages=QUESTION)
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "not_found_error"
    assert "no-such-model" in caught.value.body["error"]["message"]


def test_max_tokens_zero_is_a_bad_request(client):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=MODEL, max_tokens=0, messages=QUESTION)
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in caught.value.body["error"]["message"]


def test_image_block_is_a_bad_request(client):
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    with pytest.raises(anthropic.BadRequestError, match="not supported"):
        client.messages.create(model=MODEL, max_tokens=4, messages=[{"role": "user", "content": [image]}])


def test_closing_a_stream_aborts_the_engine_request(server_url, smollm_engine):
    body = {"model": MODEL, "max_tokens": 2000, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": "Count from one to one thousand in words."}]}
    with httpx.stream("POST", f"{server_url}/v1/messages", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if line == "event: content_block_delta":
                break
    deadline = time.time() + 10
    while smollm_engine.stats()["running"] and time.time() < deadline:
        time.sleep(0.05)
    assert smollm_engine.stats()["running"] == 0


def test_at_capacity_is_a_rate_limit_error(smollm_engine):
    runtime = Runtime({MODEL: smollm_engine}, ServerSettings())
    runtime.in_flight[MODEL] = smollm_engine.config.max_num_seqs + runtime.settings.max_waiting
    with serve(runtime) as base, anthropic.Anthropic(base_url=base, api_key="x", max_retries=0) as c:
        with pytest.raises(anthropic.RateLimitError) as caught:
            c.messages.create(model=MODEL, max_tokens=4, messages=QUESTION)
    assert caught.value.body["error"]["type"] == "rate_limit_error"


def test_api_key_is_checked_with_anthropic_error_bodies(smollm_engine):
    runtime = Runtime({MODEL: smollm_engine}, ServerSettings(api_key="secret"))
    with serve(runtime) as base:
        with anthropic.Anthropic(base_url=base, auth_token="secret", max_retries=0) as c:
            assert c.messages.create(model=MODEL, max_tokens=2, messages=QUESTION).content
        with anthropic.Anthropic(base_url=base, auth_token="wrong", max_retries=0) as c:
            with pytest.raises(anthropic.AuthenticationError) as caught:
                c.messages.create(model=MODEL, max_tokens=2, messages=QUESTION)
    assert caught.value.body["error"]["type"] == "authentication_error"
