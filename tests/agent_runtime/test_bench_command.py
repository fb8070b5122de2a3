"""`agent-runtime bench`: JSON output on the embedded model; bad option values are argparse errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agent_runtime.bench import parse_levels, summarise
from agent_runtime.cli import main

FIELDS = ("ttft_mean_ms", "ttft_p50_ms", "tpot_ms", "prefill_tok_s", "agg_decode_tok_s", "agg_tok_s")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent_runtime", *args], capture_output=True, text=True,
                          timeout=120)


def test_bench_json_on_the_embedded_model():
    result = run_cli("bench", "--json", "--prompt-len", "32", "--gen-len", "8", "--concurrency", "1,2")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["model"].endswith(".gguf") and report["dtype"] and report["device"] == "cpu"
    assert (report["prompt_len"], report["gen_len"]) == (32, 8)
    assert [level["n"] for level in report["levels"]] == [1, 2]
    for level in report["levels"]:
        assert level["tokens"] == 8 * level["n"] and level["min_tokens_per_request"] == 8
        for field in FIELDS:
            assert level[field] > 0, (field, level)


@pytest.mark.parametrize(("value", "named"), [("0,x", "'0'"), ("1,x", "'x'"), ("", "''")])
def test_bad_concurrency_is_an_argparse_error_naming_it(value, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--concurrency", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--concurrency" in err and named in err


def test_bad_concurrency_exits_2_from_the_command_line():
    result = subprocess.run([sys.executable, "-m", "agent_runtime", "bench", "--concurrency", "0,x"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "'0'" in result.stderr


def test_bad_lengths_are_argparse_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--prompt-len", "-3"])
    assert exit_info.value.code == 2 and "'-3'" in capsys.readouterr().err


def test_parse_levels_and_summarise():
    assert parse_levels("1, 8,32") == [1, 8, 32]
    # two requests, 3 tokens each, prompt of 10 tokens, arrival at 0
    stamps = [[(0.1, 1), (0.2, 1), (0.3, 1)], [(0.2, 1), (0.4, 2)]]
    s = summarise({"n": 2, "stamps": stamps}, prompt_len=10)
    assert s["tokens"] == 6 and s["ttft_p50_ms"] == pytest.approx(100)  # nearest rank
    assert s["ttft_mean_ms"] == pytest.approx(150)
    assert s["prefill_tok_s"] == pytest.approx(20 / 0.2)
    assert s["tpot_ms"] == pytest.approx((100 + 100) / 2)
    assert s["agg_decode_tok_s"] == pytest.approx(4 / (0.4 - 0.1))
