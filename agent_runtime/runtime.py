"""Runtime: owns the served engines (and, later, the tool registry and MCP pool); passed, never imported."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent_runtime.agent import DEFAULT_MAX_TOOL_ROUNDS
from agent_runtime.response_store import ResponseStore
from agent_runtime.tool_parsers import ToolParser, detect_parser, get_parser
from engine import AsyncEngine
from tools import ToolRegistry

if TYPE_CHECKING:
    from agent_runtime.embeddings import Embedder
    from agent_runtime.mcp_client import McpClientPool

log = logging.getLogger(__name__)


class UnknownModelError(LookupError):
    """A request named a model this runtime does not serve."""


@dataclass(frozen=True)
class ServerSettings:
    """HTTP-side options, validated by the CLI."""

    api_key: str | None = None
    max_waiting: int = 256  # requests queued beyond the engine's running slots before 429
    keepalive_s: float = 10.0
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 50 * 2**20
    max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS  # agent-loop rounds with server-side tools, per request
    host: str = "127.0.0.1"  # the bound address: a loopback bind makes /mcp check the Host header
    mcp_http: bool = True  # serve the MCP server at /mcp of the HTTP app (off: --no-mcp, or --mcp-port)
    mcp_api_key: str | None = None  # bearer token of /mcp; None: the api_key
    mcp_reexport: bool = False  # the MCP server offers the registry's tools too (an aggregating gateway)


@dataclass
class Runtime:
    """The served models by id (the first is the default) and the server settings."""

    engines: dict[str, AsyncEngine]
    settings: ServerSettings = field(default_factory=ServerSettings)
    embedder: Embedder | None = None  # serves /v1/embeddings, on the default engine's thread
    ready: bool = True
    in_flight: dict[str, int] = field(default_factory=dict)
    responses: ResponseStore = field(default_factory=ResponseStore)  # the Responses API's stored ones
    tool_parsers: dict[str, str] = field(default_factory=dict)  # model id -> parser name (else detected)
    registry: ToolRegistry = field(default_factory=ToolRegistry)  # server-side tools (MCP, web search)
    mcp_pool: McpClientPool | None = None  # started and stopped with the app (create_app's lifespan)

    def engine(self, model: str | None) -> tuple[str, AsyncEngine]:
        """The engine a request's `model` names; the default when it names none."""
        if not model:
            model = next(iter(self.engines))
        engine = self.engines.get(model)
        if engine is None:
            raise UnknownModelError(f"the model {model!r} does not exist; served: {', '.join(self.engines)}")
        return model, engine

    def tool_parser(self, model: str) -> ToolParser:
        """The tool-call parser of a served model: the configured one, else detected from its template."""
        name = self.tool_parsers.get(model)
        if name:
            return get_parser(name)
        engine = self.engines[model]
        return detect_parser(engine.tokenizer.chat_template, getattr(engine.loaded.config, "model_type", None))

    def model_ids(self) -> list[str]:
        """Every model id served: the engines', then the embedding model's."""
        return [*self.engines, *([self.embedder.id] if self.embedder else [])]

    def capacity_left(self, model: str) -> bool:
        """False when this model's running slots and waiting queue are full."""
        engine = self.engines[model]
        limit = engine.config.max_num_seqs * engine.config.data_parallel_size + self.settings.max_waiting
        return self.in_flight.get(model, 0) < limit

    def shutdown(self) -> None:
        for engine in self.engines.values():
            engine.shutdown()
        log.info("runtime shut down")
