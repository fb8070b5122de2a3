"""Our top-level `kernels/` package must not break transformers, which probes the PyPI `kernels`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_transformers_model_code_imports_beside_our_kernels_package():
    code = (
        "import kernels, pathlib, sys\n"
        f"assert pathlib.Path(kernels.__file__).resolve().parent == pathlib.Path({str(ROOT / 'kernels')!r})\n"
        "from transformers.utils.import_utils import is_kernels_available\n"
        "import transformers.integrations.hub_kernels\n"
        "from transformers.models.llama import modeling_llama\n"
        "from transformers.models.gemma3 import modeling_gemma3\n"
        "from transformers import LlamaConfig\n"
        "m = modeling_llama.LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64,\n"
        "    num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, vocab_size=64))\n"
        "print('hub kernels available:', is_kernels_available())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "hub kernels available: False" in result.stdout
