"""Cutting page text by tokens: chunk_page (ranking units) and truncate_to_tokens (a page within a budget).

Tokens are counted with the embedding model's tokenizer (WordPiece for MiniLM): chunks must fit its
window to be embedded whole, and its counts are close to an LLM's BPE counts for English prose.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tools.web_search.extractor import PageText

CHUNK_TOKENS = 128  # all-MiniLM-L6-v2 was trained on 128-token inputs

# texts -> for each text, the (start, end) character span of every token (ChunkEmbedder.token_offsets)
TokenOffsets = Callable[[list[str]], list[list[tuple[int, int]]]]

_SENTENCE_END = re.compile(r"[.!?:;]['\")\]]*$")


@dataclass(frozen=True)
class Chunk:
    """A piece of a page small enough to embed, with the page's URL and title so the model can cite it."""

    url: str
    title: str
    text: str
    tokens: int


def chunk_page(page: PageText, token_offsets: TokenOffsets, max_tokens: int = CHUNK_TOKENS) -> list[Chunk]:
    """`page`'s text in chunks of at most `max_tokens` tokens: whole paragraphs packed together, long
    paragraphs cut at a sentence end (or else a word boundary)."""
    paragraphs = [line.strip() for line in page.text.split("\n") if line.strip()]
    pieces: list[tuple[str, int]] = []
    for paragraph, spans in zip(paragraphs, token_offsets(paragraphs), strict=True):
        pieces.extend(_split(paragraph, spans, max_tokens))
    chunks: list[Chunk] = []
    texts: list[str] = []
    size = 0
    for text, tokens in pieces:
        if texts and size + tokens > max_tokens:
            chunks.append(Chunk(page.url, page.title, "\n".join(texts), size))
            texts, size = [], 0
        texts.append(text)
        size += tokens
    if texts:
        chunks.append(Chunk(page.url, page.title, "\n".join(texts), size))
    return chunks


def truncate_to_tokens(text: str, token_offsets: TokenOffsets, max_tokens: int) -> tuple[str, int, bool]:
    """(the start of `text` within max_tokens tokens, cut at a word boundary; its tokens; whether cut)."""
    spans = token_offsets([text])[0] if text else []
    if len(spans) <= max_tokens:
        return text, len(spans), False
    cut = _word_cut(text, spans, 0, max_tokens)
    return text[:spans[cut - 1][1]], cut, True


def _split(paragraph: str, spans: list[tuple[int, int]], max_tokens: int) -> list[tuple[str, int]]:
    """(text, tokens) pieces of one paragraph, each within max_tokens."""
    pieces = []
    start = 0
    while len(spans) - start > max_tokens:
        cut = (_sentence_cut(paragraph, spans, start, max_tokens)
               or _word_cut(paragraph, spans, start, max_tokens))
        pieces.append((paragraph[spans[start][0]:spans[cut - 1][1]], cut - start))
        start = cut
    if start < len(spans) or not pieces:
        pieces.append((paragraph[spans[start][0]:] if spans else paragraph, len(spans) - start))
    return pieces


def _sentence_cut(text: str, spans: list[tuple[int, int]], start: int, max_tokens: int) -> int | None:
    """The last token index in the second half of the window that starts a new sentence, if any."""
    for cut in range(start + max_tokens, start + max_tokens // 2, -1):
        end = spans[cut - 1][1]
        if spans[cut][0] > end and _SENTENCE_END.search(text, max(0, end - 4), end):
            return cut
    return None


def _word_cut(text: str, spans: list[tuple[int, int]], start: int, max_tokens: int) -> int:
    """The last token index within the window that starts a word (so no word is split), or the window end."""
    for cut in range(start + max_tokens, start, -1):
        if cut >= len(spans) or spans[cut][0] > spans[cut - 1][1]:
            return cut
    return start + max_tokens
