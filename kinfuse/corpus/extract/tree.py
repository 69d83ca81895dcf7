"""The single walk over an HTML tree: page chrome skipped, text turned into lines.

One walk over the DOM turns the page into output lines (one per paragraph,
heading, list item or table row) and records, for every block element, the
range of lines it contains (:class:`Elem`). Chrome subtrees (navigation,
cookie banners, share bars, hidden elements...) are skipped during that walk.
Every later step (scoring candidates, choosing the main block, cleaning it)
works on those ranges, without touching the tree again.
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import Any, Callable

from selectolax.lexbor import LexborNode

# Elements that never hold article text: their whole subtree is skipped.
# (<noscript> is not among them: see _skip_noscript.)
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
HEADINGS = frozenset("h1 h2 h3 h4 h5 h6".split())
# ARIA landmarks that are page chrome rather than the main content, tooltips (shown on hover
# beside what they explain: a badge's or a seller rating's fine print) and live regions that
# report the page's state ("Added to your bag", "3 results", a form's error).
_DROP_ROLES = frozenset(
    "navigation banner contentinfo complementary search menu menubar dialog alertdialog tooltip status alert".split()
)
# Disclosure panels: hidden until the visitor opens them (_hiding).
_PANEL_ROLES = frozenset(["region", "tabpanel"])
_PANEL = re.compile(r"accordion|collaps|faq", re.I)


class ClassWords:
    """A pattern of lowercase class/id words, searched case-insensitively.

    With ``re.I`` the regex engine folds case at every position for every
    alternative, which is slow on long utility-CSS class lists, and a page has
    hundreds of distinct ones. An ASCII string (all but a handful of class
    names) is lowered once and searched with the plain pattern instead: the
    same answer (the words are lowercase ASCII), much faster (benchmarks/README.md).
    """

    __slots__ = ("plain", "nocase")

    def __init__(self, pattern: str) -> None:
        self.plain = re.compile(pattern)
        self.nocase = re.compile(pattern, re.I)

    def search(self, attr: str) -> bool:
        if attr.isascii():
            return self.plain.search(attr.lower()) is not None
        return self.nocase.search(attr) is not None


# A forum post's poster block and signature: who wrote it (title, join date, post count,
# flair) and what they append to every post, not what the post says. Strong chrome words, as
# they sit inside "post"/"message" blocks.
_POSTER = r"signature|usertitle|user-title|userdetails|user-details|userextras|user-extras|userinfo|user-info|flair"
# class/id fragments marking chrome. Long words match as substrings
# ("sharebar", "relatedPosts"); short ones only as whole tokens, because "ad"
# or "nav" as substrings would hit "header", "read", "canvas"...
_JUNK_SUBSTR = ClassWords(
    r"navigation|navbar|menu|cookie|consent|gdpr|footer|sidebar|side-bar|sharing|"
    r"share(?!d)|social|comment|disqus|advert|sponsor|related|breadcrumb|newsletter|"
    r"subscri|signup|sign-up|popup|modal|outbrain|taboola|recirc|recommend|"
    r"trending|masthead|skip-link|skiplink|promo|paywall|byline|author-bio|"
    r"popular|toolbar|pagination|jump-link|more-stories|read-more|readmore|"
    r"tags|overlay|banner|caption|credit|reviews|" + _POSTER
)
_JUNK_TOKENS = frozenset("nav ad ads tag print rss login share".split())
# Hiding classes count only as a whole class ("hidden", not "overflow-hidden",
# "hidden-md-down" or "md:hidden"), and not beside a breakpoint class that
# shows the element again ("hidden lg:flex"): utility CSS hides per screen size.
_HIDING_CLASSES = frozenset("hidden hide is-hidden d-none".split())
# class/id fragments of the article itself ("article-body", "post-content"):
# they veto a junk match unless the junk word is one of the strong ones.
_GOOD = ClassWords(r"article|body|content|entry|main|post|story|text|blog|prose|column")
_STRONG_JUNK = ClassWords(
    r"comment|cookie|consent|gdpr|newsletter|subscri|related|share(?!d)|social|"
    r"breadcrumb|outbrain|taboola|recirc|recommend|sidebar|footer|navigation|navbar|"
    r"menu|advert|sponsor|promo|popup|modal|banner|byline|tags|" + _POSTER
)
# A comment section ("comments", "comment-list", id="disqus_thread") can hold
# more text than the article but never wraps it, unlike "has-comments".
_COMMENTS = re.compile(r"(?:^|\s)(?:comments?|disqus)(?:[-_\s]|$)", re.I)
# "p-body-main--withSidebar", "has-sidebar", "mainContainer_noSidebar": a
# wrapper saying how the page is laid out around it, not the sidebar itself. A whole class
# "hide-read-more-ad" / "no-ads" / "without-sidebar" says what the element does without.
_LAYOUT_MODIFIER = re.compile(r"(?:with|no|not|has)[-_]?(?:sidebar|side-bar|comments?|footer|header)", re.I)
_GOES_WITHOUT = re.compile(r"(?<![\w-])(?:hide|no|without)-[\w-]+", re.I)
# Dropped tags that some pages use as the wrapper of their content: kept when they hold most of
# the page's prose (<header> too, without navigation: _wrapper_header). <footer> was tried and
# lost collection pages whose long SEO footer holds most of their prose (benchmarks/README.md).
_WRAPPER_TAGS = frozenset("form aside".split())
_NOSCRIPT_CHECKS = 32
# A page with this many <header>s has item headers: 0 / 3 / 6 tried on WCXB dev (6 kept).
_ITEM_HEADERS = 6
# A page with less paragraph text than this (characters) keeps its text elsewhere (forum
# posts as <div>s and <br>s, table layouts): what holds most of the page is measured by text.
# 150 / 300 / 500 / 1000 tried on WCXB dev (benchmarks/README.md); a share of the page's text
# instead (0.05 / 0.1) lost articles whose paragraphs are a small part of a long page.
_FEW_PARAGRAPHS = 500
_COMMENT_WORDS = re.compile(r"comment|disqus", re.I)
_REVIEW = re.compile(r"review", re.I)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_UTILITY = re.compile(r"[^\s]*[:\[][^\s]*")
_TOKEN_SPLIT = re.compile(r"[\s_\-]+")
# \s also matches NBSP and other Unicode spaces, which pages use as layout glue.
_WS = re.compile(r"\s+")

_CELL = "\x00"  # marks a table-cell boundary inside a line being built


class Elem:
    """What the extractor keeps about one block element."""

    __slots__ = ("tag", "parent", "start", "end", "attr", "score", "scored", "sem", "children", "last")

    def __init__(self, tag: str, parent: int, start: int, attr: str) -> None:
        self.tag = tag
        self.parent = parent
        self.start = start  # first output line inside this element
        self.end = start  # one past the last output line inside it
        self.attr = attr  # class + id, for the content/chrome heuristics
        self.score = 0.0
        self.scored = False
        self.sem = False  # <article>, <main>, role=main/article, itemprop=articleBody
        self.children: list[int] = []
        # Elements are numbered in document order, so an element's descendants
        # are exactly the indices from its own up to ``last``: ancestry in O(1).
        self.last = 0


class Builder:
    """Accumulates output lines and the element index during the walk."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.owner: list[int] = []  # innermost block element of each line
        self.link_chars: list[int] = []
        self.elems: list[Elem] = []
        self.frag: list[str] = []  # text of the line being built (the walk appends to it directly)
        self.link = 0  # link characters in it
        self._open: list[int] = []  # stack of open block elements

    def text(self, s: str, in_link: bool) -> None:
        self.frag.append(s)
        if in_link:
            self.link += len(s.strip())

    def flush(self) -> None:
        if not self.frag:
            return
        raw = "".join(self.frag)
        link, self.link = self.link, 0
        self.frag.clear()
        # " ".join(s.split()) is _WS.sub(" ", s).strip() (str.split and \s share one
        # definition of whitespace), without the regex engine: this runs once per line.
        if _CELL in raw:
            cells = (" ".join(c.split()) for c in raw.split(_CELL))
            line = " | ".join(c for c in cells if c)
        else:
            line = " ".join(raw.split())
        if not line:
            return
        owner = self._open[-1] if self._open else -1
        if owner >= 0 and self.elems[owner].tag == "li":
            line = "- " + line
        self.lines.append(line)
        self.owner.append(owner)
        self.link_chars.append(min(link, len(line)))

    def open(self, tag: str, attr: str) -> int:
        self.flush()
        parent = self._open[-1] if self._open else -1
        idx = len(self.elems)
        self.elems.append(Elem(tag, parent, len(self.lines), attr))
        if parent >= 0:
            self.elems[parent].children.append(idx)
        self._open.append(idx)
        return idx

    def close(self, idx: int) -> None:
        self.flush()
        self._open.pop()
        self.elems[idx].end = len(self.lines)
        self.elems[idx].last = len(self.elems)


# What _hiding says of an element: shown; dropped whatever it holds; hidden by its style or
# aria-hidden, which a wrapper hidden until the page's scripts run also is (kept when it holds
# most of the page's prose).
_SHOWN, _DROPPED, _STYLE_HIDDEN = 0, 1, 2


def _hiding(attrs: dict[str, str | None]) -> int:
    """Hidden elements and ARIA chrome landmarks: :data:`_DROPPED` or :data:`_STYLE_HIDDEN`.

    A collapsed accordion panel is hidden only until its header is clicked (a FAQ's answers, a
    product's details): ARIA's accordion pattern marks it ``role=region``, and page builders
    name it "accordion"/"collapse". What it holds is the page's content. So is a tab panel
    (``role=tabpanel``) other than the one shown: a documentation page's other languages, a
    service page's other plans.
    """
    if not ("hidden" in attrs or "aria-hidden" in attrs or "style" in attrs or "role" in attrs):
        return _SHOWN  # most elements: none of the attributes read below
    role = (attrs.get("role") or "").lower()
    hidden = _DROPPED if "hidden" in attrs else _STYLE_HIDDEN if attrs.get("aria-hidden") == "true" else _SHOWN
    if not hidden:
        style = attrs.get("style")
        if style and _HIDDEN_STYLE.search(style) is not None:
            hidden = _STYLE_HIDDEN
    if hidden:  # the panel test only for hidden elements: most styled ones are not
        if role in _PANEL_ROLES or _PANEL.search(f"{attrs.get('class') or ''} {attrs.get('id') or ''}"):
            return _SHOWN
        return hidden
    return _DROPPED if role in _DROP_ROLES else _SHOWN


def _chrome_class(tag: str, attrs: dict[str, str | None], attr: str) -> bool:
    """True when the class/id names page chrome (menu, share bar, comments...)."""
    if not attr or tag in ("body", "html", "main", "article"):
        return False
    if (attrs.get("role") or "") in ("main", "article") or attrs.get("itemprop") == "articleBody":
        return False
    return _chrome_words(attr)


@functools.lru_cache(maxsize=8192)
def _chrome_words(attr: str) -> bool:
    # Cached: pages repeat the same few class strings hundreds of times.
    attr = _LAYOUT_MODIFIER.sub(" ", attr)
    if "hide-" in attr or "no-" in attr or "without-" in attr:  # the regex only where it can match
        attr = _GOES_WITHOUT.sub(" ", attr)
    # Utility classes with a variant or an arbitrary value ("lg:pt-[calc(var(--banner-h))]",
    # "hover:shadow-menu") style the element; they do not name what it is.
    words = _UTILITY.sub(" ", attr) if (":" in attr or "[" in attr) else attr
    if not _JUNK_SUBSTR.search(words):
        tokens = {t.lower() for t in _TOKEN_SPLIT.split(words)}
        if not tokens & _JUNK_TOKENS:
            classes = attr.lower().split()
            return bool(_HIDING_CLASSES.intersection(classes)) and not any(":" in c for c in classes)
    # "post-content tags-visible" is the article; "comment-body" is not.
    return not (_GOOD.search(words) and not _STRONG_JUNK.search(words))


def _item_caption(node: LexborNode, attr: str) -> bool:
    """A "caption" block holding a heading: an item card's text (a shop's product title and
    price under its photo), not a photo's caption or credit, which holds none."""
    lowered = attr.lower()
    if "caption" not in lowered or _chrome_words(lowered.replace("caption", " ")):
        return False
    return node.css_first("h1, h2, h3, h4, h5, h6") is not None


def _item_header(node: LexborNode, root: LexborNode, headers: list[int]) -> bool:
    """A ``<header>`` heading an item of a list (a news river's teaser, a product card): one of
    many headers on the page, holding a linked heading; the page's own header holds none."""
    if node.css_first("h1 a, h2 a, h3 a, h4 a, h5 a, h6 a") is None:
        return False
    if not headers:
        headers.append(len(root.css("header")))
    return headers[0] >= _ITEM_HEADERS


def _section_header(node: LexborNode) -> bool:
    """A ``<header>`` inside a ``<section>``: that section's heading and lead (a landing page's
    feature blocks, a recipe index's intro), not the page's header, unless it holds navigation.
    Inside an ``<article>`` too was tried: a shop's and a forum's item headers are chrome."""
    parent = node.parent
    while parent is not None and parent.tag not in ("body", "html"):
        if parent.tag == "section":
            return node.css_first("nav, [role=navigation]") is None
        parent = parent.parent
    return False


def _wrapper_header(node: LexborNode, holds_most_prose: Callable[[LexborNode, float, bool], bool]) -> bool:
    """A ``<header>`` used as a section wrapper (Webflow names its page sections so): it holds
    most of the page's prose and no navigation, which the page's own header carries."""
    return holds_most_prose(node, 0.5, True) and node.css_first("nav, [role=navigation]") is None


def _skip_noscript(node: LexborNode, root: LexborNode, page_text: list[str]) -> bool:
    """A <noscript> that only asks to enable JavaScript, or repeats text shown elsewhere.

    Other <noscript> content is kept: server-rendered apps (Discourse's
    crawler view) put the whole page there for clients without scripts.
    """
    text = _WS.sub(" ", node.text(deep=True)).strip()
    if len(text) < 400 and "javascript" in text.lower():
        return True
    if len(text) < 80 or len(page_text) > _NOSCRIPT_CHECKS:
        return False  # past the first few, kept unchecked: each check reads the whole page
    if not page_text:  # the page's whole text, once, on the first noscript that needs it
        page_text.append(_WS.sub(" ", root.text(deep=True)))
    page_text.append("")  # counts the checks
    return page_text[0].count(text[:80]) > 1


def _is_layout_cell(node: LexborNode) -> bool:
    """A td holding paragraphs or nested tables is page layout, not a data cell."""
    return node.css_first("p, div, table, ul, ol, h1, h2, h3, h4, blockquote, br") is not None


def _ptext(node: LexborNode) -> int:
    """Characters of paragraph text under a node (a C-side query)."""
    return sum(len(p.text(deep=True)) for p in node.css("p"))


def _text_len(node: LexborNode) -> int:
    """Characters of text under a node, its scripts' and styles' aside."""
    return len(node.text(deep=True)) - sum(len(s.text(deep=True)) for s in node.css("script, style"))


def _ptext_sizes(top: LexborNode, sizes: dict[int, int]) -> None:
    """Add :func:`_ptext` of ``top`` and of every element under it to ``sizes`` (by node id).

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


def _streamed_segment(node: LexborNode, root: LexborNode, segments: dict[str, LexborNode]) -> LexborNode | None:
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
    if not segments:  # one query per page, on its first streamed template
        segments.update((n.attributes.get("id") or "", n) for n in root.css('div[hidden][id^="S:"]'))
        segments.setdefault("", root)  # marks the query done on pages without segments
    return segments.pop("S:" + key[2:], None)


def walk(root: LexborNode) -> Builder:
    """The single pass over the tree: skip chrome, build lines and element ranges."""
    b = Builder()
    # A class such as "has-sidebar" or "tag-news" on a page-wide wrapper must
    # not drop the article: a chrome-looking element holding most of the
    # page's paragraph text is kept (its real chrome children still go).
    total_ptext = _ptext(root)
    page_text: list[str] = []
    ptext: dict[int, int] = {}  # node id -> _ptext, filled per chrome subtree on first need
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
                total_text.append(_text_len(root))
            return _text_len(node) > share * total_text[0]
        if once:
            return _ptext(node) > share * total_ptext
        key = node.mem_id
        if key not in ptext:
            _ptext_sizes(node, ptext)
        return ptext[key] > share * total_ptext

    # Items: (node, (in_link, in_pre, in_thread)) to enter a node, or an element
    # index to close. in_thread: inside a comment section kept as the page's
    # content (a forum thread), where comment words no longer mean chrome.
    # The flags travel as one tuple shared by siblings: this loop runs once per
    # node of every page, so it allocates as little as it can.
    stack: list[Any] = [(root, (False, False, False))]
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
                frag.append(s)
                if flags[0]:
                    b.link += len(s.strip())
            continue
        if tag is None or tag[0] == "-":  # comments, doctype
            continue
        if tag in _DROP_TAGS:
            if tag == "template":
                segment = _streamed_segment(node, root, segments)
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
            if tag == "header":
                if not (
                    _item_header(node, root, headers) or _section_header(node) or _wrapper_header(node, holds_most_prose)
                ):
                    continue
            elif tag not in _WRAPPER_TAGS or not holds_most_prose(node, 0.5, True):
                continue
        if tag == "br":
            b.flush()
            continue
        if tag == "noscript" and _skip_noscript(node, root, page_text):
            continue
        attrs = node.attributes
        attr = ""
        in_link, in_pre, in_thread = flags
        if attrs:  # most elements have none: both checks below would say no
            attr = f"{attrs.get('class') or ''} {attrs.get('id') or ''}".strip()
            hiding = _hiding(attrs)
            # A wrapper hidden by its style until scripts run (anti-flicker, unstyled-content
            # guards) holding most of the page is what the visitor reads; the hidden attribute
            # is the page's own "not shown" (a closed tab, a template's copy) and always drops.
            # Only blocks are asked (a wrapper is one; the many hidden icons and labels are not).
            if hiding and (hiding == _DROPPED or tag not in _BLOCK_TAGS or not holds_most_prose(node, 0.5, True)):
                continue
            if _chrome_class(tag, attrs, _COMMENT_WORDS.sub(" ", attr) if in_thread else attr):
                # Comments are content only where they are all the page has (a
                # forum thread of "comments"), never beside an article; customer reviews
                # the same beside a product.
                comments = _COMMENTS.search(attr) is not None
                most = 0.85 if comments or _REVIEW.search(attr) else 0.5
                if not holds_most_prose(node, most) and not _item_caption(node, attr):
                    continue
                if not in_thread and (comments or _COMMENT_WORDS.search(attr)):
                    flags = (in_link, in_pre, True)
        block = tag in _BLOCK_TAGS
        if tag in ("td", "th"):
            if _is_layout_cell(node):
                block = True
            else:
                b.text(_CELL, False)
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


def node_text(node: LexborNode | None) -> str:
    """The text of a node (a title, a heading) on one line; "" for no node."""
    return _WS.sub(" ", node.text(deep=True)).strip() if node is not None else ""
