"""The `agent-runtime` command line: argument parsing and dispatch to subcommands."""

from __future__ import annotations

import argparse
import logging
import sys

from agent_runtime import __version__
from agent_runtime.tool_parsers import parser_names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-runtime",
        description="An MCP-native agent runtime: local LLM inference served over OpenAI-compatible HTTP and MCP.",
    )
    parser.add_argument("--version", action="version", version=f"agent-runtime {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log verbosity (logs go to stderr)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    gen = sub.add_parser("generate", help="stream a completion of a prompt to stdout",
                         description="Generate from a model and stream the text to stdout.")
    add_model_arguments(gen)
    gen.add_argument("prompt", help="the prompt text ('-' reads it from stdin)")
    gen.add_argument("--chat", action="store_true",
                     help="treat the prompt as a user message and render it through the chat template")
    gen.add_argument("--system", default=None, help="system message (with --chat)")
    gen.add_argument("--max-tokens", type=int, default=256, help="most new tokens (default 256)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--min-p", type=float, default=0.0)
    gen.add_argument("--repetition-penalty", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--ignore-eos", action="store_true", help="keep generating past end-of-sequence")
    gen.add_argument("--stats", action="store_true", help="print token counts and speed to stderr at the end")
    gen.set_defaults(func=_run_generate)

    serve = sub.add_parser("serve", help="serve models over the OpenAI-compatible HTTP API and MCP (/mcp)",
                           description="Serve one or more models over the OpenAI-compatible HTTP API, and as an "
                                       "MCP server (streamable HTTP) at /mcp of the same port.")
    add_model_arguments(serve, multiple=True)
    add_runtime_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it)")
    serve.add_argument("--port", type=int, default=1234, help="port (default 1234)")
    serve.add_argument("--api-key", default=None,
                       help="require 'Authorization: Bearer KEY' on /v1 routes (default: $AGENT_RUNTIME_API_KEY)")
    serve.add_argument("--max-waiting", type=int, default=256,
                       help="requests queued per model beyond its running slots before answering 429")
    serve.add_argument("--keepalive", type=float, default=10.0, help="seconds between SSE keep-alive comments")
    serve.add_argument("--cors-origin", action="append", default=[],
                       help="allow this browser origin, on /v1 and /mcp (repeatable)")
    serve.add_argument("--no-mcp", action="store_true", help="do not serve the MCP server at /mcp")
    serve.add_argument("--mcp-port", type=int, default=None, metavar="PORT",
                       help="serve the MCP server at /mcp of this port instead of the API's port")
    serve.add_argument("--mcp-api-key", default=None, metavar="KEY",
                       help="require 'Authorization: Bearer KEY' on /mcp (default: the --api-key)")
    serve.add_argument("--mcp-reexport", action="store_true",
                       help="the MCP server also offers every registered tool (of --mcp-config servers)")
    serve.set_defaults(func=_run_serve)

    mcp = sub.add_parser("mcp", help="serve models as an MCP server over stdio (for Claude Desktop)",
                         description="Serve models as an MCP server over stdio: stdout carries the protocol, "
                                     "logs go to stderr. Tools: chat, complete, embed, list_models.")
    add_model_arguments(mcp, multiple=True)
    add_runtime_arguments(mcp)
    mcp.add_argument("--mcp-reexport", action="store_true",
                     help="also offer every registered tool (--mcp-config servers): an aggregating gateway")
    mcp.set_defaults(func=_run_mcp)

    chat = sub.add_parser("chat", help="interactive terminal chat with the models and their tools",
                          description="Chat in the terminal: streamed Markdown answers, tool calls "
                                      "(--mcp-config, --enable-search) as they run. /help lists the commands.")
    add_model_arguments(chat, multiple=True)
    add_runtime_arguments(chat)
    chat.add_argument("--system", default=None, help="system message")
    chat.add_argument("--temperature", type=float, default=0.7, help="default 0.7 (/temperature changes it)")
    chat.add_argument("--top-p", type=float, default=1.0)
    chat.add_argument("--max-tokens", type=int, default=1024, help="most new tokens per round (default 1024)")
    chat.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    chat.set_defaults(func=_run_chat)

    bench = sub.add_parser("bench", help="measure TTFT, TPOT, prefill and decode tok/s at several concurrencies",
                           description="Benchmark a model in this process: N requests arrive together at each "
                                       "--concurrency level; prints TTFT, TPOT, prefill and decode tok/s.")
    add_model_arguments(bench)
    from agent_runtime.bench_command import add_bench_arguments

    add_bench_arguments(bench)
    bench.set_defaults(func=_run_bench)
    return parser


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """What the serving commands (serve, mcp) share beyond the model options: models, embeddings, tools."""
    parser.add_argument("--models-config", default=None, metavar="FILE",
                        help='JSON {"id": {"model": SOURCE, "dtype": ..., ...}} of models to serve '
                             "(with or instead of --model)")
    parser.add_argument("--embedding-model", default=None, metavar="MODEL",
                        help="sentence-transformers directory or hub id for embeddings "
                             "(default: packaged all-MiniLM-L6-v2)")
    parser.add_argument("--no-embeddings", action="store_true", help="serve no embedding model")
    parser.add_argument("--tool-parser", default=None, choices=parser_names(), metavar="NAME",
                        help="tool-call format of the --model models (default: detected from each chat "
                             f"template); one of {', '.join(parser_names())}")
    parser.add_argument("--mcp-config", default=None, metavar="FILE",
                        help="MCP servers whose tools the model may call (mistral.rs or Claude Desktop JSON; "
                             "default: $MCP_CONFIG_PATH); see mcp-config.example.json")
    parser.add_argument("--max-tool-rounds", type=int, default=8,
                        help="most agent-loop rounds of server-side tool calls per request (default 8)")
    search = parser.add_argument_group("web search (search_the_web, website_content_extractor)")
    search.add_argument("--enable-search", action="store_true", help="give the model the web-search tools")
    search.add_argument("--search-backend", default="ddg", choices=["ddg", "searxng"],
                        help="DuckDuckGo (ddgs) or a SearXNG instance (default ddg)")
    search.add_argument("--searxng-url", default=None, metavar="URL", help="the SearXNG instance (with searxng)")
    search.add_argument("--search-max-results", type=int, default=10, help="results per search (default 10)")
    search.add_argument("--search-context-size", default="medium", choices=["low", "medium", "high"],
                        help="tokens of page text a search returns: 4096/8192/16384 (default medium)")
    search.add_argument("--search-embedding-model", default=None, metavar="MODEL",
                        help="sentence-transformers model re-ranking page chunks (default: packaged MiniLM)")
    search.add_argument("--search-allow-private", nargs="?", const="all", default=None, metavar="HOSTS",
                        help="let the fetcher reach private/loopback addresses: all, or a comma list of hosts "
                             "or networks (default: refused)")
    search.add_argument("--search-allowed-domain", action="append", default=[], metavar="DOMAIN",
                        help="only fetch pages of these domains (repeatable)")
    search.add_argument("--search-blocked-domain", action="append", default=[], metavar="DOMAIN",
                        help="never fetch pages of these domains (repeatable)")


def add_model_arguments(parser: argparse.ArgumentParser, multiple: bool = False) -> None:
    """The model-loading options every subcommand that runs a model shares."""
    if multiple:
        parser.add_argument("--model", "-m", action="append", default=None, metavar="[ID=]MODEL",
                            help="HF directory, .gguf file or hub id, optionally named ID=...; repeat to serve "
                                 "several (default: embedded SmolLM2-135M-Instruct)")
    else:
        parser.add_argument("--model", "-m", default=None,
                            help="HF directory, .gguf file, or hub id org/name (default: embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "f32", "bf16", "f16"],
                        help="activation (and dense weight) dtype (auto: bf16 on CUDA; on CPU bf16 for "
                             "quantized weights when the CPU has bf16, else f32)")
    parser.add_argument("--isq", default=None, choices=["none", "int8", "int4", "fp8"],
                        help="in-situ quantization at load, weight-only: int8 (per-channel), int4 (group 32) or "
                             "fp8 (e4m3, per-channel); none loads every weight dense (default: keep a GGUF's own "
                             "quantization on CPU, dequantize it on GPU; safetensors dense)")
    parser.add_argument("--topology", default=None, metavar="FILE",
                        help="YAML file (mistral.rs format) setting isq and device per layer range or tensor "
                             "regex; layers it leaves out follow --isq and --device (see docs/topology.md)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--chat-template", default=None, help="Jinja chat template file overriding the model's")
    parser.add_argument("--no-fallback", action="store_true",
                        help="fail instead of running unknown architectures through transformers")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available cores)")
    engine = parser.add_argument_group("serving engine")
    engine.add_argument("--max-num-seqs", type=int, default=32, help="most requests running at once (default 32)")
    engine.add_argument("--max-num-batched-tokens", type=int, default=None,
                        help="token budget of one engine step (default 2048 on CPU, 8192 on GPU)")
    engine.add_argument("--block-size", type=int, default=16, help="tokens per KV-cache block (default 16)")
    engine.add_argument("--no-prefix-cache", action="store_true", help="turn off prefix caching")
    engine.add_argument("--kv-cache-memory", type=memory_size, default=None, metavar="SIZE",
                        help="KV cache size, e.g. 2GiB or 512MB (default: 1 GiB on CPU, "
                             "--gpu-memory-utilization of free memory on GPU)")
    engine.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                        help="fraction of free GPU memory for the KV cache (default 0.9)")
    engine.add_argument("--max-model-len", type=int, default=None, help="cap on context length (default: the model's)")
    engine.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "f32", "bf16", "f16", "fp8"],
                        help="KV cache dtype (auto: the model dtype, but f32 for an f16 model on CPU; fp8: e4m3, "
                             "half of bf16)")
    engine.add_argument("--no-compile", action="store_true",
                        help="run decode steps eagerly (default: torch.compile them in the background on CPU; "
                             "AGENT_RUNTIME_COMPILE=0 also turns it off)")
    engine.add_argument("--no-native-decode", action="store_true",
                        help="do not run decode steps as one C++ call (default: on for Llama-style quantized models "
                             "on CPU, in place of torch.compile; AGENT_RUNTIME_NATIVE_DECODE=0 also turns it off)")
    engine.add_argument("--no-cuda-graphs", action="store_true",
                        help="run GPU decode steps without CUDA graphs (default: captured per batch size)")
    engine.add_argument("--tensor-parallel-size", type=int, default=1, metavar="N",
                        help="split the model over N processes (gloo on CPU, NCCL on CUDA); needs dense weights "
                             "(default 1; see docs/parallel.md)")
    engine.add_argument("--data-parallel-size", type=int, default=1, metavar="N",
                        help="serve N engine replicas, each request routed to one (default 1; not for generate)")


def memory_size(text: str) -> int:
    """argparse type for sizes such as 2GiB; its error names the bad value."""
    from engine.config import parse_memory

    try:
        return parse_memory(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def engine_options(args: argparse.Namespace) -> dict:
    """EngineConfig keyword arguments from the shared model/engine options."""
    return dict(
        dtype=args.dtype,
        isq=args.isq,
        topology=args.topology,
        device=args.device,
        chat_template=args.chat_template,
        allow_fallback=not args.no_fallback,
        num_threads=args.threads,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        block_size=args.block_size,
        enable_prefix_caching=not args.no_prefix_cache,
        kv_cache_memory=args.kv_cache_memory,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        kv_cache_dtype=args.kv_cache_dtype,
        **({"compile": False} if args.no_compile else {}),
        **({"native_decode": False} if args.no_native_decode else {}),
        cuda_graphs=not args.no_cuda_graphs,
        tensor_parallel_size=args.tensor_parallel_size,
        data_parallel_size=args.data_parallel_size,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from engine.errors import EngineError

    try:
        return args.func(args)
    except EngineError as exc:
        print(f"agent-runtime: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # option values the engine refused (device, dtype, threads)
        print(f"agent-runtime: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run_serve(args: argparse.Namespace) -> int:
    from agent_runtime.serve_command import run_serve

    return run_serve(args)


def _run_mcp(args: argparse.Namespace) -> int:
    from agent_runtime.mcp_command import run_mcp

    return run_mcp(args)


def _run_bench(args: argparse.Namespace) -> int:
    from agent_runtime.bench_command import run_bench

    return run_bench(args)


def _run_chat(args: argparse.Namespace) -> int:
    from agent_runtime.chat_command import run_chat

    return run_chat(args)


def _run_generate(args: argparse.Namespace) -> int:
    from agent_runtime.generate_command import run_generate

    return run_generate(args)


if __name__ == "__main__":
    sys.exit(main())
