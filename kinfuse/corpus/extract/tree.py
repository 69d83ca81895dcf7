"""The single walk over an HTML tree: page chrome skipped, text turned into lines.

One walk over the DOM turns the page into output lines (one per paragraph,
heading, list item or table row) and records, for every block element, the
range of lines it contains (:class:`.lines.Elem`). Chrome subtrees (navigation,
cookie banners, share bars, hidden elements...) are skipped during that walk: what
an element's attributes say is asked of :mod:`.chrome`, what its subtree holds of
:mod:`.nodes`. Every later step (scoring candidates, choosing the main block,
cleaning it) works on those ranges, without touching the tree again.
"""

from __future__ import annotations

import itertools
from typing import Any

from selectolax.lexbor import LexborNode

from .chrome import COMMENT_WORDS, COMMENTS, DROPPED, REVIEW, SHOWN, STYLE_HIDDEN, chrome_class, hiding
from .lines import CELL, Builder
from .nodes import (
    WS,
    duplicate_link,
    is_display_form,
    is_layout_cell,
    item_caption,
    item_header,
    ptext,
    ptext_sizes,
    section_header,
    skip_noscript,
    streamed_segment,
    text_len,
    unplaced_segment,
    wrapper_header,
)

# Elements that never hold article text: their whole subtree is skipped.
# (<noscript> is not among them: see nodes.skip_noscript.)
_DROP_TAGS = frozenset(
    """script style nav header footer aside form iframe svg math canvas
    button select option input textarea label template object embed video audio
    map dialog menu head title meta link base picture source img figcaption""".split()
)
# Block-level elements: each starts and ends a line of output.
_BLOCK_TAGS = frozenset(
    """address article blockquote body center dd details div dl dt fieldset
    figure h1 h2 h3 h4 h5 h6 hgroup hr html li main ol p pre section summary
    table tbody tfoot thead tr ul caption""".split()
)
# Dropped tags that some pages use as the wrapper of their content: kept when they hold most of
# the page's prose (<header> too, without navigation: nodes.wrapper_header). <footer> was tried and
# lost collection pages whose long SEO footer holds most of their prose (benchmarks/README.md).
_WRAPPER_TAGS = frozenset("form aside".split())
# A page with less paragraph text than this (characters) keeps its text elsewhere (forum
# posts as <div>s and <br>s, table layouts): what holds most of the page is measured by text.
# 150 / 300 / 500 / 1000 tried on WCXB dev (benchmarks/README.md); a share of the page's text
# instead (0.05 / 0.1) lost articles whose paragraphs are a small part of a long page.
_FEW_PARAGRAPHS = 500
# Paragraph characters outside a comment section that make an article of their own (a blog
# post of a few paragraphs): its comments are then beside it, however many there are (a post
# with 109 comments), not the page's content. 500 and 2000 on WCXB dev: the same or less.
_ARTICLE_BESIDE = 1000


def walk(root: LexborNode, thread: bool = False) -> Builder:
    """The single pass over the tree: skip chrome, build lines and element ranges.

    ``thread``: the page is a discussion thread, whose replies sit in "comment" blocks, so that
    comment words name no chrome anywhere on it (as inside a comment section kept as content)."""
    b = Builder()
    # A class such as "has-sidebar" or "tag-news" on a page-wide wrapper must
    # not drop the article: a chrome-looking element holding most of the
    # page's paragraph text is kept (its real chrome children still go).
    total_ptext = ptext(root)
    page_text: list[str] = []
    sizes: dict[int, int] = {}  # node id -> ptext, filled per chrome subtree on first need
    segments: dict[str, LexborNode] = {}  # React's streamed segments, found on first need
    total_text: list[int] = []  # the page's text length, on first need
    headers: list[int] = []  # the page's number of <header>s, on first need

    def holds_most_prose(node: LexborNode, share: float = 0.5, once: bool = False) -> bool:
        # once: an element whose own descendants are not asked again (a header, a hidden
        # element: the walk skips them whole, or keeps them when this says yes): one C-side
        # query instead of the per-node pass that caches every descendant's size.
        if total_ptext < _FEW_PARAGRAPHS:
            # A page whose text is not in paragraphs (forum posts as <div>s and <br>s, table
            # layouts, a form wrapping it all): its text is the measure of what holds it.
            if not total_text:
                total_text.append(text_len(root))
            return text_len(node) > share * total_text[0]
        if once:
            return ptext(node) > share * total_ptext
        key = node.mem_id
        if key not in sizes:
            ptext_sizes(node, sizes)
        return sizes[key] > share * total_ptext

    # Items: (node, (in_link, in_pre, in_thread)) to enter a node, or an element
    # index to close. in_thread: inside a comment section kept as the page's
    # content (a forum thread), where comment words no longer mean chrome.
    # The flags travel as one tuple shared by siblings: this loop runs once per
    # node of every page, so it allocates as little as it can.
    stack: list[Any] = [(root, (False, False, thread))]
    frag = b.frag
    while stack:
        item = stack.pop()
        if type(item) is int:
            b.close(item)
            continue
        node, flags = item
        tag = node.tag
        if tag == "-text":
            s = node.text_content
            if not s:
                continue
            if flags[1] and "\n" in s:  # <pre> keeps its line breaks
                for i, part in enumerate(s.split("\n")):
                    if i:
                        b.flush()
                    b.text(part, flags[0])
            else:
                # Texts of two elements run together from a lower-case letter to a capital
                # ("Publisher</span><span>Houghton", "Home</a><a>About") or from a letter to a
                # number ("Pages</span><span>240") are two words that CSS lays out apart (a
                # spec's label and value, a row of links): a space between. A word split over
                # elements ("Java<b>Script</b>") is the rarer case; a text said twice stays run
                # together, for render to say once. On WCXB dev capitals: 108 pages move, 48 up:
                # all +0.0006, collection +0.006, listing +0.0015, product -0.00003; numbers
                # too: 39 more move, 23 up, all +0.00006, product +0.0004, forum -0.0001.
                if frag and s != frag[-1] and _run_together(frag[-1][-1:], s[0], node):
                    frag.append(" ")
                frag.append(s)
                if flags[0]:
                    b.link += len(s.strip())
            continue
        if tag is None or tag[0] == "-":  # comments, doctype
            continue
        if tag in _DROP_TAGS:
            if tag == "template":
                segment = streamed_segment(node, root, segments)
                if segment is not None:  # walked where it is shown, with this place's flags
                    children = list(segment.iter(include_text=True))
                    children.reverse()
                    stack.extend(zip(children, itertools.repeat(flags)))
                continue
            # A <form> wrapping the whole page (ASP.NET, forum moderation
            # forms) is a wrapper, not a search box or sign-up form: it holds most
            # of the page's paragraphs or, on a page without any (table layouts),
            # most of its text; so does an <aside> or a <header> used as a section wrapper.
            # A <header> of a list's item is that item's title, one inside a <section> that section's.
            # A <form> without a control to fill in or press is no form at all (nodes.is_display_form).
            if tag == "header":
                if not (
                    item_header(node, root, headers) or section_header(node) or wrapper_header(node, holds_most_prose)
                ):
                    continue
            elif tag not in _WRAPPER_TAGS or not (
                holds_most_prose(node, 0.5, True) or (tag == "form" and is_display_form(node))
            ):
                continue
        if tag == "br":
            b.flush()
            continue
        if tag == "noscript" and skip_noscript(node, root, page_text):
            continue
        attrs = node.attributes
        attr = ""
        in_link, in_pre, in_thread = flags
        if attrs:  # most elements have none: both checks below would say no
            attr = f"{attrs.get('class') or ''} {attrs.get('id') or ''}".strip()
            hidden = hiding(attrs)
            # aria-hidden hides from screen readers, not from the eye: a card's second link to
            # its target is shown (nodes.duplicate_link).
            if hidden == STYLE_HIDDEN and tag == "a" and duplicate_link(node, attrs):
                hidden = SHOWN
            # A wrapper hidden by its style until scripts run (anti-flicker, unstyled-content
            # guards) holding most of the page is what the visitor reads; the hidden attribute
            # is the page's own "not shown" (a closed tab, a template's copy) and always drops.
            # Only blocks are asked (a wrapper is one; the many hidden icons and labels are not).
            if hidden and (hidden == DROPPED or tag not in _BLOCK_TAGS or not holds_most_prose(node, 0.5, True)):
                # ...but a streamed segment is shown wherever its script puts it: when the walk
                # skipped that place, it is walked here (nodes.unplaced_segment).
                if not (tag == "div" and unplaced_segment(node, root, segments)):
                    continue
            if chrome_class(tag, attrs, COMMENT_WORDS.sub(" ", attr) if in_thread else attr):
                # Comments are content only where they are all the page has (a
                # forum thread of "comments"), never beside an article; customer reviews
                # the same beside a product.
                comments = COMMENTS.search(attr) is not None
                most = 0.85 if comments or REVIEW.search(attr) else 0.5
                if not holds_most_prose(node, most) and not item_caption(node, attr):
                    continue
                # ...and not when the page has an article of its own outside them: in paragraphs,
                # or as the other text of their wrapper (a post written without <p>).
                if comments and not in_thread:
                    if total_ptext - sizes.get(node.mem_id, total_ptext) >= _ARTICLE_BESIDE or _post_beside(node):
                        continue
                if not in_thread and (comments or COMMENT_WORDS.search(attr)):
                    flags = (in_link, in_pre, True)
        block = tag in _BLOCK_TAGS
        if tag in ("td", "th"):
            if is_layout_cell(node):
                block = True
            else:
                b.text(CELL, False)
        elif tag == "a":
            if not in_link:
                flags = (True, in_pre, flags[2])
        elif tag == "pre":
            if not in_pre:
                flags = (flags[0], True, flags[2])
        if block:
            idx = b.open(tag, attr)
            if tag in ("article", "main") or (
                attrs and (attrs.get("role") in ("main", "article") or attrs.get("itemprop") == "articleBody")
            ):
                b.elems[idx].sem = True
            stack.append(idx)
        children = list(node.iter(include_text=True))
        children.reverse()
        stack.extend(zip(children, itertools.repeat(flags)))
    b.flush()
    return b


def _run_together(last: str, first: str, node: LexborNode) -> bool:
    """Text ending in ``last`` and text ``node`` starting with ``first`` are two words run
    together: a lower-case letter, then a capital; a letter, then a number not written as an
    index ("CO<sub>2</sub>", "m<sup>2</sup>": one word)."""
    if first.isupper():
        return last.islower()
    return first.isdigit() and last.isalpha() and node.parent is not None and node.parent.tag not in ("sub", "sup")


def _post_beside(node: LexborNode) -> bool:
    """A post written without paragraphs (a blog's <br>-separated text, a news site's story
    body in <div>s) beside its comment section in one wrapper: the wrapper's text outside the
    comments makes an article of its own, which the paragraph count above does not see."""
    parent = node.parent
    if parent is None or parent.tag in ("body", "html"):
        return False
    return text_len(parent) - text_len(node) >= _ARTICLE_BESIDE


def node_text(node: LexborNode | None) -> str:
    """The text of a node (a title, a heading) on one line; "" for no node."""
    return WS.sub(" ", node.text(deep=True)).strip() if node is not None else ""
