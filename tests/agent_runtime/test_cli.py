"""The `agent-runtime` command line: help, generate streaming to stdout, clear errors for bad values."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent_runtime.cli import build_parser


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent_runtime", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "generate" in capsys.readouterr().out


def test_generate_streams_completion_to_stdout_and_logs_to_stderr():
    result = run_cli("generate", "--max-tokens", "8", "--temperature", "0", "The capital of France is")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "loaded SmolLM2-135M-Instruct" in result.stderr
    assert "loaded" not in result.stdout


def test_generate_chat_renders_the_template():
    # The fp32 reference path: with the default int4 weights this sampled answer starts elsewhere
    # (the first token is a near-tie, as it is for llama.cpp; see PEERS.md).
    result = run_cli("generate", "--chat", "--max-tokens", "20", "--seed", "3", "--temperature", "0.5",
                     "--dtype", "f32", "--isq", "none", "--stats", "What is the capital of France?")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout and "<|im_start|>" not in result.stdout
    assert "tok/s" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", "-1", "hi"], "temperature=-1.0"),
        (["--top-p", "1.5", "hi"], "top_p=1.5"),
        (["--model", "/no/such/model", "hi"], "/no/such/model"),
        (["--device", "tpu", "hi"], "invalid device 'tpu'"),
    ],
)
def test_bad_values_exit_2_with_a_message_naming_them(args, message):
    result = run_cli("generate", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_engine_options_reach_the_engine_config():
    from agent_runtime.cli import engine_options
    from engine import EngineConfig

    args = build_parser().parse_args([
        "generate", "--no-prefix-cache", "--kv-cache-memory", "512MiB", "--max-num-seqs", "4",
        "--max-num-batched-tokens", "256", "--block-size", "32", "--dtype", "bf16", "hi",
    ])
    config = EngineConfig(model=args.model, **engine_options(args))
    assert config.enable_prefix_caching is False
    assert config.kv_cache_memory == 512 * 2**20
    assert (config.max_num_seqs, config.max_num_batched_tokens, config.block_size) == (4, 256, 32)
    assert config.dtype == "bf16"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--kv-cache-memory", "12XB"], "invalid memory size '12XB'"),
        (["--max-num-seqs", "0"], "invalid max_num_seqs=0"),
        (["--block-size", "-4"], "invalid block_size=-4"),
    ],
)
def test_bad_engine_options_are_named(args, message):
    result = run_cli("generate", *args, "hi")
    assert result.returncode == 2
    assert message in result.stderr
