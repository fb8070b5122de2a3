"""extract_text: the readable text and title of a fetched page (trafilatura for HTML)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tools.web_search.fetcher import HTML_TYPES, FetchedPage

_BLANK_RUNS = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class PageText:
    """A page as the ranker and the model see it: where it is, what it is called, what it says."""

    url: str
    title: str
    text: str
    truncated: bool = False  # the page was cut at max_page_bytes before extraction


def extract_text(page: FetchedPage) -> PageText:
    """The main text of `page` without navigation, menus and footers; plain text pages as they are.

    trafilatura keeps the article (paragraphs, lists, tables, code) and drops the boilerplate around
    it; a page it finds no article in (a bare list of links, say) falls back to all its text.
    """
    if page.content_type not in HTML_TYPES:
        text = page.body.decode(page.charset or "utf-8", errors="replace")
        return PageText(page.url, "", _tidy(text), page.truncated)
    import trafilatura  # heavy (lxml, dateparser): loaded with the first page, not with the runtime
    from trafilatura.utils import load_html

    html = page.body.decode(page.charset, errors="replace") if page.charset else page.body
    tree = load_html(html)
    if tree is None:
        return PageText(page.url, "", "", page.truncated)
    title = " ".join((tree.findtext(".//title") or "").split())
    text = trafilatura.extract(tree, favor_recall=True, include_tables=True, include_comments=False,
                               deduplicate=False) or trafilatura.html2txt(html)
    return PageText(page.url, title, _tidy(text or ""), page.truncated)


def _tidy(text: str) -> str:
    lines = (line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()
