"""Questions the walk asks of a subtree: how much prose it holds, which skipped tags to keep.

The walk (:mod:`.tree`) drops chrome tags and chrome-named blocks whole; some of them are
content on some pages (an item card's caption, a list item's ``<header>``, a section's header,
a ``<noscript>`` holding a server-rendered page, a React streamed segment). These predicates
read the subtree in question, with C-side queries where they can, and only when the walk
meets such an element.
"""

from __future__ import annotations

import re
from typing import Callable

from selectolax.lexbor import LexborNode

from .chrome import chrome_words

_NOSCRIPT_CHECKS = 32
# A page with this many <header>s has item headers: 0 / 3 / 6 tried on WCXB dev (6 kept).
_ITEM_HEADERS = 6
# \s also matches NBSP and other Unicode spaces, which pages use as layout glue.
WS = re.compile(r"\s+")
# Chrome words that name an item card or a page section when the block holds a heading
# (item_caption): "caption" alone, then "promo" and "banner" too, chosen on WCXB dev (+0.0011 F1).
_CARD_WORDS = re.compile(r"caption|promo|banner")


def item_caption(node: LexborNode, attr: str) -> bool:
    """A "caption", "promo" or "banner" block holding a heading: an item card's text (a shop's
    product title and price under its photo, a news hub's teaser) or a landing page's section
    (a hero banner's headline and lead), not a photo's caption or credit, an ad slot or a
    cookie or announcement bar, which hold none. Only when no other chrome word names it."""
    lowered = attr.lower()
    if not _CARD_WORDS.search(lowered):
        return False
    if chrome_words(_CARD_WORDS.sub(" ", lowered)):
        return False
    return node.css_first("h1, h2, h3, h4, h5, h6") is not None


def item_header(node: LexborNode, root: LexborNode, headers: list[int]) -> bool:
    """A ``<header>`` heading an item of a list (a news river's teaser, a product card): one of
    many headers on the page, holding a linked heading; the page's own header holds none."""
    if node.css_first("h1 a, h2 a, h3 a, h4 a, h5 a, h6 a") is None:
        return False
    if not headers:
        headers.append(len(root.css("header")))
    return headers[0] >= _ITEM_HEADERS


def section_header(node: LexborNode) -> bool:
    """A ``<header>`` inside a ``<section>``: that section's heading and lead (a landing page's
    feature blocks, a recipe index's intro), not the page's header, unless it holds navigation.
    Inside an ``<article>`` too was tried: a shop's and a forum's item headers are chrome."""
    parent = node.parent
    while parent is not None and parent.tag not in ("body", "html"):
        if parent.tag == "section":
            return node.css_first("nav, [role=navigation]") is None
        parent = parent.parent
    return False


def wrapper_header(node: LexborNode, holds_most_prose: Callable[[LexborNode, float, bool], bool]) -> bool:
    """A ``<header>`` used as a section wrapper (Webflow names its page sections so): it holds
    most of the page's prose and no navigation, which the page's own header carries."""
    return holds_most_prose(node, 0.5, True) and node.css_first("nav, [role=navigation]") is None


def skip_noscript(node: LexborNode, root: LexborNode, page_text: list[str]) -> bool:
    """A <noscript> that only asks to enable JavaScript, or repeats text shown elsewhere.

    Other <noscript> content is kept: server-rendered apps (Discourse's
    crawler view) put the whole page there for clients without scripts.
    """
    text = WS.sub(" ", node.text(deep=True)).strip()
    if len(text) < 400 and "javascript" in text.lower():
        return True
    if len(text) < 80 or len(page_text) > _NOSCRIPT_CHECKS:
        return False  # past the first few, kept unchecked: each check reads the whole page
    if not page_text:  # the page's whole text, once, on the first noscript that needs it
        page_text.append(WS.sub(" ", root.text(deep=True)))
    page_text.append("")  # counts the checks
    return page_text[0].count(text[:80]) > 1


# What a visitor fills in or presses on a form. HTML forbids nested forms (parsers close the
# outer one), so asking each <form> for one looks at every element once.
_CONTROLS = "input:not([type=hidden]), textarea, select, button"


def is_display_form(node: LexborNode) -> bool:
    """A <form> whose only fields are hidden, with no control a visitor could fill in or press:
    markup kept for scripts (a post's text in the form its author's edit would submit, the
    post's id as the hidden input), not a search box or a sign-up form. What it holds is shown
    like any block. A form of no fields at all says nothing of what it is and stays dropped."""
    return node.css_first("input[type=hidden]") is not None and node.css_first(_CONTROLS) is None


def is_layout_cell(node: LexborNode) -> bool:
    """A td holding paragraphs or nested tables is page layout, not a data cell."""
    return node.css_first("p, div, table, ul, ol, h1, h2, h3, h4, blockquote, br") is not None


def ptext(node: LexborNode) -> int:
    """Characters of paragraph text under a node (a C-side query)."""
    return sum(len(p.text(deep=True)) for p in node.css("p"))


def text_len(node: LexborNode) -> int:
    """Characters of text under a node, its scripts' and styles' aside."""
    return len(node.text(deep=True)) - sum(len(s.text(deep=True)) for s in node.css("script, style"))


def ptext_sizes(top: LexborNode, sizes: dict[int, int]) -> None:
    """Add :func:`ptext` of ``top`` and of every element under it to ``sizes`` (by node id).

    One bottom-up pass over the subtree: asking each nested chrome element
    separately would read the same paragraphs once per level of nesting.
    """
    stack: list[tuple[LexborNode, bool]] = [(top, False)]
    while stack:
        node, done = stack.pop()
        if done:
            total = len(node.text(deep=True)) if node.tag == "p" else 0
            for child in node.iter(include_text=False):
                total += sizes.get(child.mem_id, 0)
            sizes[node.mem_id] = total
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in node.iter(include_text=False))


def _segments(root: LexborNode, segments: dict[str, LexborNode]) -> None:
    if not segments:  # one query per page, on its first streamed template or segment
        segments.update((n.attributes.get("id") or "", n) for n in root.css('div[hidden][id^="S:"]'))
        segments.setdefault("", root)  # marks the query done on pages without segments


def unplaced_segment(node: LexborNode, root: LexborNode, segments: dict[str, LexborNode]) -> bool:
    """A React streamed segment (``<div hidden id="S:n">``) that no template the walk reached
    has taken: the walk skipped the place its script moves it to (a wrapper named like chrome
    whose prose, all streamed, it could not count). Shown in the browser, it is walked where
    it stands, once."""
    key = node.attributes.get("id") or ""
    if not key.startswith("S:"):
        return False
    _segments(root, segments)
    return segments.pop(key, None) is not None


def streamed_segment(node: LexborNode, root: LexborNode, segments: dict[str, LexborNode]) -> LexborNode | None:
    """The streamed segment a React ``<template id="B:n">`` / ``<template id="P:n">`` stands for.

    React's streaming server rendering sends each part of the page that was not ready with the
    shell as a hidden ``<div hidden id="S:n">`` at the end of ``<body>``, and a script moves it
    to where its template stands: what a visitor sees there (a shop's product grid, a landing
    page's sections) is that segment, which the walk would otherwise skip as hidden. Each
    segment is handed out once, so segments placed in each other cannot loop.
    """
    key = (node.attributes.get("id") or "") if node.attributes else ""
    if len(key) < 3 or key[1] != ":" or key[0] not in "BP":
        return None
    _segments(root, segments)
    return segments.pop("S:" + key[2:], None)


def duplicate_link(node: LexborNode, attrs: dict[str, str | None]) -> bool:
    """A link marked ``aria-hidden`` and taken out of the tab order (``tabindex=-1``): a card's
    second link to the target its title already links (the teaser under the headline, the
    thumbnail), kept from screen readers and the keyboard so the target is announced once, yet
    shown: its text is the card's content. Not when the text after it repeats its own: the
    link is then an overlay spread over the card whose label the page shows again beside it."""
    if attrs.get("aria-hidden") != "true" or attrs.get("tabindex") != "-1":
        return False
    nxt = node.next
    if nxt is None or nxt.tag != "-text":
        return True
    return (nxt.text_content or "").strip() != node.text(deep=True).strip()
