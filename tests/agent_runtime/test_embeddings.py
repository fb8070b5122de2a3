"""POST /v1/embeddings over real HTTP with the official openai client: floats, base64, similarity, errors."""

from __future__ import annotations

import base64
import threading

import httpx
import numpy as np
import openai
import pytest

from agent_runtime.cli import build_parser
from agent_runtime.embeddings import Embedder, EmbeddingModelError
from agent_runtime.runtime import Runtime
from agent_runtime.serve_command import build_runtime
from tests.agent_runtime.conftest import serve
from tests.engine.tiny_models import save_tiny_model

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture(scope="module")
def url(smollm_engine, embedder):
    with serve(Runtime({"SmolLM2-135M-Instruct": smollm_engine}, embedder=embedder)) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)


def test_default_embedder_is_the_packaged_minilm(embedder):
    assert (embedder.id, embedder.dimensions, embedder.max_tokens) == (MODEL, 384, 256)


def test_single_string_gives_one_unit_vector_and_usage(client):
    reply = client.embeddings.create(model=MODEL, input="Hello world", encoding_format="float")
    assert reply.model == MODEL and len(reply.data) == 1 and reply.data[0].index == 0
    vector = np.array(reply.data[0].embedding)
    assert vector.shape == (384,) and abs(np.linalg.norm(vector) - 1) < 1e-4
    assert reply.usage.prompt_tokens == reply.usage.total_tokens > 0


def test_list_input_keeps_order_and_model_may_be_omitted(url):
    texts = [f"sentence number {i}" for i in range(40)]  # more than one engine-thread batch
    reply = httpx.post(f"{url}/v1/embeddings", json={"input": texts}, timeout=60).json()
    assert [d["index"] for d in reply["data"]] == list(range(40))
    single = httpx.post(f"{url}/v1/embeddings", json={"input": texts[37]}, timeout=60).json()
    assert np.allclose(reply["data"][37]["embedding"], single["data"][0]["embedding"], atol=1e-5)


def test_base64_decodes_to_the_float_vectors(client, url):
    texts = ["The cat sits on the mat.", "A dog runs in the park."]
    floats = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    raw = httpx.post(f"{url}/v1/embeddings", json={"input": texts, "encoding_format": "base64"}).json()
    for f, b in zip(floats.data, raw["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        assert np.array_equal(decoded, np.array(f.embedding, dtype=np.float32))
    # The SDK asks for base64 by default and decodes it itself.
    default = client.embeddings.create(model=MODEL, input=texts)
    assert np.allclose(default.data[1].embedding, floats.data[1].embedding, atol=1e-6)


def test_paraphrases_are_closer_than_unrelated_sentences(client):
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell today."]
    a, b, c = (np.array(d.embedding) for d in
               client.embeddings.create(model=MODEL, input=texts, encoding_format="float").data)
    assert a @ b > a @ c + 0.4


def test_token_id_input_is_decoded_with_the_model_tokenizer(client, embedder):
    text = "Someone plays the guitar."
    ids = embedder.tokenizer.encode(text, add_special_tokens=False)
    by_ids = client.embeddings.create(model=MODEL, input=[ids], encoding_format="float")
    by_text = client.embeddings.create(model=MODEL, input=text, encoding_format="float")
    assert np.allclose(by_ids.data[0].embedding, by_text.data[0].embedding, atol=1e-5)


def test_embedding_runs_on_the_engine_thread(client, embedder, monkeypatch):
    # A second thread running torch would start a second OpenMP pool and slow every engine step.
    threads = []
    original = embedder.embed

    def spy(texts):
        threads.append(threading.current_thread().name)
        return original(texts)

    monkeypatch.setattr(embedder, "embed", spy)
    client.embeddings.create(model=MODEL, input=["one", "two"])
    assert threads == ["engine-core"]


def test_unknown_model_is_404_with_an_openai_error(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert err.value.body["code"] == "model_not_found" and "text-embedding-3-small" in err.value.body["message"]


@pytest.mark.parametrize("body, needle", [
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
    ({"input": ["ok", ""]}, "input[1]"),
    ({"input": ["x"] * 2049}, "2048"),
    ({"input": [[1, 99999999]]}, "99999999"),
    ({"input": "hi", "dimensions": 128}, "384"),
    ({"input": "hi", "encoding_format": "int8"}, "encoding_format"),
])
def test_bad_requests_are_400_naming_the_problem(url, body, needle):
    reply = httpx.post(f"{url}/v1/embeddings", json=body)
    assert reply.status_code == 400
    assert needle in reply.json()["error"]["message"]


def test_empty_input_via_the_sdk_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=MODEL, input=[])
    assert err.value.body["param"] == "input"


def test_models_list_the_embedding_model(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["SmolLM2-135M-Instruct", MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_without_an_embedder_the_route_says_so(smollm_engine):
    with serve(Runtime({"SmolLM2-135M-Instruct": smollm_engine})) as base:
        reply = httpx.post(f"{base}/v1/embeddings", json={"input": "hi"})
    assert reply.status_code == 404 and "no embedding model" in reply.json()["error"]["message"]


def test_missing_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(EmbeddingModelError, match="could not load the embedding model"):
        Embedder(str(tmp_path / "nope" / "model"))


def test_serve_builds_the_packaged_embedder_unless_told_not_to(tmp_path):
    model = str(save_tiny_model("llama", tmp_path / "tiny"))
    parser = build_parser()
    for flags, expected in (([], ["tiny", MODEL]), (["--no-embeddings"], ["tiny"])):
        runtime = build_runtime(parser.parse_args(["serve", "--model", model, *flags]))
        try:
            assert runtime.model_ids() == expected
        finally:
            runtime.shutdown()
