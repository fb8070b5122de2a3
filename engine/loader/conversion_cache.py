"""ConversionCache: keeps the HF config and tokenizer converted from a GGUF file, so reloads skip it.

transformers rebuilds both from GGUF metadata on every load (seconds for a 49k vocabulary); the
saved JSON loads in ~0.1 s. Entries are keyed by the file's path, size and mtime, so an edited or
replaced file is converted again. A cache that cannot be written is skipped, never fatal.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def cache_root() -> Path:
    base = os.environ.get("AGENT_RUNTIME_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "agent-runtime"
    )
    return Path(base) / "gguf-conversions"


class ConversionCache:
    """One cache entry (a directory) for one GGUF file."""

    def __init__(self, gguf_path: Path) -> None:
        stat = gguf_path.stat()
        key = f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        self.directory = cache_root() / hashlib.sha256(key.encode()).hexdigest()[:24]

    def has_config(self) -> bool:
        return (self.directory / "config.json").is_file()

    def has_tokenizer(self) -> bool:
        return (self.directory / "tokenizer_config.json").is_file()

    def store(self, obj, what: str) -> None:
        """Save a config or tokenizer with its own save_pretrained; log and go on if that fails."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            obj.save_pretrained(self.directory)
        except OSError as exc:
            log.debug("could not cache the converted %s in %s: %s", what, self.directory, exc)
