"""What a CPU engine process loads: resident memory is a target (issue 13), and torch's compile stack and
triton are the two big optional imports (~150 MB and ~90 MB resident). An eager engine needs neither, and
neither does the default engine on a Llama-style quantized model: its native decode step replaces
torch.compile there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("options, native", [("compile=False, native_decode=False, ", False), ("", True)],
                         ids=["eager", "default-native"])
def test_a_cpu_engine_imports_neither_dynamo_nor_triton(options, native):
    code = (
        "import sys\n"
        "from engine import LLM, SamplingParams\n"
        f"llm = LLM({options}kv_cache_memory=64 * 2**20)\n"
        f"assert (llm.core.native is not None) is {native}, llm.core.native\n"
        "print(llm.generate('The capital of France is', SamplingParams(temperature=0, max_tokens=4))[0].text)\n"
        "print('loaded:', sorted(m for m in ('torch._dynamo', 'torch._inductor', 'triton') if m in sys.modules))\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "loaded: []" in result.stdout, result.stdout
