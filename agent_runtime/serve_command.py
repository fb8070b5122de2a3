"""`agent-runtime serve`: load the models, then run the HTTP app (OpenAI API, MCP at /mcp) under uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
from pathlib import Path

import uvicorn

from agent_runtime.cli import engine_options
from agent_runtime.config import load_mcp_config, resolve_mcp_config_path
from agent_runtime.mcp_client import McpClientPool
from agent_runtime.mcp_server import build_mcp_server, mcp_http_app
from agent_runtime.openai import create_app
from agent_runtime.runtime import Runtime, ServerSettings
from agent_runtime.tool_parsers import parser_names
from engine import AsyncEngine, EngineConfig
from engine.data_parallel import create_serving_engine
from tools import SearchOptions, register_search_tools

log = logging.getLogger(__name__)


def model_specs(values: list[str] | None) -> list[tuple[str | None, str | None]]:
    """`--model` values as (id or None, source); `id=source` names a model explicitly."""
    specs = []
    for value in values or [None]:
        if value and "=" in value and not os.path.exists(value):
            name, _, source = value.partition("=")
            specs.append((name, source))
        else:
            specs.append((None, value))
    return specs


def models_config(path: str) -> list[tuple[str, str | None, dict]]:
    """A --models-config file: {"id": {"model": SOURCE, "tool_parser": NAME, <EngineConfig option>: value}}."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read models config {path}: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise ValueError(f"models config {path}: expected a non-empty JSON object of model id -> options")
    allowed = {f.name for f in dataclasses.fields(EngineConfig)} | {"tool_parser"}
    entries = []
    for model_id, options in data.items():
        if not isinstance(options, dict):
            raise ValueError(f"models config {path}: model {model_id!r} must map to an object of options")
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ValueError(f"models config {path}: model {model_id!r} has unknown option(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(sorted(allowed))}")
        options = dict(options)
        parser = options.get("tool_parser")
        if parser is not None and parser not in parser_names():
            raise ValueError(f"models config {path}: model {model_id!r} has unknown tool_parser {parser!r}; "
                             f"valid: {', '.join(parser_names())}")
        entries.append((model_id, options.pop("model", None), options))
    return entries


def server_settings(args: argparse.Namespace) -> ServerSettings:
    """The HTTP-side options of `serve`."""
    if args.max_waiting < 0 or args.keepalive <= 0:
        raise ValueError(f"invalid --max-waiting {args.max_waiting} / --keepalive {args.keepalive}")
    if args.mcp_port is not None and not (0 < args.mcp_port < 65536 and args.mcp_port != args.port):
        raise ValueError(f"invalid --mcp-port {args.mcp_port}: a port from 1 to 65535 other than --port")
    return ServerSettings(
        api_key=args.api_key or os.environ.get("AGENT_RUNTIME_API_KEY") or None,
        max_waiting=args.max_waiting,
        keepalive_s=args.keepalive,
        cors_origins=tuple(args.cors_origin),
        max_tool_rounds=args.max_tool_rounds,
        host=args.host,
        mcp_http=not args.no_mcp,
        mcp_api_key=args.mcp_api_key,
        mcp_reexport=args.mcp_reexport,
    )


def search_options(args: argparse.Namespace) -> SearchOptions:
    """--search-* flags as SearchOptions (a SearchOptionsError, a ValueError, names the bad value)."""
    allow = args.search_allow_private
    allow_private: bool | frozenset[str] = False
    if allow == "all":
        allow_private = True
    elif allow:
        allow_private = frozenset(h.strip() for h in allow.split(",") if h.strip())
    if args.search_backend == "searxng" and not args.searxng_url:
        raise ValueError("--search-backend searxng needs --searxng-url URL")
    return SearchOptions(backend=args.search_backend, searxng_url=args.searxng_url,
                         max_results=args.search_max_results, context_size=args.search_context_size,
                         embedding_model=args.search_embedding_model, allow_private=allow_private,
                         allowed_domains=tuple(args.search_allowed_domain),
                         blocked_domains=tuple(args.search_blocked_domain))


def build_runtime(args: argparse.Namespace, settings: ServerSettings | None = None) -> Runtime:
    """The engines, embedder, tool registry and MCP pool the serving commands' options ask for.

    `settings` default to serve's (`server_settings`); `agent-runtime mcp` passes its own."""
    settings = settings or server_settings(args)
    if args.max_tool_rounds < 1:
        raise ValueError(f"invalid --max-tool-rounds {args.max_tool_rounds}: must be >= 1")
    mcp_config_path = resolve_mcp_config_path(args.mcp_config)
    mcp_config = load_mcp_config(mcp_config_path) if mcp_config_path else None  # bad files fail before loading
    search = search_options(args) if getattr(args, "enable_search", False) else None
    engines: dict[str, AsyncEngine] = {}
    flag = {"tool_parser": args.tool_parser} if getattr(args, "tool_parser", None) else {}
    entries = [(name, source, flag) for name, source in model_specs(args.model)] \
        if args.model or not args.models_config else []
    if args.models_config:
        entries += models_config(args.models_config)
    tool_parsers: dict[str, str] = {}
    for name, source, overrides in entries:
        overrides = dict(overrides)
        parser = overrides.pop("tool_parser", None)
        engine = create_serving_engine(EngineConfig(**{**engine_options(args), **overrides, "model": source}))
        model_id = name or engine.loaded.source.name
        if model_id in engines:
            raise ValueError(f"two models are named {model_id!r}: name them with --model ID=MODEL")
        engines[model_id] = engine
        if parser:
            tool_parsers[model_id] = parser
    embedder = None
    if not args.no_embeddings:
        from agent_runtime.embeddings import Embedder  # imports sentence-transformers: only when used

        embedder = Embedder(args.embedding_model, device=str(next(iter(engines.values())).loaded.device))
    runtime = Runtime(engines, settings, embedder=embedder, tool_parsers=tool_parsers)
    if getattr(args, "enable_search", False):
        engine = next(iter(engines.values()))
        # The re-ranking model runs on the engine thread: one OpenMP pool (see engine/omp_pool.py).
        register_search_tools(runtime.registry, search, run_model=engine.run_on_engine_thread)
        log.info("web search on (%s backend): search_the_web, website_content_extractor", search.backend)
    if mcp_config is not None:
        runtime.mcp_pool = McpClientPool(mcp_config, runtime.registry)
        log.info("MCP: %d server(s) from %s, connected in the background", len(mcp_config.servers),
                 mcp_config_path)
    return runtime


def run_serve(args: argparse.Namespace) -> int:
    settings = server_settings(args)
    separate_mcp = settings.mcp_http and args.mcp_port is not None
    if separate_mcp:
        settings = dataclasses.replace(settings, mcp_http=False)  # the API's app leaves /mcp to the MCP port
    runtime = build_runtime(args, settings)
    app = create_app(runtime)
    base = f"http://{args.host}:{args.port}"
    log.info("serving %s on %s (OpenAI API under /v1, docs at /docs)", ", ".join(runtime.engines), base)
    try:
        if not separate_mcp:
            if settings.mcp_http:
                log.info("MCP server (streamable HTTP) at %s/mcp", base)
            uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        else:
            mcp_app = mcp_http_app(build_mcp_server(runtime, reexport=settings.mcp_reexport), settings)
            log.info("MCP server (streamable HTTP) at http://%s:%d/mcp", args.host, args.mcp_port)
            asyncio.run(_serve_two(
                uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"),
                uvicorn.Config(mcp_app, host=args.host, port=args.mcp_port, log_level="warning")))
    finally:
        runtime.shutdown()
    return 0


class _SecondServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the main one (it stops when the main one stops)."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def _serve_two(main: uvicorn.Config, second: uvicorn.Config) -> None:
    """Two apps on two ports in one event loop (the engines and the MCP pool are shared)."""
    other = _SecondServer(second)
    task = asyncio.create_task(other.serve())
    try:
        await uvicorn.Server(main).serve()
    finally:
        other.should_exit = True
        await task
