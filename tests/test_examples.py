"""Every example in examples/ runs to completion on the embedded model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_runs(example: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "the example printed nothing"


def test_python_api_example_prints_each_section():
    example = next(e for e in EXAMPLES if e.name == "python_api.py")
    out = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=600).stdout
    for label in ("completion:", "batch:", "chat:", "stream:", "[finish="):
        assert label in out
    assert "Paris" in out


def test_claude_desktop_config_matches_the_readme():
    import json
    import re

    root = Path(__file__).resolve().parents[1]
    config = json.loads((root / "examples" / "claude_desktop_config.json").read_text())
    blocks = re.findall(r"```json\n(.*?)```", (root / "README.md").read_text(), re.S)
    assert config in [json.loads(b) for b in blocks if "mcpServers" in b], \
        "examples/claude_desktop_config.json differs from the README's Claude Desktop snippet"
    assert config["mcpServers"]["agent-runtime"]["args"][0] == "mcp"
