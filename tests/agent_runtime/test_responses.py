"""The Responses API through the official `openai` client over real HTTP, and its ResponseStore."""

from __future__ import annotations

import time

import openai
import pytest

from agent_runtime.response_store import ResponseStore, StoredResponse

MODEL = "SmolLM2-135M-Instruct"
FRANCE = "What is the capital of France?"
LONG_INSTRUCTIONS = " ".join(["You are a terse assistant who answers questions about geography."] * 5)


@pytest.fixture(scope="module")
def client(server_url):
    with openai.OpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def create(client: openai.OpenAI, input=FRANCE, **kwargs):
    kwargs = {"temperature": 0, "max_output_tokens": 4, **kwargs}
    return client.responses.create(model=MODEL, input=input, **kwargs)


def test_create_answers_with_a_message_and_usage(client):
    response = create(client, metadata={"case": "paris"}, max_output_tokens=16)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed" and response.model == MODEL
    assert "Paris" in response.output_text
    message = response.output[0]
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content[0].type == "output_text"
    usage = response.usage
    assert usage.input_tokens > 0 and 0 < usage.output_tokens <= 16
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert response.metadata == {"case": "paris"} and response.temperature == 0


def test_previous_response_id_prepends_the_earlier_turn(client):
    first = create(client, "My name is Ada. Reply OK.")
    follow_up = create(client, "What is my name?", previous_response_id=first.id, max_output_tokens=1)
    fresh = create(client, "What is my name?", max_output_tokens=1)
    assert follow_up.previous_response_id == first.id
    assert follow_up.usage.input_tokens >= fresh.usage.input_tokens + first.usage.output_tokens


def test_instructions_reach_the_prompt_and_are_not_inherited(client):
    plain = create(client, max_output_tokens=1)
    instructed = create(client, instructions=LONG_INSTRUCTIONS, max_output_tokens=1)
    assert instructed.instructions == LONG_INSTRUCTIONS
    assert instructed.usage.input_tokens > plain.usage.input_tokens + 40
    follow_up = create(client, "And of Italy?", previous_response_id=instructed.id, max_output_tokens=1)
    assert follow_up.instructions is None
    # Inherited instructions would make the follow-up's prompt hold the whole first prompt and more.
    assert follow_up.usage.input_tokens < instructed.usage.input_tokens + instructed.usage.output_tokens


def test_input_items_with_function_calls_and_tools(client):
    tools = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "What is the weather in Paris?"}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "Sunny, 21 C"},
    ]
    response = create(client, items, tools=tools)
    assert response.output_text and response.usage.input_tokens > 0
    assert response.tools[0].name == "get_weather" and response.tool_choice == "auto"


def test_unsupported_tools_and_content_are_bad_requests(client):
    with pytest.raises(openai.BadRequestError, match="web_search"):
        create(client, tools=[{"type": "web_search"}])
    image = [{"role": "user", "content": [{"type": "input_image", "image_url": "https://example.com/a.png"}]}]
    with pytest.raises(openai.BadRequestError, match="input_image"):
        create(client, image)


def test_stream_events_arrive_in_order_and_match_the_whole_response(client):
    whole = create(client, max_output_tokens=12)
    events = list(create(client, stream=True, max_output_tokens=12))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == whole.output_text == events[-4].text
    final = events[-1].response
    assert final.status == "completed" and final.output_text == whole.output_text
    assert client.responses.retrieve(final.id).output_text == whole.output_text


def test_retrieve_then_delete(client):
    response = create(client)
    assert client.responses.retrieve(response.id).output_text == response.output_text
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response.id)


def test_unknown_previous_response_id_is_not_found(client):
    with pytest.raises(openai.NotFoundError, match="resp_missing"):
        create(client, previous_response_id="resp_missing")


def test_store_false_responses_cannot_be_retrieved_or_continued(client):
    response = create(client, store=False)
    assert response.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        create(client, "Why?", previous_response_id=response.id)


def test_max_output_tokens_cut_makes_it_incomplete(client):
    response = create(client, "Write a long story about a dragon.", max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3
    assert response.output[0].status == "incomplete"


def test_cancel_stops_a_streaming_response(client):
    stream = create(client, "Count from 1 to 1000.", stream=True, max_output_tokens=1500,
                    extra_body={"ignore_eos": True})
    events = iter(stream)
    response_id = next(events).response.id
    assert client.responses.retrieve(response_id).status == "in_progress"
    next(e for e in events if e.type == "response.output_text.delta")
    cancelled = client.responses.cancel(response_id)
    assert cancelled.status == "cancelled" and cancelled.usage.output_tokens < 1500
    rest = list(events)
    assert rest[-1].type == "response.incomplete" and rest[-1].response.status == "cancelled"
    assert client.responses.retrieve(response_id).status == "cancelled"
    assert client.responses.cancel(response_id).status == "cancelled"


def test_a_stream_whose_client_leaves_ends_cancelled(client):
    stream = create(client, "Count from 1 to 1000.", stream=True, max_output_tokens=1500,
                    extra_body={"ignore_eos": True})
    response_id = next(iter(stream)).response.id
    stream.close()
    deadline = time.time() + 20
    while client.responses.retrieve(response_id).status == "in_progress" and time.time() < deadline:
        time.sleep(0.05)
    left = client.responses.retrieve(response_id)
    assert left.status == "cancelled" and left.usage.output_tokens < 1500


def test_cancelling_a_finished_response_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError, match="only a response still being generated"):
        client.responses.cancel(create(client).id)


def test_store_evicts_the_least_recently_used():
    store = ResponseStore(max_entries=2)
    for name in ("a", "b"):
        store.put(StoredResponse({"id": name, "output": []}, []))
    store.get("a")
    store.put(StoredResponse({"id": "c", "output": []}, []))
    assert store.get("b") is None and store.get("a") is not None and len(store) == 2
    assert store.delete("a") and not store.delete("a")
