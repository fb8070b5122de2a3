"""benchmarks/bench_gpu.py: its CPU smoke run (tiny preset) gives every metric as JSON, all positive."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"
SMOKE = ["--preset", "tiny", "--device", "cpu", "--batches", "1,2", "--prefill-tokens", "32",
         "--output-tokens", "4", "--json"]


def load_script():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bench(*args: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AGENT_RUNTIME_COMPILE": "0"}
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=300)
    assert result.stdout.strip(), result.stderr[-3000:]
    return result, json.loads(result.stdout)


def check_run(run: dict, batch: int, new_tokens: int) -> None:
    assert (run["batch"], run["tokens"], run["decode_steps"]) == (batch, batch * new_tokens, new_tokens - 1)
    for metric in ("decode_tok_s", "throughput_tok_s", "ttft_ms", "wall_s"):
        assert run[metric] > 0, (metric, run)


@pytest.mark.slow
def test_smoke_run_reports_every_metric_for_both_engines():
    result, report = run_bench(*SMOKE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert report["errors"] == {}
    assert report["env"]["device"] == "cpu" and report["env"]["torch"] and report["env"]["device_name"]
    assert report["copy_bandwidth_gb_s"] > 0
    ours, hf = report["results"]["ours"], report["results"]["hf"]
    for engine in (ours, hf):
        assert sorted(engine["decode"]) == ["1", "2"]
        for n, run in engine["decode"].items():
            check_run(run, int(n), 4)
        assert engine["prefill"]["tokens"] == 32 and engine["prefill"]["prefill_tok_s"] > 0
        assert engine["load_s"] > 0
    assert ours["isq"] == "none" and ours["native"] and ours["dtype"] == "float32"
    roof = ours["roofline"]
    for field in ("weight_bytes_read", "weight_bytes_all", "kv_bytes_per_token", "bytes_per_step", "step_ms",
                  "achieved_gb_s", "fraction"):
        assert roof[field] > 0, field
    # tiny: 2 layers x (K + V) x 2 KV heads x 16 dims x 4 bytes (f32 KV on CPU); the embedding isn't read
    assert roof["kv_bytes_per_token"] == 2 * 2 * 2 * 16 * 4
    assert roof["weight_bytes_read"] < roof["weight_bytes_all"]
    assert set(report["ratios"]) == {"decode_tok_s_b1", "throughput_tok_s_b1", "decode_tok_s_b2",
                                     "throughput_tok_s_b2", "prefill_tok_s"}
    assert all(value > 0 for value in report["ratios"].values())
    roofline_target, hf_target, int8_target = report["targets"]
    assert roofline_target["value"] == roof["fraction"]
    assert hf_target["value"] == report["ratios"]["throughput_tok_s_b2"]
    assert int8_target["value"] is None and int8_target["met"] is None
    # The human-readable table goes to stderr when stdout carries the JSON.
    assert "decode tok/s, batch 1" in result.stderr and "--isq-compare int8" in result.stderr


@pytest.mark.slow
def test_isq_compare_runs_a_second_engine_and_reports_the_int8_ratio():
    result, report = run_bench("--preset", "tiny", "--device", "cpu", "--batches", "1", "--prompt-tokens",
                               "16", "--prefill-tokens", "16", "--output-tokens", "3", "--skip-hf",
                               "--isq-compare", "int8", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(report["results"]) == {"ours", "ours_int8"}
    int8 = report["results"]["ours_int8"]
    assert int8["isq"] == "int8"
    check_run(int8["decode"]["1"], 1, 3)
    # int8 codes: fewer weight bytes per step than the f32 weights
    dense = report["results"]["ours"]["roofline"]["weight_bytes_read"]
    assert 0 < int8["roofline"]["weight_bytes_read"] < dense
    target = report["targets"][2]
    assert target["value"] == report["ratios"]["ours_int8_over_ours_decode_b1"] > 0
    assert report["targets"][1]["value"] is None  # no HF run


def test_checkpoint_loads_natively_and_is_reused(tmp_path):
    from engine.loader import load_model

    bench = load_script()
    first = bench.build_checkpoint(tmp_path, "tiny", torch.float32, torch.device("cpu"), 640, seed=0)
    again = bench.build_checkpoint(tmp_path, "tiny", torch.float32, torch.device("cpu"), 640, seed=0)
    assert not first["reused"] and again["reused"] and again["params"] == first["params"] > 0
    loaded = load_model(str(tmp_path), dtype="f32", device="cpu", allow_fallback=False)
    assert loaded.native and loaded.context_length == 640
    assert loaded.tokenizer.vocab_size == bench.PRESETS["tiny"]["vocab_size"]
    assert bench.EOS in loaded.tokenizer.eos_token_ids


@pytest.mark.parametrize("args", [["--output-tokens", "1"], ["--batches", "0,x"], ["--reps", "0"]])
def test_bad_options_are_argparse_errors(args):
    with pytest.raises(SystemExit) as exit_info:
        load_script().parse_args(args)
    assert exit_info.value.code == 2
