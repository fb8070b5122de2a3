"""The `agent-runtime` command line: argument parsing and dispatch to subcommands."""

from __future__ import annotations

import argparse
import logging
import sys

from agent_runtime import __version__


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
    return parser


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model-loading options every subcommand that runs a model shares."""
    parser.add_argument("--model", "-m", default=None,
                        help="HF directory, .gguf file, or hub id org/name (default: embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "f32", "bf16", "f16"],
                        help="weight/activation dtype (auto: bf16 on CUDA, f32 on CPU)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--chat-template", default=None, help="Jinja chat template file overriding the model's")
    parser.add_argument("--no-fallback", action="store_true",
                        help="fail instead of running unknown architectures through transformers")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available cores)")


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


def _run_generate(args: argparse.Namespace) -> int:
    from agent_runtime.generate_command import run_generate

    return run_generate(args)


if __name__ == "__main__":
    sys.exit(main())
