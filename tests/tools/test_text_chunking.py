"""Chunking by the embedding model's tokens, BM25 scores, the TTL cache and the domain filter."""

from __future__ import annotations

from tools.web_search.bm25 import Bm25
from tools.web_search.chunker import chunk_page, truncate_to_tokens
from tools.web_search.domain_filter import DomainFilter
from tools.web_search.extractor import PageText
from tools.web_search.ttl_cache import TtlCache

SENTENCE = "The quick brown fox jumps over the lazy dog near the riverbank."


def test_chunks_pack_paragraphs_and_cut_long_ones_at_sentence_ends(embedder):
    short = ["Heading", "A short paragraph."]
    long = " ".join([SENTENCE] * 40)  # ~560 tokens
    page = PageText("https://x.example/", "X", "\n".join(short + [long]))

    chunks = chunk_page(page, embedder.token_offsets, max_tokens=128)

    assert chunks[0].text.startswith("Heading\nA short paragraph.")
    assert all(c.tokens <= 128 for c in chunks) and len(chunks) >= 5
    assert all(c.text.endswith(".") for c in chunks)
    counted = [len(s) for s in embedder.token_offsets([c.text for c in chunks])]
    assert counted == [c.tokens for c in chunks]
    assert {(c.url, c.title) for c in chunks} == {("https://x.example/", "X")}


def test_a_paragraph_without_sentence_ends_is_cut_between_words(embedder):
    words = " ".join(f"extraordinarily{i}" for i in range(200))
    chunks = chunk_page(PageText("u", "t", words), embedder.token_offsets, max_tokens=50)
    assert all(c.tokens <= 50 for c in chunks)
    assert " ".join(c.text for c in chunks) == words


def test_truncate_to_tokens_keeps_whole_words(embedder):
    text = " ".join([SENTENCE] * 20)
    cut, tokens, was_cut = truncate_to_tokens(text, embedder.token_offsets, 30)
    assert was_cut and tokens <= 30 and text.startswith(cut) and text[len(cut)] == " "
    assert truncate_to_tokens("short text", embedder.token_offsets, 30) == ("short text", 2, False)


def test_bm25_prefers_documents_with_rare_query_words():
    docs = ["the cat sat on the mat", "the dog chased the cat", "quantum entanglement of photons", ""]
    scores = Bm25(docs).scores("cat photons")
    assert scores[2] > scores[0] > 0 and scores[3] == 0
    assert Bm25(docs).scores("unseen words") == [0.0] * 4


def test_ttl_cache_expires_and_evicts_least_recently_used():
    now = [0.0]
    cache: TtlCache[str] = TtlCache(ttl_s=10, max_entries=2, clock=lambda: now[0])
    cache.put("a", "1")
    cache.put("b", "2")
    assert cache.get("a") == "1"
    cache.put("c", "3")  # evicts b, the least recently used
    assert (cache.get("b"), cache.get("a"), cache.get("c")) == (None, "1", "3")
    now[0] = 10.0
    assert cache.get("a") is None and len(cache) == 1
    off: TtlCache[str] = TtlCache(ttl_s=0)
    off.put("a", "1")
    assert off.get("a") is None


def test_domain_filter_covers_subdomains():
    only_docs = DomainFilter(allowed=("python.org",), blocked=("bugs.python.org",))
    assert only_docs.refusal("docs.python.org") is None
    assert only_docs.refusal("PYTHON.ORG.") is None
    assert only_docs.refusal("bugs.python.org") == "bugs.python.org is in the blocked domain bugs.python.org"
    assert only_docs.refusal("notpython.org") == "notpython.org is not in the allowed domains (python.org)"
