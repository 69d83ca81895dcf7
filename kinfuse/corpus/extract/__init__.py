"""HTML main-text extraction: only the article text of a page should reach the model.

Navigation, cookie banners, share bars, related links and footers are noise a
model would otherwise memorise. The extractor is Readability-style and purely
structural, in steps of one module each:

* :mod:`.depth`: nesting beyond what browsers build is flattened first, so
  that parsing and every walk up the tree stay linear in the page's size;
* :mod:`.tree`: one walk over the DOM skips chrome and builds output lines
  and the line range of every block element (:mod:`.lines`), asking :mod:`.chrome`
  what an element's class, id, role and hiding attributes say it is and :mod:`.nodes`
  what a skipped element's subtree holds (the page's prose, a list item's header);
* :mod:`.score`: per-element statistics (prefix sums) and paragraph votes;
* :mod:`.select`: the main block, climbed and expanded to the whole article,
  to the container of its repeated items (cards, posts), and joined by the
  content sections around it (service and landing pages), or the whole
  walked page when that block is a small part of a page of many parts
  (listings, product grids);
* :mod:`.render`: link lines (unless the content is a list of linked items),
  the headline and layout copies dropped, lines joined into text;
* :mod:`.structured`: JSON-LD, microdata posts and the meta description added
  where the visible text lacks what they say.
"""

from __future__ import annotations

import re
import unicodedata

from selectolax.lexbor import LexborHTMLParser

from ..clean import normalize_text
from .depth import cap_depth
from .render import prune_lines, render
from .score import Page
from .select import select_main
from .structured import add_structured
from .tree import node_text, walk

__all__ = ["extract", "extract_text", "extract_title"]

# "<iframe ... />" does not close in HTML: an iframe's raw text runs to "</iframe>". Inside
# <noscript> (Google Tag Manager's snippet written with "/>") a browser, which runs scripts,
# never parses it; a parser without scripts does, and the rest of the page becomes that
# iframe's text. Closed here as the page's author meant.
_SELF_CLOSED_IFRAME = re.compile(r"(<iframe\b[^>]*?)\s*/>", re.I)
# A page that marks itself up as a discussion (schema.org, in JSON-LD or microdata) is a forum
# thread: its replies sit in "comment" blocks, which are its content (tree.walk's ``thread``).
# Q&A pages (QAPage) are not: the comments under each answer are asides, and counting them cost
# WCXB dev's Stack Exchange pages 0.01-0.2 F1 each (benchmarks/README.md, "Discussion pages").
_DISCUSSION = "DiscussionForumPosting"


def _parse(html: str) -> LexborHTMLParser:
    if "<iframe" in html or "<IFRAME" in html:
        html = _SELF_CLOSED_IFRAME.sub(r"\1></iframe>", html)
    return LexborHTMLParser(cap_depth(html))


def extract_text(html: str, url: str | None = None) -> str:
    """Return the main text of one HTML page as plain text.

    Page chrome (scripts, styles, navigation, headers, footers, asides, forms,
    cookie banners, share bars, comments, ads, related links, breadcrumbs,
    newsletter boxes, hidden elements) is skipped; the main block is then
    chosen Readability-style from paragraph scores and text density, inside
    ``<article>``/``<main>``/``[role=main]`` when those hold most of the prose.
    Paragraphs and headings come out on their own lines separated by a blank
    line, list items as "- item", table rows as "cell | cell"; entities are
    decoded, spaces collapsed and the text NFC-normalised.

    ``url`` is accepted for callers that have it; extraction is purely
    structural and does not depend on the site.
    """
    return extract(html, url)[0]


def extract(html: str, url: str | None = None) -> tuple[str, str]:
    """(main text, title) of one HTML page, from one parse: what :func:`extract_text` and
    :func:`extract_title` give, for callers that want both."""
    del url  # no per-site rules, by design
    if not html or not html.strip():
        return "", ""
    tree = _parse(html)
    title = _title(tree)
    thread = _DISCUSSION in html

    def main_text(tree: LexborHTMLParser) -> str:
        return _main_text(tree, thread)

    return normalize_text(add_structured(tree, html, main_text(tree), main_text)), title


def _main_text(tree: LexborHTMLParser, thread: bool) -> str:
    root = tree.body or tree.root
    if root is None:
        return ""
    page = Page(walk(root, thread))
    return render(page, prune_lines(page, select_main(page), node_text(tree.css_first("title"))))


def extract_title(html: str) -> str:
    """The page's ``<title>``, or its first ``<h1>`` when the title is missing or empty."""
    if not html or not html.strip():
        return ""
    return _title(_parse(html))


def _title(tree: LexborHTMLParser) -> str:
    for selector in ("title", "h1"):
        title = node_text(tree.css_first(selector))
        if title:
            return unicodedata.normalize("NFC", title)
    return ""
