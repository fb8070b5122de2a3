"""Property tests from the app's own OpenAPI schema: no body makes the server fail, every 4xx is an OpenAI error."""

from __future__ import annotations

import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

OPERATIONS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 15}
MODEL = "SmolLM2-135M-Instruct"
MAX_TOKENS = 3  # generated bodies may ask for thousands of tokens: keep every generation tiny


@pytest.fixture(scope="module")
def schema(server_url):
    """The served schema, minus the extra fields request models tolerate: examples then spend their
    variety on the fields the server reads instead of on random unknown keys it ignores."""
    raw = httpx.get(f"{server_url}/openapi.json", timeout=30).json()
    for model in raw["components"]["schemas"].values():
        if "properties" in model and model.get("additionalProperties") is True:
            model["additionalProperties"] = False
    return schemathesis.openapi.from_dict(raw)


def tiny_generation(case):
    """Cap the token counts a body asks for (and set them where absent: chat would run to the end of the
    context), and name the served model (a random one only ever gets the same 404)."""
    body = case.body
    if isinstance(body, dict):
        for key in ("max_tokens", "max_completion_tokens"):
            value = body.get(key)
            # pydantic takes 1e9 (a float) for an int field too
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > MAX_TOKENS:
                body[key] = MAX_TOKENS
        if body.get("max_tokens") is None:
            body["max_tokens"] = MAX_TOKENS
        if isinstance(body.get("model"), str):
            body["model"] = MODEL
    return case


def assert_openai_error(body: dict) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str), error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error


def check_response(status: int, content_type: str, text: str, path: str) -> None:
    assert status < 500, f"{path} answered {status}: {text[:500]}"
    if status >= 400:
        assert_openai_error(json.loads(text))
    elif content_type.startswith("text/event-stream"):
        # A 200 stream reports engine failures in-band: none may appear either.
        events = [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]", text[-500:]
        assert all("error" not in json.loads(e) for e in events[:-1]), text[:500]


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda m: m.value)
@pytest.mark.parametrize("path", OPERATIONS)
def test_fuzzed_bodies_never_fail_the_server_and_errors_are_openai_shaped(schema, server_url, path, mode):
    operation = schema[path]["POST"]

    @settings(max_examples=EXAMPLES[mode], deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode).map(tiny_generation))
    def run(case):
        response = case.call(base_url=server_url, timeout=120)
        content_type = (response.headers.get("content-type") or [""])[0]
        check_response(response.status_code, content_type, response.text, path)

    run()


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"abc": 1}}),
    ("/v1/completions", {"prompt": "hi", "logit_bias": {"1.5": 1}}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "seed": 2**70}),
    ("/v1/completions", {"prompt": "hi", "top_k": 2**70}),
    ("/v1/chat/completions", {"messages": [{"role": "assistant", "tool_calls": [{"function": "x"}]}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"tools": 1}}),
])
def test_bodies_that_once_failed_the_server_are_400(server_url, path, body):
    response = httpx.post(f"{server_url}{path}", json={"max_tokens": 2, **body}, timeout=60)
    assert response.status_code == 400, response.text
    assert_openai_error(response.json())


def test_a_seed_at_the_int64_limit_still_serves_every_choice(server_url):
    body = {"messages": [{"role": "user", "content": "hi"}], "seed": 2**63 - 1, "n": 2, "max_tokens": 2}
    response = httpx.post(f"{server_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == 2
