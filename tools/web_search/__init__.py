"""Built-in web search: search_the_web and website_content_extractor, as in mistral.rs."""

from tools.web_search.backends import CallbackBackend, DdgBackend, SearchBackend, SearxngBackend
from tools.web_search.embedder import ChunkEmbedder
from tools.web_search.errors import (
    AddressRefused,
    EmbeddingModelFailed,
    FetchFailed,
    SearchBackendFailed,
    SearchOptionsError,
    WebSearchError,
)
from tools.web_search.options import CONTEXT_TOKENS, SearchOptions
from tools.web_search.search_hit import SearchHit
from tools.web_search.search_tools import (
    EXTRACT_TOOL_NAME,
    SEARCH_TOOL_NAME,
    SearchTheWebTool,
    WebsiteContentExtractorTool,
    register_search_tools,
)
from tools.web_search.service import WebSearch

__all__ = [
    "AddressRefused", "CONTEXT_TOKENS", "CallbackBackend", "ChunkEmbedder", "DdgBackend", "EXTRACT_TOOL_NAME",
    "EmbeddingModelFailed", "FetchFailed", "SEARCH_TOOL_NAME", "SearchBackend", "SearchBackendFailed",
    "SearchHit", "SearchOptions", "SearchOptionsError", "SearchTheWebTool", "SearxngBackend", "WebSearch",
    "WebSearchError", "WebsiteContentExtractorTool", "register_search_tools",
]
