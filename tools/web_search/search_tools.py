"""The web-search tools the model calls (search_the_web, website_content_extractor); their registration."""

from __future__ import annotations

import logging
from typing import Any

from tools.base import Tool, ToolResult, ToolSpec
from tools.registry import ToolRegistry
from tools.web_search.embedder import ChunkEmbedder
from tools.web_search.errors import WebSearchError
from tools.web_search.options import SearchOptions, context_tokens
from tools.web_search.service import PageReport, RunModel, SearchReport, WebSearch, not_read_line

log = logging.getLogger(__name__)

SOURCE = "web_search"
SEARCH_TOOL_NAME = "search_the_web"
EXTRACT_TOOL_NAME = "website_content_extractor"

SEARCH_SPEC = ToolSpec(
    name=SEARCH_TOOL_NAME,
    description=("Search the web for current or specific information. Returns numbered excerpts of the most "
                 "relevant pages, each headed by its title and URL; cite the sources you use by number and "
                 "URL. Call it again with a different query to look further."),
    input_schema={
        "type": "object",
        "properties": {"query": {"type": "string",
                                 "description": "What to search for, as typed into a search engine."}},
        "required": ["query"],
    },
    source=SOURCE,
)
EXTRACT_SPEC = ToolSpec(
    name=EXTRACT_TOOL_NAME,
    description=("Read one web page: returns its main text, without menus and ads, headed by its title and "
                 "URL. Use it for a URL the user gave or one that search_the_web returned."),
    input_schema={
        "type": "object",
        "properties": {"url": {"type": "string", "description": "The http:// or https:// URL of the page."}},
        "required": ["url"],
    },
    source=SOURCE,
)


class _WebTool(Tool):
    """A tool over a shared WebSearch, answering within one context size."""

    def __init__(self, search: WebSearch, context_size: str | None = None) -> None:
        if context_size is not None:
            context_tokens(context_size)
        self.search = search
        self.context_size = context_size

    def with_context_size(self, context_size: str) -> _WebTool:
        """The same tool (same caches and model) answering within another budget, e.g. per request from
        web_search_options.search_context_size ("low", "medium", "high")."""
        return type(self)(self.search, context_size)

    def _argument(self, arguments: dict[str, Any], name: str) -> str | ToolResult:
        value = arguments.get(name)
        if not isinstance(value, str) or not value.strip():
            return ToolResult.error(f"{self.spec.name} needs a non-empty string argument {name!r}")
        return value


class SearchTheWebTool(_WebTool):
    """search_the_web(query): ranked, cited excerpts of the result pages."""

    spec = SEARCH_SPEC

    async def call(self, arguments: dict[str, Any]) -> ToolResult:
        query = self._argument(arguments, "query")
        if isinstance(query, ToolResult):
            return query
        try:
            report = await self.search.search(query, self.context_size)
        except WebSearchError as exc:
            return ToolResult.error(str(exc))
        except Exception as exc:  # noqa: BLE001 - a tool never raises: the model reads what went wrong
            log.exception("search_the_web failed")
            return ToolResult.error(f"the web search failed: {exc!r}")
        return format_search(report)


class WebsiteContentExtractorTool(_WebTool):
    """website_content_extractor(url): the cleaned text of one page, within the budget."""

    spec = EXTRACT_SPEC

    async def call(self, arguments: dict[str, Any]) -> ToolResult:
        url = self._argument(arguments, "url")
        if isinstance(url, ToolResult):
            return url
        try:
            report = await self.search.read_page(url, self.context_size)
        except WebSearchError as exc:
            return ToolResult.error(str(exc))
        except Exception as exc:  # noqa: BLE001 - a tool never raises: the model reads what went wrong
            log.exception("website_content_extractor failed")
            return ToolResult.error(f"reading {url} failed: {exc!r}")
        return format_page(report)


def format_search(report: SearchReport) -> ToolResult:
    """`[n] Title — URL` then the chunk, per chunk; pages not read listed after."""
    blocks = [f"[{n}] {c.title or c.url} — {c.url}\n{c.text}" for n, c in enumerate(report.chunks, start=1)]
    if report.not_read:
        blocks.append(not_read_line(report.not_read))
    sources = [{"index": n, "title": c.title, "url": c.url} for n, c in enumerate(report.chunks, start=1)]
    return ToolResult("\n\n".join(blocks), meta={"sources": sources, "not_read": list(report.not_read)})


def format_page(report: PageReport) -> ToolResult:
    """`Title — URL`, the text, and a note when it was cut."""
    header = f"{report.title} — {report.url}" if report.title else report.url
    note = f"\n[cut to {report.tokens} tokens]" if report.cut else ""
    meta = {"url": report.url, "title": report.title, "tokens": report.tokens, "cut": report.cut}
    return ToolResult(f"{header}\n\n{report.text}{note}", meta=meta)


def register_search_tools(registry: ToolRegistry, options: SearchOptions, *,
                          embedder: ChunkEmbedder | None = None, run_model: RunModel | None = None) -> None:
    """Register search_the_web and website_content_extractor (source "web_search"; replaces an earlier set).

    `embedder`: a ChunkEmbedder to share (default: one loading options.embedding_model on first use).
    `run_model(fn, *args)`: where the model's torch work runs (default: the embedder's own thread; pass
    AsyncEngine.run_on_engine_thread to keep it on the engine thread, beside the engine's OpenMP pool).
    """
    search = WebSearch(options, embedder=embedder, run_model=run_model)
    registry.replace_source(SOURCE, [SearchTheWebTool(search), WebsiteContentExtractorTool(search)])
