"""mkdocs hook: a page whose front matter says `search: {headings_only: true}` is indexed for
the site's search by its headings alone (each heading's text and link, none of the text
under it); the page the reader gets is the same, byte for byte.

Material's search plugin indexes the page's HTML (`page.content`) in its `on_page_context`,
section by section; it can leave out a whole page (`search: {exclude: true}`) or an element
marked `data-search-exclude`. Marking every block of a long page so was tried and dropped:
the plugin's parser compares elements by tag name alone, and a tag it never sees closed (the
page's prose writes `<root>` and the like as text) kept an excluded list open, so that later
headings lost their titles in the index. Here the plugin is handed the page's headings alone
instead: the content swapped just before the plugin reads it and put back just after, before
the page's template renders it.

It is for the attacks' catalogue, docs/explanation/attacks/ (its index and one page per
layer): 270,000 words, about two thirds of the index, which Material's search worker builds
in the reader's browser on every page of the site they open (bench/README.md, branch
perf-browser73).
"""

from __future__ import annotations

import re
from typing import Any

from mkdocs.plugins import CombinedEvent, event_priority

#: A heading of the page's HTML, whole (Python-Markdown writes each on a line of its own).
HEADING = re.compile(r"<h[1-6][\s>].*?</h[1-6]>", re.DOTALL)

#: The pages' whole content while the search plugin reads their headings.
_whole: dict[int, str] = {}


def _headings_only(page: Any) -> bool:
    search = page.meta.get("search") or {}
    return bool(search.get("headings_only"))


@event_priority(100)  # before the search plugin's (priority 0)
def _headings_for_search(context: Any, page: Any, **kwargs: object) -> Any:
    if _headings_only(page):
        _whole[id(page)] = page.content
        page.content = "\n".join(HEADING.findall(page.content))
    return context


@event_priority(-100)  # after every plugin's, before the template renders the page
def _whole_for_the_reader(context: Any, page: Any, **kwargs: object) -> Any:
    if id(page) in _whole:
        page.content = _whole.pop(id(page))
    return context


on_page_context = CombinedEvent(_headings_for_search, _whole_for_the_reader)
