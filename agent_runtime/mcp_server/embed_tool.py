"""The `embed` tool: texts to unit-length vectors with the runtime's embedding model."""

from __future__ import annotations

from typing import Annotated

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from agent_runtime.embeddings import MAX_INPUTS, embed_batched
from agent_runtime.runtime import Runtime


class Embeddings(BaseModel):
    model: str
    dimensions: int
    vectors: list[list[float]] = Field(description="one unit-length vector per input, in order")
    prompt_tokens: int


def register_embed(server: MCPServer, runtime: Runtime) -> None:
    @server.tool(description=(
        "Embed text as unit-length vectors (cosine similarity = dot product) with the server's embedding "
        "model (all-MiniLM-L6-v2 by default). `input` is one string or a list of strings."))
    async def embed(
        input: Annotated[str | list[str], Field(description="a text, or a list of texts")],
    ) -> Embeddings:
        embedder = runtime.embedder
        if embedder is None:
            raise ToolError("this server has no embedding model: start it without --no-embeddings "
                            "(or with --embedding-model DIR|ORG/NAME)")
        texts = [input] if isinstance(input, str) else list(input)
        if not texts or not all(texts):
            raise ToolError("input must be a non-empty string or a list of non-empty strings")
        if len(texts) > MAX_INPUTS:
            raise ToolError(f"input has {len(texts)} texts; at most {MAX_INPUTS} are allowed per call")
        _, engine = runtime.engine(None)  # torch work runs on the engine thread (see Embedder)
        vectors, tokens = await embed_batched(embedder, engine.run_on_engine_thread, texts)
        return Embeddings(model=embedder.id, dimensions=embedder.dimensions, vectors=vectors,
                          prompt_tokens=tokens)
