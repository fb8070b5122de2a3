"""What a CPU engine process loads: resident memory is a target (issue 13), and torch's compile stack and
triton are the two big optional imports (~150 MB and ~90 MB resident). An eager engine needs neither."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_an_eager_cpu_engine_imports_neither_dynamo_nor_triton():
    code = (
        "import sys\n"
        "from engine import LLM, SamplingParams\n"
        "llm = LLM(compile=False, kv_cache_memory=64 * 2**20)\n"
        "print(llm.generate('The capital of France is', SamplingParams(temperature=0, max_tokens=4))[0].text)\n"
        "print('loaded:', sorted(m for m in ('torch._dynamo', 'torch._inductor', 'triton') if m in sys.modules))\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "loaded: []" in result.stdout, result.stdout
