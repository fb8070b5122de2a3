"""POST /v1/embeddings: texts (or token ids) to vectors of the served embedding model, as floats or base64."""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from agent_runtime.embeddings import MAX_INPUTS, Embedder, embed_batched
from agent_runtime.openai.errors import ApiError
from agent_runtime.runtime import Runtime

router = APIRouter()



class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # accept and ignore fields we do not use, as the other routes do

    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


@router.post("/v1/embeddings")
async def create_embeddings(body: EmbeddingRequest, request: Request):
    runtime: Runtime = request.app.state.runtime
    embedder = _embedder(runtime, body.model)
    if body.dimensions is not None and body.dimensions != embedder.dimensions:
        raise ApiError(400, f"dimensions={body.dimensions} is not available: {embedder.id} makes vectors of "
                            f"{embedder.dimensions} dimensions only (it was not trained to be shortened)",
                       param="dimensions", code="invalid_value")
    texts = _texts(body.input, embedder)
    _, engine = runtime.engine(None)
    vectors, tokens = await embed_batched(embedder, engine.run_on_engine_thread, texts)
    data = [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": embedder.id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _embedder(runtime: Runtime, model: str | None) -> Embedder:
    embedder = runtime.embedder
    if embedder is None:
        raise ApiError(404, "this server has no embedding model: start it with --embedding-model "
                            "(or without --no-embeddings)", param="model", code="model_not_found")
    if model and model != embedder.id:
        raise ApiError(404, f"the embedding model {model!r} does not exist; served: {embedder.id}",
                       param="model", code="model_not_found")
    return embedder


def _texts(value: str | list[str] | list[int] | list[list[int]], embedder: Embedder) -> list[str]:
    """The request's input as a list of non-empty texts; token ids are decoded with the model's tokenizer."""
    if not value:
        raise ApiError(400, "input must not be empty: send a string or a list of strings", param="input",
                       code="invalid_value")
    items = [value] if isinstance(value, str) or isinstance(value[0], int) else value
    if len(items) > MAX_INPUTS:
        raise ApiError(400, f"input has {len(items)} items; at most {MAX_INPUTS} are allowed per request",
                       param="input", code="invalid_value")
    texts = []
    for i, item in enumerate(items):
        if not item:
            raise ApiError(400, f"input[{i}] is empty; every input must have text or tokens", param="input",
                           code="invalid_value")
        if isinstance(item, list):
            bad = next((t for t in item if not 0 <= t < embedder.vocab_size), None)
            if bad is not None:
                raise ApiError(400, f"input[{i}] has token id {bad}, outside the vocabulary of {embedder.id} "
                                    f"(0..{embedder.vocab_size - 1})", param="input", code="invalid_value")
            item = embedder.decode(item)
        texts.append(item)
    return texts


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "float":
        return vector
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
