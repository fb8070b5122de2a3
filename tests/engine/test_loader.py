"""Model sources and options: sharded safetensors, the HF cache by hub id, dtypes, devices."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from tiny_models import load_reference, save_tiny_model

from engine import LLM, SamplingParams

PROMPT = [ord(c) for c in "loader test prompt"]
GREEDY = SamplingParams(temperature=0, max_tokens=16, min_tokens=16)


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    return save_tiny_model("qwen3", tmp_path_factory.mktemp("qwen3"))


def test_sharded_safetensors_with_index_load_like_one_file(qwen3_dir, tmp_path):
    sharded = tmp_path / "sharded"
    load_reference(qwen3_dir).save_pretrained(sharded, max_shard_size="40KB")
    shutil.copy(qwen3_dir / "tokenizer.json", sharded)
    shutil.copy(qwen3_dir / "tokenizer_config.json", sharded)
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("*.safetensors"))) > 2
    whole = LLM(str(qwen3_dir)).generate(PROMPT, GREEDY)[0].token_ids
    assert LLM(str(sharded)).generate(PROMPT, GREEDY)[0].token_ids == whole


def test_hub_id_resolves_from_the_hf_cache_offline(qwen3_dir, tmp_path):
    """A model in the HF cache layout loads by `org/name` with HF_HUB_OFFLINE=1 (no network)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--tiny-qwen3"
    shutil.copytree(qwen3_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    code = (
        "from engine import LLM, SamplingParams\n"
        "llm = LLM('tiny-org/tiny-qwen3')\n"
        f"print(llm.generate({PROMPT!r}, SamplingParams(temperature=0, max_tokens=16, min_tokens=16))[0].token_ids)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = LLM(str(qwen3_dir)).generate(PROMPT, GREEDY)[0].token_ids
    assert result.stdout.strip() == str(expected)


def test_bf16_weights_stay_close_to_fp32(qwen3_dir):
    f32 = LLM(str(qwen3_dir), dtype="f32")
    bf16 = LLM(str(qwen3_dir), dtype="bf16")
    assert bf16.loaded.dtype == torch.bfloat16
    assert next(bf16.loaded.module.parameters()).dtype == torch.bfloat16
    a = f32.next_token_logits(PROMPT)
    b = bf16.next_token_logits(PROMPT)
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.999
    assert len(bf16.generate(PROMPT, GREEDY)[0].token_ids) == 16


def test_invalid_dtype_is_named(qwen3_dir):
    with pytest.raises(ValueError, match="invalid dtype 'int3'"):
        LLM(str(qwen3_dir), dtype="int3")


@pytest.mark.gpu
def test_cuda_greedy_matches_cpu(qwen3_dir):
    cpu = LLM(str(qwen3_dir), device="cpu").generate(PROMPT, GREEDY)[0].token_ids
    cuda = LLM(str(qwen3_dir), device="cuda", dtype="f32").generate(PROMPT, GREEDY)[0].token_ids
    assert cuda == cpu
