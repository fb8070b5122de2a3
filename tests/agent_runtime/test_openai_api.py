"""The OpenAI-compatible API through the official `openai` client (sync and async) over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from conftest import serve

from agent_runtime.runtime import Runtime, ServerSettings

MODEL = "SmolLM2-135M-Instruct"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(server_url):
    with openai.OpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def chat(client: openai.OpenAI, messages=FRANCE, **kwargs):
    kwargs = {"temperature": 0, "max_tokens": 16, **kwargs}
    return client.chat.completions.create(model=MODEL, messages=messages, **kwargs)


def streamed_text(stream) -> dict[int, str]:
    texts: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    return texts


# --- chat -------------------------------------------------------------------------------------


def test_greedy_chat_answers_paris(client):
    response = chat(client)
    assert "Paris" in response.choices[0].message.content
    assert response.choices[0].finish_reason == "stop"
    assert response.model == MODEL and response.object == "chat.completion"
    assert response.usage.completion_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


@pytest.mark.parametrize("prompt", ["What is the capital of France?", "Name three colours."])
def test_streamed_text_equals_non_streamed_text_at_temperature_0(client, prompt):
    messages = [{"role": "user", "content": prompt}]
    whole = chat(client, messages, max_tokens=16).choices[0].message.content
    assert streamed_text(chat(client, messages, max_tokens=16, stream=True)) == {0: whole}


def test_stream_include_usage_ends_with_a_usage_chunk(client):
    chunks = list(chat(client, stream=True, stream_options={"include_usage": True}))
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert last.usage.completion_tokens >= len(content_chunks) > 0
    assert last.usage.prompt_tokens > 0


def test_n_2_with_a_seed_gives_two_choices_reproducibly(client):
    def run():
        response = chat(client, n=2, seed=7, temperature=1.0, max_tokens=8)
        return {c.index: c.message.content for c in response.choices}

    first = run()
    assert sorted(first) == [0, 1]
    assert run() == first
    streamed = streamed_text(chat(client, n=2, seed=7, temperature=1.0, max_tokens=8, stream=True))
    assert streamed == first


def test_seed_reproduces_sampling_at_temperature_1(client):
    texts = [chat(client, seed=1234, temperature=1.0, max_tokens=8).choices[0].message.content for _ in range(2)]
    assert texts[0] == texts[1] and texts[0]


def test_logprobs_with_top_logprobs_3(client):
    response = chat(client, [{"role": "user", "content": "Hi"}], max_tokens=6, logprobs=True, top_logprobs=3)
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    for item in content:
        tops = item.top_logprobs
        assert len(tops) == 3
        values = [t.logprob for t in tops]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        # Greedy: the chosen token is the most likely one.
        assert item.token == tops[0].token and item.logprob == pytest.approx(tops[0].logprob)
        assert bytes(item.bytes).decode("utf-8") == item.token
    assert "".join(item.token for item in content) == response.choices[0].message.content


def test_a_stop_string_cuts_the_text_with_finish_reason_stop(client):
    full = chat(client).choices[0].message.content
    assert "Paris" in full
    stopped = chat(client, stop=["Paris"]).choices[0]
    assert stopped.finish_reason == "stop"
    assert stopped.message.content == full.split("Paris")[0]


def test_max_tokens_ends_with_finish_reason_length(client):
    response = chat(client, max_tokens=3)
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 3


def test_content_parts_and_developer_role_render_like_strings_and_system(client):
    plain = chat(client, [{"role": "system", "content": "You are a geography teacher."}, *FRANCE])
    parts = chat(client, [
        {"role": "developer", "content": [{"type": "text", "text": "You are a geography teacher."}]},
        {"role": "user", "content": [{"type": "text", "text": "What is the capital "},
                                     {"type": "text", "text": "of France?"}]},
    ])
    assert parts.usage.prompt_tokens == plain.usage.prompt_tokens
    assert parts.choices[0].message.content == plain.choices[0].message.content


def test_assistant_tool_calls_and_tool_results_in_the_history_render(client):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"},
    ]
    response = chat(client, messages, tools=tools, max_tokens=8)
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.usage.prompt_tokens > chat(client, messages[:1], max_tokens=1).usage.prompt_tokens


def test_async_client_runs_concurrent_streams_and_whole_requests(server_url, client):
    expected = chat(client).choices[0].message.content

    async def main():
        async with openai.AsyncOpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0) as aclient:
            async def whole():
                response = await aclient.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0,
                                                                 max_tokens=16)
                return response.choices[0].message.content

            async def streamed():
                stream = await aclient.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0,
                                                               max_tokens=16, stream=True)
                return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

            models = await aclient.models.list()
            return [m.id for m in models.data], await asyncio.gather(whole(), streamed(), whole(), streamed())

    model_ids, texts = asyncio.run(main())
    assert model_ids == [MODEL]
    assert texts == [expected] * 4


# --- completions ------------------------------------------------------------------------------


def complete(client: openai.OpenAI, prompt, **kwargs):
    kwargs = {"temperature": 0, "max_tokens": 8, **kwargs}
    return client.completions.create(model=MODEL, prompt=prompt, **kwargs)


def test_completion_of_a_string_a_list_and_token_ids_agree(client, smollm_engine):
    prompt = "The capital of France is"
    single = complete(client, prompt)
    text = single.choices[0].text
    assert "Paris" in text and single.object == "text_completion"
    listed = complete(client, [prompt, "One, two, three,"])
    assert [c.index for c in listed.choices] == [0, 1]
    assert listed.choices[0].text == text
    ids = smollm_engine.tokenizer.encode(prompt)
    by_ids = complete(client, ids)
    assert by_ids.choices[0].text == text
    assert by_ids.usage.prompt_tokens == len(ids)


def test_completion_echo_and_logprobs(client):
    prompt = "The capital of France is"
    response = complete(client, prompt, echo=True, logprobs=2, max_tokens=4)
    choice = response.choices[0]
    assert choice.text.startswith(prompt) and len(choice.text) > len(prompt)
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 4
    assert lp.text_offset[0] == len(prompt)
    assert lp.text_offset == sorted(lp.text_offset)
    assert prompt + "".join(lp.tokens) == choice.text
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert 1 <= len(top) <= 2
        assert top[token] == pytest.approx(logprob) == pytest.approx(max(top.values()))


def test_completion_suffix_is_refused_with_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        complete(client, "def f():", suffix="    return 1")
    assert info.value.code == "unsupported_parameter"
    assert info.value.param == "suffix"


# --- models and errors ------------------------------------------------------------------------


def test_models_list_and_retrieve(client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-17", messages=FRANCE, max_tokens=2)
    assert info.value.code == "model_not_found"
    assert "gpt-17" in info.value.message


def test_prompt_over_the_context_window_is_400_context_length_exceeded(client):
    with pytest.raises(openai.BadRequestError) as info:
        complete(client, "hello " * 9000, max_tokens=2)
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, [{"role": "user", "content": "hello " * 9000}], max_tokens=2)
    assert info.value.code == "context_length_exceeded"


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_client_disconnect_aborts_the_stream_and_frees_its_slot_and_kv_blocks(smollm_engine):
    runtime = Runtime({MODEL: smollm_engine})
    aborted_before = smollm_engine.stats()["requests_aborted"]
    body = {"model": MODEL, "messages": FRANCE, "max_tokens": 2000, "ignore_eos": True, "stream": True}
    with serve(runtime) as base, httpx.Client(timeout=60) as http:
        with http.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            events = 0
            for line in response.iter_lines():
                events += line.startswith("data: ")
                if events >= 3:
                    break
            assert smollm_engine.stats()["running"] == 1, smollm_engine.stats()
        # Leaving the block closed the connection mid-stream.
        deadline = time.time() + 30
        while time.time() < deadline:
            stats = smollm_engine.stats()
            if stats["requests_aborted"] > aborted_before and stats["running"] == 0 and stats["kv_blocks_used"] == 0:
                break
            time.sleep(0.05)
        assert stats["requests_aborted"] == aborted_before + 1, stats
        assert stats["running"] == 0 and stats["waiting"] == 0 and stats["kv_blocks_used"] == 0, stats
        assert runtime.in_flight == {MODEL: 0}
        metrics = http.get(f"{base}/metrics").text
        assert f'agent_runtime_requests_aborted_total{{model="{MODEL}"}} {float(aborted_before + 1)}' in metrics


# --- server settings: auth, body limit, capacity ----------------------------------------------


def test_api_key_is_required_on_v1_but_not_on_health(smollm_engine):
    runtime = Runtime({MODEL: smollm_engine}, ServerSettings(api_key="sekret"))
    with serve(runtime) as base:
        error = assert_openai_error(httpx.get(f"{base}/v1/models"), 401)
        assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
        with openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0) as wrong:
            with pytest.raises(openai.AuthenticationError):
                wrong.models.list()
            with pytest.raises(openai.AuthenticationError):
                chat(wrong, max_tokens=2)
        with openai.OpenAI(base_url=f"{base}/v1", api_key="sekret", max_retries=0) as right:
            assert [m.id for m in right.models.list().data] == [MODEL]
            assert chat(right, max_tokens=2).choices[0].finish_reason == "length"
        assert httpx.get(f"{base}/health").status_code == 200


def test_a_body_over_the_limit_is_413_with_an_openai_error(smollm_engine):
    runtime = Runtime({MODEL: smollm_engine}, ServerSettings(max_body_bytes=2000))
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 5000}], "max_tokens": 2}
    small = {"model": MODEL, "messages": FRANCE, "max_tokens": 2}
    with serve(runtime) as base:
        error = assert_openai_error(httpx.post(f"{base}/v1/chat/completions", json=big, timeout=60), 413)
        assert error["code"] == "body_too_large" and "2000" in error["message"]
        # Without Content-Length (chunked upload) the limit holds too, counted as the body arrives.
        chunked = httpx.post(f"{base}/v1/chat/completions", content=iter([json.dumps(big).encode()]),
                             headers={"content-type": "application/json"}, timeout=60)
        assert "content-length" not in chunked.request.headers
        assert "2000" in assert_openai_error(chunked, 413)["message"]
        assert httpx.post(f"{base}/v1/chat/completions", json=small, timeout=60).status_code == 200


def test_over_capacity_is_429_with_retry_after(smollm_engine):
    full = smollm_engine.config.max_num_seqs
    runtime = Runtime({MODEL: smollm_engine}, ServerSettings(max_waiting=0), in_flight={MODEL: full})
    with serve(runtime) as base:
        with openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0) as c:
            with pytest.raises(openai.RateLimitError) as info:
                chat(c, max_tokens=2)
        assert info.value.response.headers["retry-after"] == "1"
        assert info.value.code == "over_capacity"
        assert runtime.in_flight == {MODEL: full}
        runtime.in_flight[MODEL] = full - 1
        ok = httpx.post(f"{base}/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2})
        assert ok.status_code == 200
        assert runtime.in_flight == {MODEL: full - 1}
