"""What the MCP server says about its models: the `list_models` tool and the `model://{id}` resources."""

from __future__ import annotations

import json

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.server.mcpserver.resources import FunctionResource
from pydantic import BaseModel, Field

from agent_runtime.runtime import Runtime
from engine import AsyncEngine

_CONFIG_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "intermediate_size", "vocab_size", "max_position_embeddings", "sliding_window",
                  "tie_word_embeddings")


class ModelInfo(BaseModel):
    id: str
    kind: str = Field(description="generation (chat/complete) or embedding (embed)")
    context_length: int | None = Field(description="most tokens of prompt + output (generation models)")
    dtype: str | None
    device: str
    running: int = Field(0, description="requests generating now")
    waiting: int = Field(0, description="requests queued")
    kv_blocks_used: int = Field(0, description="KV-cache blocks held by running requests")
    kv_blocks_total: int = 0


class ModelList(BaseModel):
    models: list[ModelInfo]


def model_list(runtime: Runtime) -> ModelList:
    """Every served model (the first is the default), then the embedding model, with live engine counters."""
    models = []
    for model_id, engine in runtime.engines.items():
        stats = engine.stats()
        models.append(ModelInfo(
            id=model_id, kind="generation", context_length=engine.core.max_model_len,
            dtype=_dtype(engine), device=str(engine.loaded.device), running=int(stats["running"]),
            waiting=int(stats["waiting"]), kv_blocks_used=int(stats["kv_blocks_used"]),
            kv_blocks_total=int(stats["kv_blocks_total"])))
    if runtime.embedder is not None:
        device = str(runtime.embedder.model.device)
        models.append(ModelInfo(id=runtime.embedder.id, kind="embedding",
                                context_length=runtime.embedder.max_tokens, dtype=None, device=device))
    return ModelList(models=models)


def model_card(runtime: Runtime, model_id: str) -> dict:
    """The `model://{id}` document: where the model came from, its shape, limits and chat template."""
    engine = runtime.engines.get(model_id)
    if engine is None:
        raise ResourceError(f"no model {model_id!r}; served: {', '.join(runtime.engines)}")
    loaded, config = engine.loaded, engine.loaded.config
    return {
        "id": model_id,
        "source": {"kind": loaded.source.kind, "path": str(loaded.source.path), "name": loaded.source.name},
        "architecture": (getattr(config, "architectures", None) or [None])[0],
        "model_type": getattr(config, "model_type", None),
        "native": loaded.native,
        "dtype": _dtype(engine),
        "device": str(loaded.device),
        "context_length": engine.core.max_model_len,
        "config": {name: value for name in _CONFIG_FIELDS
                   if (value := getattr(config, name, None)) is not None},
        "tool_parser": runtime.tool_parser(model_id).name,
        "chat_template": engine.tokenizer.chat_template,
        "engine": {"max_num_seqs": engine.config.max_num_seqs, "block_size": engine.config.block_size,
                   "enable_prefix_caching": engine.config.enable_prefix_caching},
    }


def register_models(server: MCPServer, runtime: Runtime) -> None:
    """The `list_models` tool, one listed resource per served model, and the `model://{id}` template."""

    @server.tool(description="List the served models: id, kind (generation or embedding), context length, "
                             "dtype, device, and the requests each is running now. The first is the default.")
    def list_models() -> ModelList:
        return model_list(runtime)

    def read(model_id: str) -> str:
        return json.dumps(model_card(runtime, model_id), indent=1, ensure_ascii=False)

    for model_id in runtime.engines:
        server.add_resource(FunctionResource.from_function(
            lambda model_id=model_id: read(model_id), uri=f"model://{model_id}", name=model_id,
            description=f"{model_id}: configuration summary, context length and chat template (JSON)",
            mime_type="application/json"))

    @server.resource("model://{id}", name="model", mime_type="application/json",
                     description="A served model's configuration summary, context length and chat template "
                                 "(JSON)")
    def model_resource(id: str) -> str:  # the parameter is named after the template variable
        return read(id)


def _dtype(engine: AsyncEngine) -> str:
    return str(engine.loaded.dtype).removeprefix("torch.")
