"""Our kernel package lives beside the PyPI `kernels` package that transformers (>= 5.25) requires.

Ours was a top-level `kernels/` until transformers made the PyPI `kernels` a dependency and imports
names from it (`from kernels import CUDAProperties, ...`): whichever of the two came first on
sys.path broke the other. Ours is `agent_kernels/` since; this checks both import side by side from
the repository root (where a local `kernels/` directory would shadow the PyPI one).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_transformers_model_code_imports_beside_our_kernel_package():
    assert not (ROOT / "kernels").exists(), "a top-level kernels/ would shadow the PyPI package transformers imports"
    code = (
        "import agent_kernels, pathlib, sys\n"
        f"assert pathlib.Path(agent_kernels.__file__).resolve().parent == pathlib.Path({str(ROOT / 'agent_kernels')!r})\n"
        "import agent_kernels.dispatch, agent_kernels.cpu_decode_attention\n"
        "import transformers.integrations.hub_kernels\n"
        "from transformers.models.llama import modeling_llama\n"
        "from transformers.models.gemma3 import modeling_gemma3\n"
        "from transformers import LlamaConfig\n"
        "m = modeling_llama.LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64,\n"
        "    num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, vocab_size=64))\n"
        "import importlib.util\n"
        "spec = importlib.util.find_spec('kernels')\n"
        "print('kernels package:', None if spec is None else spec.origin)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("kernels package:"))
    assert "site-packages" in line, f"`kernels` does not resolve to the installed PyPI package: {line}"
