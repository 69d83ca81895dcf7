"""Load a text corpus from URLs, sitemaps, files, strings or datasets, cleaned, with main-text extraction.

The corpus is what kinfuse infuses into a model, so three things matter here:

* only the article text of a web page should reach the model: navigation,
  cookie banners, share bars, related links and footers are noise the model
  would otherwise memorise (see :func:`extract_text`);
* the same text should not reach it twice: exact and near-duplicate
  documents and lines repeated across a site's pages are removed
  (:meth:`Corpus.clean`), since repeats are memorised far more than the rest;
* nothing is lost silently: every input source gets exactly one
  :class:`SourceRecord` saying whether it was kept, skipped or failed and why,
  and a corpus without any document raises :class:`~kinfuse.errors.CorpusError`
  listing every source and the reason it was dropped.

Typical use::

    corpus = Corpus.from_urls(["https://example.org/a", "https://example.org/b"])
    corpus = corpus + Corpus.from_sitemap("https://example.org/sitemap.xml", cache_dir=".cache")
    corpus = corpus + Corpus.from_paths(["notes/", "extra.jsonl.gz"])
    print(corpus.report())
    corpus.save("corpus/")  # documents.jsonl + records.jsonl; Corpus.load("corpus/")
    dataset = corpus.to_dataset()  # columns: text, source, title, fetched_at
"""

from __future__ import annotations

import asyncio
import codecs
import datetime
import email.utils
import functools
import gzip
import hashlib
import json
import math
import os
import random
import re
import socket
import ssl
import threading
import time
import unicodedata
import zlib
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Coroutine, Iterable, Iterator, Mapping, TypeVar
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser
from xml.etree import ElementTree

from selectolax.lexbor import LexborHTMLParser, LexborNode

from .errors import CorpusError

if TYPE_CHECKING:  # datasets is heavy to import; only to_dataset() needs it
    import datasets
    import httpx

__all__ = [
    "Corpus",
    "Document",
    "SourceRecord",
    "extract_text",
    "extract_title",
    "normalize_text",
]

# ---------------------------------------------------------------------------
# Whitespace and text normalisation
# ---------------------------------------------------------------------------

# \s also matches NBSP and other Unicode spaces, which pages use as layout glue.
_WS = re.compile(r"\s+")
_HSPACE = re.compile(r"[^\S\n]+")
# Invisible characters that only get in the way of a tokenizer: controls,
# BOMs and zero-width spaces (ZWJ/ZWNJ stay: some scripts and emoji need them).
_INVISIBLE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\u200b\u2060\ufeff]")
_BLANKS = re.compile(r"\n{3,}")
_WORD = re.compile(r"\w+")


def normalize_text(text: str) -> str:
    """NFC-normalise, collapse spaces within lines and runs of blank lines.

    Single line breaks are kept (they separate list items and table rows);
    two or more become exactly one blank line, so paragraphs stay apart.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _INVISIBLE.sub("", text)
    text = "\n".join(_HSPACE.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", text).strip()


# ---------------------------------------------------------------------------
# HTML main-text extraction
# ---------------------------------------------------------------------------
#
# One walk over the DOM turns the page into output lines (one per paragraph,
# heading, list item or table row) and records, for every block element, the
# range of lines it contains. Chrome subtrees are skipped during that walk.
# Every later step (scoring candidates, choosing the main block, cleaning it)
# works on those ranges with prefix sums, without touching the tree again.

# Elements that never hold article text: their whole subtree is skipped.
_DROP_TAGS = frozenset(
    """script style noscript nav header footer aside form iframe svg math canvas
    button select option input textarea label template object embed video audio
    map dialog menu head title meta link base picture source img figcaption""".split()
)
# Block-level elements: each starts and ends a line of output.
_BLOCK_TAGS = frozenset(
    """address article blockquote body center dd details div dl dt fieldset
    figure h1 h2 h3 h4 h5 h6 hgroup hr html li main ol p pre section summary
    table tbody tfoot thead tr ul caption""".split()
)
_HEADINGS = frozenset("h1 h2 h3 h4 h5 h6".split())
# ARIA landmarks that are page chrome rather than the main content.
_DROP_ROLES = frozenset(
    "navigation banner contentinfo complementary search menu menubar dialog alertdialog tablist".split()
)
# class/id fragments marking chrome. Long words match as substrings
# ("sharebar", "relatedPosts"); short ones only as whole tokens, because "ad"
# or "nav" as substrings would hit "header", "read", "canvas"...
_JUNK_SUBSTR = re.compile(
    r"navigation|navbar|menu|cookie|consent|gdpr|footer|sidebar|side-bar|sharing|"
    r"share|social|comment|disqus|advert|sponsor|related|breadcrumb|newsletter|"
    r"subscri|signup|sign-up|popup|modal|outbrain|taboola|recirc|recommend|"
    r"trending|masthead|skip-link|skiplink|promo|paywall|byline|author-bio|"
    r"popular|toolbar|pagination|jump-link|more-stories|read-more|readmore|"
    r"widget|tags|overlay|banner|caption|credit",
    re.I,
)
_JUNK_TOKENS = frozenset("nav ad ads adv hidden hide tag print rss login share".split())
# class/id fragments of the article itself ("article-body", "post-content"):
# they veto a junk match unless the junk word is one of the strong ones.
_GOOD = re.compile(r"article|body|content|entry|main|post|story|text|blog|prose|column", re.I)
_STRONG_JUNK = re.compile(
    r"comment|cookie|consent|gdpr|newsletter|subscri|related|share|social|"
    r"breadcrumb|outbrain|taboola|recirc|recommend|sidebar|footer|navigation|navbar|"
    r"menu|advert|sponsor|promo|popup|modal|banner|widget|byline|tags",
    re.I,
)
# For scoring candidates: class/id words that lean towards / away from content.
_POSITIVE = re.compile(r"article|body|content|entry|hentry|main|page|post|text|blog|story|prose", re.I)
_NEGATIVE = re.compile(
    r"hidden|banner|combx|comment|contact|foot|footnote|masthead|media|meta|"
    r"outbrain|promo|related|scroll|share|shoutbox|sidebar|skyscraper|sponsor|"
    r"shopping|tags|tool|widget|caption|credit",
    re.I,
)
# A comment section ("comments", "comment-list", id="disqus_thread") can hold
# more text than the article but never wraps it, unlike "has-comments".
_COMMENTS = re.compile(r"(?:^|\s)(?:comments?|disqus)(?:[-_\s]|$)", re.I)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_TOKEN_SPLIT = re.compile(r"[\s_\-]+")
_COMMAS = re.compile(r"[,،、，]")
_SENTENCE_END = re.compile(r"\.( |$)")

_CELL = "\x00"  # marks a table-cell boundary inside a line being built
# Lines at least this share link text are pointers elsewhere ("Read more",
# "Related: ...", teaser headlines), not prose of the article.
_LINK_LINE = 0.75


class _Elem:
    """What the extractor keeps about one block element."""

    __slots__ = ("tag", "parent", "start", "end", "attr", "score", "scored", "sem", "children")

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


class _Builder:
    """Accumulates output lines and the element index during the walk."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.owner: list[int] = []  # innermost block element of each line
        self.link_chars: list[int] = []
        self.elems: list[_Elem] = []
        self._frag: list[str] = []
        self._link = 0
        self._open: list[int] = []  # stack of open block elements

    def text(self, s: str, in_link: bool) -> None:
        self._frag.append(s)
        if in_link:
            self._link += len(s.strip())

    def flush(self) -> None:
        if not self._frag:
            return
        raw = "".join(self._frag)
        link, self._frag, self._link = self._link, [], 0
        if _CELL in raw:
            cells = (_WS.sub(" ", c).strip() for c in raw.split(_CELL))
            line = " | ".join(c for c in cells if c)
        else:
            line = _WS.sub(" ", raw).strip()
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
        self.elems.append(_Elem(tag, parent, len(self.lines), attr))
        if parent >= 0:
            self.elems[parent].children.append(idx)
        self._open.append(idx)
        return idx

    def close(self, idx: int) -> None:
        self.flush()
        self._open.pop()
        self.elems[idx].end = len(self.lines)


def _hidden_or_chrome_role(attrs: dict[str, str | None]) -> bool:
    """Hidden elements and ARIA chrome landmarks: dropped whatever they hold."""
    if "hidden" in attrs or attrs.get("aria-hidden") == "true":
        return True
    style = attrs.get("style")
    if style and _HIDDEN_STYLE.search(style):
        return True
    return (attrs.get("role") or "").lower() in _DROP_ROLES


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
    if _JUNK_SUBSTR.search(attr) is None:
        tokens = {t.lower() for t in _TOKEN_SPLIT.split(attr)}
        if not tokens & _JUNK_TOKENS:
            return False
    # "post-content tags-visible" is the article; "comment-body" is not.
    return not (_GOOD.search(attr) and not _STRONG_JUNK.search(attr))


def _is_layout_cell(node: LexborNode) -> bool:
    """A td holding paragraphs or nested tables is page layout, not a data cell."""
    return node.css_first("p, div, table, ul, ol, h1, h2, h3, h4, blockquote, br") is not None


def _ptext(node: LexborNode) -> int:
    """Characters of paragraph text under a node (a C-side query)."""
    return sum(len(p.text(deep=True)) for p in node.css("p"))


def _walk(root: LexborNode) -> _Builder:
    """The single pass over the tree: skip chrome, build lines and element ranges."""
    b = _Builder()
    # A class such as "has-sidebar" or "tag-news" on a page-wide wrapper must
    # not drop the article: a chrome-looking element holding most of the
    # page's paragraph text is kept (its real chrome children still go).
    total_ptext = _ptext(root)
    # Items: (node, in_link, in_pre) to enter a node, or an element index to close.
    stack: list[Any] = [(root, False, False)]
    while stack:
        item = stack.pop()
        if isinstance(item, int):
            b.close(item)
            continue
        node, in_link, in_pre = item
        tag = node.tag
        if tag == "-text":
            s = node.text_content
            if not s:
                continue
            if in_pre and "\n" in s:  # <pre> keeps its line breaks
                for i, part in enumerate(s.split("\n")):
                    if i:
                        b.flush()
                    b.text(part, in_link)
            else:
                b.text(s, in_link)
            continue
        if tag is None or tag[0] == "-" or tag in _DROP_TAGS:  # comments, doctype
            continue
        if tag == "br":
            b.flush()
            continue
        attrs = node.attributes
        attr = f"{attrs.get('class') or ''} {attrs.get('id') or ''}".strip()
        if _hidden_or_chrome_role(attrs):
            continue
        if _chrome_class(tag, attrs, attr) and (
            _COMMENTS.search(attr) or not (total_ptext and _ptext(node) > 0.5 * total_ptext)
        ):
            continue
        block = tag in _BLOCK_TAGS
        if tag in ("td", "th"):
            if _is_layout_cell(node):
                block = True
            else:
                b.text(_CELL, False)
        elif tag == "a":
            in_link = True
        elif tag == "pre":
            in_pre = True
        if block:
            idx = b.open(tag, attr)
            if (
                tag in ("article", "main")
                or attrs.get("role") in ("main", "article")
                or attrs.get("itemprop") == "articleBody"
            ):
                b.elems[idx].sem = True
            stack.append(idx)
        for child in reversed(list(node.iter(include_text=True))):
            stack.append((child, in_link, in_pre))
    b.flush()
    return b


def _class_weight(attr: str) -> float:
    if not attr:
        return 0.0
    w = 0.0
    if _NEGATIVE.search(attr):
        w -= 25
    if _POSITIVE.search(attr):
        w += 25
    return w


_TAG_WEIGHT = {
    "div": 5.0, "article": 10.0, "main": 5.0, "section": 3.0, "pre": 3.0, "td": 3.0,
    "blockquote": 3.0, "address": -3.0, "ol": -3.0, "ul": -3.0, "dl": -3.0, "dd": -3.0,
    "dt": -3.0, "li": -3.0, "h1": -5.0, "h2": -5.0, "h3": -5.0, "h4": -5.0, "h5": -5.0,
    "h6": -5.0, "th": -5.0,
}  # fmt: skip


class _Page:
    """The walked page plus prefix sums for O(1) per-element statistics."""

    def __init__(self, b: _Builder) -> None:
        self.b = b
        n = len(b.lines)
        chars = [0] * (n + 1)
        links = [0] * (n + 1)
        for i, line in enumerate(b.lines):
            chars[i + 1] = chars[i] + len(line)
            links[i + 1] = links[i] + b.link_chars[i]
        self.chars = chars
        self.links = links
        # "Good" characters: prose-like lines (long enough, few links, not a
        # heading or list item). Used to tell article text from chrome.
        good = [0] * (n + 1)
        for i, line in enumerate(b.lines):
            g = 0
            if len(line) >= 40 and b.link_chars[i] < 0.3 * len(line):
                owner = b.owner[i]
                tag = b.elems[owner].tag if owner >= 0 else ""
                if tag not in _HEADINGS and tag not in ("li", "tr", "dt", "dd"):
                    g = len(line)
            good[i + 1] = good[i] + g
        self.good = good

    def good_len(self, e: _Elem) -> int:
        return self.good[e.end] - self.good[e.start]

    def text_len(self, e: _Elem) -> int:
        return self.chars[e.end] - self.chars[e.start]

    def link_density(self, e: _Elem) -> float:
        total = self.text_len(e)
        return (self.links[e.end] - self.links[e.start]) / total if total else 0.0


def _score(page: _Page) -> list[int]:
    """Readability-style: paragraphs vote for their parent and ancestors."""
    b = page.b
    elems = b.elems
    scored: list[int] = []
    for i, line in enumerate(b.lines):
        owner = b.owner[i]
        if owner < 0:
            continue
        tag = elems[owner].tag
        if tag in _HEADINGS or tag in ("tr", "li", "dt", "figcaption", "caption"):
            continue
        n = len(line)
        if n < 25:
            continue
        link = b.link_chars[i]
        if link > n * 0.5:
            continue
        points = 1.0 + len(_COMMAS.findall(line)) + min(n // 100, 3)
        # The paragraph's container and its ancestors collect the points,
        # less and less the further up they are.
        anc = elems[owner].parent
        level = 0
        while anc >= 0 and level < 5:
            e = elems[anc]
            if not e.scored:
                e.scored = True
                e.score = _TAG_WEIGHT.get(e.tag, 0.0) + _class_weight(e.attr)
                scored.append(anc)
            e.score += points / (1 if level == 0 else 2 if level == 1 else level * 3)
            anc = e.parent
            level += 1
    for idx in scored:
        e = elems[idx]
        e.score *= 1.0 - page.link_density(e)
    return scored


def _is_ancestor(elems: list[_Elem], anc: int, idx: int) -> bool:
    while idx >= 0:
        if idx == anc:
            return True
        idx = elems[idx].parent
    return False


def _semantic_root(page: _Page) -> int:
    """The innermost semantic article container holding most of the prose, or -1."""
    elems = page.b.elems
    total = page.good[-1]
    best = -1
    if total <= 0:
        return best
    for idx, e in enumerate(elems):
        if e.sem and e.tag not in ("body", "html") and page.good_len(e) >= 0.6 * total:
            best = idx  # document order: later matches are nested deeper
    return best


def _climb(elems: list[_Elem], scored: list[int], top: int, limit: int = -1) -> int:
    """Move from the best block up to the element that holds the whole article.

    Articles split into several sibling sections score as several similar
    candidates; their common ancestor is the article. A parent that scores
    better than the child it came from (from paragraphs elsewhere) is too.
    """
    ranked = sorted(scored, key=lambda i: elems[i].score, reverse=True)[:5]
    top_score = elems[top].score
    alts = [i for i in ranked[1:] if top_score > 0 and elems[i].score / top_score >= 0.75]
    if len(alts) >= 3:
        anc = elems[top].parent
        while anc >= 0 and elems[anc].tag not in ("body", "html") and _within(elems, anc, limit):
            if sum(1 for a in alts if _is_ancestor(elems, anc, a)) >= 3:
                top = anc
                break
            anc = elems[anc].parent
    last = elems[top].score
    threshold = last / 3
    anc = elems[top].parent
    while anc >= 0 and elems[anc].tag not in ("body", "html") and _within(elems, anc, limit):
        e = elems[anc]
        if not e.scored:
            anc = e.parent
            continue
        if e.score < threshold:
            break
        if e.score > last:
            top = anc
            break
        last = e.score
        anc = e.parent
    # A lone child says nothing about its parent's other content: go up.
    while True:
        parent = elems[top].parent
        if parent < 0 or elems[parent].tag in ("body", "html") or len(elems[parent].children) != 1:
            break
        if not _within(elems, parent, limit):
            break
        top = parent
    return top


def _within(elems: list[_Elem], idx: int, limit: int) -> bool:
    return limit < 0 or _is_ancestor(elems, limit, idx)


def _expand(page: _Page, top: int, limit: int = -1) -> int:
    """Climb while what an ancestor adds is mostly prose: split articles.

    Some pages cut one article into several wrappers (one per image or ad
    slot); the first ancestor whose extra text is not prose stops the climb.
    """
    elems = page.b.elems
    cur = top
    while True:
        parent = elems[cur].parent
        if parent < 0 or elems[parent].tag in ("body", "html"):
            return cur
        p, c = elems[parent], elems[cur]
        if c.sem or cur == limit:
            return cur  # the page itself says where the article ends
        extra = page.text_len(p) - page.text_len(c)
        if extra > 0:
            extra_good = page.good_len(p) - page.good_len(c)
            extra_link = (page.links[p.end] - page.links[p.start]) - (page.links[c.end] - page.links[c.start])
            if extra_good < 0.7 * extra or extra_link > 0.2 * extra:
                return cur
        cur = parent


def _select(page: _Page) -> list[tuple[int, int]]:
    """Line ranges of the main content."""
    b = page.b
    elems = b.elems
    if not b.lines:
        return []
    scored = _score(page)
    if not scored:
        return [(0, len(b.lines))]
    # Prefer the page's own markup: when an <article>, <main> or
    # itemprop=articleBody holds most of the prose, the article is in there.
    sem = _semantic_root(page)
    if sem >= 0:
        inside = [i for i in scored if _is_ancestor(elems, sem, i)]
        if inside:
            scored = inside
    top = max(scored, key=lambda i: elems[i].score)
    top_score = elems[top].score

    top = _climb(elems, scored, top, sem)
    top = _expand(page, top, sem)
    top_score = max(top_score, elems[top].score)

    # Siblings that look like more of the same article join it (not beyond
    # a semantic container: the page said where its article ends).
    parent = elems[top].parent
    if parent < 0 or top == sem or elems[top].sem:
        return [(elems[top].start, elems[top].end)]
    threshold = max(10.0, top_score * 0.2)
    top_attr = elems[top].attr
    ranges: list[tuple[int, int]] = []
    for sib in elems[parent].children:
        e = elems[sib]
        if sib == top:
            ranges.append((e.start, e.end))
            continue
        bonus = top_score * 0.2 if top_attr and e.attr == top_attr else 0.0
        if e.scored and e.score + bonus >= threshold:
            ranges.append((e.start, e.end))
            continue
        if e.tag == "p":
            n = page.text_len(e)
            ld = page.link_density(e)
            if n > 80 and ld < 0.25:
                ranges.append((e.start, e.end))
            elif 0 < n <= 80 and ld == 0 and _SENTENCE_END.search(b.lines[e.start]):
                ranges.append((e.start, e.end))
    return ranges


def _clean(page: _Page, ranges: list[tuple[int, int]], title: str = "") -> list[int]:
    """Drop link lists and other low-text blocks inside the chosen content."""
    b = page.b
    elems = b.elems
    keep: list[int] = []
    for start, end in ranges:
        keep.extend(range(start, end))
    if not keep:
        return keep
    lo, hi = min(keep), max(keep) + 1
    drop = set()
    for e in elems:
        if e.start < lo or e.end > hi or e.end <= e.start:
            continue
        if e.tag not in ("ul", "ol", "div", "section", "table", "dl", "aside", "figure"):
            continue
        n = page.text_len(e)
        ld = page.link_density(e)
        weight = _class_weight(e.attr)
        if weight < 0 and n < 1000:
            drop.update(range(e.start, e.end))
        elif ld > 0.5 and e.tag != "table":
            drop.update(range(e.start, e.end))
    title_key = _key(title)
    out = []
    for i in keep:
        if i in drop:
            continue
        line = b.lines[i]
        # Lines that are (almost) all link text point elsewhere: "Read more",
        # "Related: ...", teaser headlines. They are not the article's prose.
        if b.link_chars[i] >= len(line) * _LINK_LINE:
            continue
        # The headline is the page title, kept apart in Document.title.
        if title_key and _is_heading(b, i) and len(line) > 10 and _key(line) in title_key:
            continue
        out.append(i)
    return out


def _key(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _is_heading(b: _Builder, i: int) -> bool:
    owner = b.owner[i]
    return owner >= 0 and b.elems[owner].tag in _HEADINGS


def _render(page: _Page, idxs: list[int]) -> str:
    b = page.b
    parts: list[str] = []
    prev = -2
    for i in idxs:
        owner = b.owner[i]
        if parts:
            # Items of one list, rows of one table and <br>-split lines of one
            # block stay on consecutive lines; other blocks get a blank line.
            tight = owner == prev or (
                owner >= 0
                and prev >= 0
                and b.elems[owner].tag in ("li", "tr", "dt", "dd")
                and b.elems[owner].parent == b.elems[prev].parent
            )
            parts.append("\n" if tight else "\n\n")
        parts.append(b.lines[i])
        prev = owner
    return "".join(parts)


def _node_text(node: LexborNode | None) -> str:
    return _WS.sub(" ", node.text(deep=True)).strip() if node is not None else ""


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
    del url  # no per-site rules, by design
    if not html or not html.strip():
        return ""
    tree = LexborHTMLParser(html)
    root = tree.body or tree.root
    if root is None:
        return ""
    page = _Page(_walk(root))
    idxs = _clean(page, _select(page), _node_text(tree.css_first("title")))
    return normalize_text(_render(page, idxs))


def extract_title(html: str) -> str:
    """The page's ``<title>``, or its first ``<h1>`` when the title is missing or empty."""
    if not html or not html.strip():
        return ""
    tree = LexborHTMLParser(html)
    for selector in ("title", "h1"):
        title = _node_text(tree.css_first(selector))
        if title:
            return unicodedata.normalize("NFC", title)
    return ""


# ---------------------------------------------------------------------------
# Documents and records
# ---------------------------------------------------------------------------


@dataclass
class Document:
    """One text to train on, and where it came from."""

    text: str
    source: str
    title: str = ""
    fetched_at: str = ""  # ISO 8601 (UTC) time of the HTTP response; "" for files and strings


@dataclass
class SourceRecord:
    """What happened to one input source: "kept", "skipped" or "failed", and why."""

    source: str
    status: str
    reason: str = ""
    documents: int = 0
    chars: int = 0
    from_cache: bool = False  # the body was reused from cache_dir after a 304 Not Modified


def _kept(source: str, docs: list[Document], reason: str = "") -> SourceRecord:
    return SourceRecord(source, "kept", reason, len(docs), sum(len(d.text) for d in docs))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------
# Cleaning: duplicates, near-duplicates, boilerplate lines, short documents
# ---------------------------------------------------------------------------

_SHINGLE = 5  # words per shingle for near-duplicate detection


def _dedup_key(text: str) -> str:
    # Case and spacing differences do not make a different document.
    return hashlib.sha1(" ".join(text.split()).casefold().encode("utf-8")).hexdigest()


def _shingles(text: str) -> set[int]:
    """Hashes of the word 5-grams of a text (one shingle for shorter texts)."""
    words = _WORD.findall(text.casefold())
    if len(words) < _SHINGLE:
        return {hash(tuple(words))} if words else set()
    # zip over shifted views builds the 5-tuples in C; hashes stand in for them
    # (a collision can only merge two shingles, which hardly moves a Jaccard).
    return set(map(hash, zip(*(words[k:] for k in range(_SHINGLE)))))


def _near_duplicates(sets: list[set[int] | None], threshold: float) -> dict[int, int]:
    """Map each document whose shingle Jaccard with an earlier kept one is >= threshold to it.

    Exact all-pairs would be quadratic; prefix filtering (as in AllPairs / PPJoin)
    is exact and fast: with shingles in one global order (rarest first), two sets
    with Jaccard >= t must share a shingle among the first |s| - ceil(t*|s|) + 1 of
    each, so only those prefixes are indexed and only sharers are compared.
    ``None`` entries (already removed documents) are passed over.
    """
    df: Counter[int] = Counter()
    for s in sets:
        if s:
            df.update(s)
    repeated = {h for h, count in df.items() if count > 1}
    index: dict[int, list[int]] = defaultdict(list)
    found: dict[int, int] = {}
    for j, s in enumerate(sets):
        if not s:
            continue
        n = len(s)
        # The epsilon keeps float error from shortening the prefix (a longer one is safe).
        p = n - math.ceil(threshold * n - 1e-9) + 1
        # Shingles no other document has come first in the order. When they fill
        # the prefix, the document can neither match nor be matched: skip it
        # without sorting (most documents of a real corpus). Otherwise only the
        # shared shingles can find candidates, so only they are sorted and indexed.
        shared = s & repeated
        if n - len(shared) >= p:
            continue
        prefix = sorted(shared, key=lambda h: (df[h], h))[: p - (n - len(shared))]
        candidates: set[int] = set()
        for h in prefix:
            candidates.update(index.get(h, ()))
        for i in sorted(candidates):  # the earliest kept match is the one named
            other = sets[i]
            assert other is not None
            m = len(other)
            if n < threshold * m or m < threshold * n:  # sizes alone rule it out
                continue
            inter = len(s & other)
            if inter >= threshold * (n + m - inter):
                found[j] = i
                break
        else:
            for h in prefix:
                index[h].append(j)
    return found


def _site(source: str) -> str | None:
    """host[:port] of an http(s) source, the unit for boilerplate lines; None otherwise."""
    if not source.startswith(("http://", "https://")):
        return None
    try:
        return urlsplit(source).netloc.lower() or None
    except ValueError:
        return None


def _boilerplate_lines(texts: dict[int, str], sources: dict[int, str]) -> tuple[dict[int, str], int, int]:
    """Remove lines repeated across many pages of one site (footers, bylines, notices).

    A line is boilerplate for a site with at least 3 pages when it appears in at
    least half of them and in at least 3. Returns the changed texts, the number of
    distinct boilerplate lines and the number of line occurrences removed.
    """
    by_site: dict[str, list[int]] = defaultdict(list)
    for i in texts:
        site = _site(sources[i])
        if site is not None:
            by_site[site].append(i)
    changed: dict[int, str] = {}
    distinct = occurrences = 0
    for idxs in by_site.values():
        if len(idxs) < 3:
            continue
        need = max(3, math.ceil(len(idxs) / 2))
        df: Counter[str] = Counter()
        for i in idxs:
            df.update({line for line in texts[i].split("\n") if line})
        common = {line for line, count in df.items() if count >= need}
        if not common:
            continue
        distinct += len(common)
        for i in idxs:
            lines = texts[i].split("\n")
            kept = [line for line in lines if line not in common]
            if len(kept) != len(lines):
                occurrences += sum(1 for line in lines if line in common)
                changed[i] = normalize_text("\n".join(kept))
    return changed, distinct, occurrences


_CLEANING_LABELS = {
    "exact_duplicates": "exact duplicate(s)",
    "near_duplicates": "near-duplicate(s)",
    "boilerplate_lines": "boilerplate line(s)",
    "boilerplate_lines_removed": "boilerplate line occurrence(s) removed",
    "emptied_by_boilerplate": "document(s) left empty by boilerplate removal",
    "too_short": "too short",
}


# ---------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------


class Corpus:
    """Documents plus one :class:`SourceRecord` per input source.

    Build one with :meth:`from_urls`, :meth:`from_url_file`, :meth:`from_sitemap`,
    :meth:`from_paths`, :meth:`from_texts`, :meth:`from_documents`,
    :meth:`from_dataset` or :meth:`load`, and combine them with ``+``. A corpus
    always holds at least one document: otherwise the constructor raises
    :class:`CorpusError` listing every source and why it was dropped.

    ``cleaning`` holds the counts of the last :meth:`clean` passes (summed over
    ``+``); it is empty when the corpus was never cleaned.
    """

    def __init__(
        self,
        documents: Iterable[Document],
        records: Iterable[SourceRecord],
        cleaning: Mapping[str, int] | None = None,
    ) -> None:
        self.documents: list[Document] = list(documents)
        self.records: list[SourceRecord] = list(records)
        self.cleaning: dict[str, int] = dict(cleaning or {})
        if not self.documents:
            raise CorpusError(_empty_message(self.records))
        # Which record each document came from, so that cleaning can update the
        # right record. Loaders set it exactly (_make); for documents and records
        # given by hand, a document belongs to the record of the same source, or
        # of its "<source>:<line>" prefix (JSONL/JSON rows).
        by_source: dict[str, int] = {}
        for i, r in enumerate(self.records):
            by_source.setdefault(r.source, i)
        self._owner: list[int] = [
            by_source.get(d.source, by_source.get(d.source.rsplit(":", 1)[0], -1)) for d in self.documents
        ]

    @classmethod
    def _make(
        cls,
        results: Iterable[tuple[list[Document], SourceRecord]],
        cleaning: Mapping[str, int] | None = None,
    ) -> Corpus:
        """A corpus from (documents, record) pairs, each document owned by its pair's record."""
        docs: list[Document] = []
        records: list[SourceRecord] = []
        owners: list[int] = []
        for doc_list, record in results:
            owners.extend([len(records)] * len(doc_list))
            docs.extend(doc_list)
            records.append(record)
        corpus = cls(docs, records, cleaning)
        corpus._owner = owners
        return corpus

    # -- constructors ------------------------------------------------------

    @classmethod
    def from_texts(cls, texts: Iterable[str], sources: Iterable[str] | None = None) -> Corpus:
        """One document per non-empty string; ``sources`` default to "text:<index>"."""
        texts = list(texts)
        names = [f"text:{i}" for i in range(len(texts))] if sources is None else [str(s) for s in sources]
        if len(names) != len(texts):
            raise CorpusError(
                f"from_texts got {len(texts)} texts but {len(names)} sources; give one source per text"
            )
        return cls._make(_text_result(text, source) for text, source in zip(texts, names))

    @classmethod
    def from_documents(cls, documents: Iterable[Document]) -> Corpus:
        """Wrap ready-made documents (their text is normalised; empty ones are skipped)."""
        return cls._make(
            _text_result(d.text, d.source, d.title, d.fetched_at) for d in documents
        )

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        text_column: str = "text",
        *,
        source_column: str = "source",
        title_column: str = "title",
        dedup: bool = False,
    ) -> Corpus:
        """One document per row of a ``datasets.Dataset`` (or any iterable of dict rows).

        ``source_column``, ``title_column`` and a ``fetched_at`` column are used
        when present (so ``Corpus.from_dataset(corpus.to_dataset())`` round-trips);
        sources otherwise default to "dataset:<row>". Rows whose text is missing,
        not a string or empty get a "skipped" record. ``dedup=True`` runs
        :meth:`clean` (off by default: a dataset is usually curated already).
        """
        columns = getattr(dataset, "column_names", None)
        if isinstance(columns, dict):  # a DatasetDict: the caller must pick a split
            raise CorpusError(f"from_dataset needs one split, not a DatasetDict (splits: {sorted(columns)})")
        if isinstance(columns, list) and text_column not in columns:
            raise CorpusError(f"dataset has no column {text_column!r}; its columns are {columns}")
        results = []
        for i, row in enumerate(dataset):
            source = str(row.get(source_column) or f"dataset:{i}")
            text = row.get(text_column)
            results.append(
                _text_result(text, source, str(row.get(title_column) or ""), str(row.get("fetched_at") or ""))
            )
        corpus = cls._make(results)
        return corpus.clean() if dedup else corpus

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path], *, dedup: bool = True, min_chars: int = 1) -> Corpus:
        """Load files and directories (recursively, in sorted order).

        .html/.htm → :func:`extract_text`; .txt/.md → the text; .jsonl → one
        document per line's "text"; .json → a list of objects with "text" (or
        one such object); any of these may be gzipped (.gz). Other suffixes
        get a "skipped" record. A missing path raises :class:`CorpusError`.
        Hidden files and directories (".git", ".DS_Store") inside a
        directory are not corpus material and are passed over.

        ``dedup`` (on by default) runs :meth:`clean`: exact and near-duplicate
        documents and boilerplate lines of web sources are removed;
        ``min_chars`` drops shorter documents either way.
        """
        paths = [Path(p) for p in paths]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise CorpusError("; ".join(f"no such file or directory: {m}" for m in missing))
        files: list[Path] = []
        for p in paths:
            if p.is_dir():
                files.extend(
                    f
                    for f in sorted(p.rglob("*"))
                    if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
                )
            else:
                files.append(p)
        corpus = cls._make(_load_file(f) for f in files)
        return corpus.clean(dedup=dedup, boilerplate=dedup, min_chars=min_chars)

    @classmethod
    def from_urls(
        cls,
        urls: Iterable[str],
        *,
        timeout: float = 20.0,
        concurrency: int = 8,
        per_host: int = 4,
        retries: int = 2,
        user_agent: str = "kinfuse/0.1 (+https://github.com/kinfuse)",
        max_bytes: int = 20_000_000,
        min_chars: int = 1,
        respect_robots: bool = False,
        cache_dir: str | Path | None = None,
        dedup: bool = True,
    ) -> Corpus:
        """Fetch web pages concurrently and keep their main text.

        At most ``concurrency`` requests run at once, at most ``per_host`` per
        host. Redirects are followed (up to 10; a loop fails naming the
        chain). Connection errors, 429 and 5xx are retried ``retries`` times
        with exponential backoff and jitter (a Retry-After is honoured,
        capped). Bodies over ``max_bytes`` are skipped; so are content types
        other than HTML, XHTML and plain text, binary bodies served as text,
        and pages whose text is shorter than ``min_chars``. Errors (HTTP
        status, timeout, DNS, TLS, refused connection, invalid URL) give a
        "failed" record naming them.

        ``respect_robots``: read each host's /robots.txt once and skip the
        URLs it disallows for ``user_agent`` ("disallowed by robots.txt").
        ``cache_dir``: keep every response body and its headers there; a
        rerun revalidates with If-None-Match / If-Modified-Since and reuses
        the stored body on 304 (the record's ``from_cache`` says so).
        ``dedup`` (on by default) runs :meth:`clean` on the result.

        Runs its own event loop; it works from any thread, and from inside a
        running loop (e.g. a notebook) by fetching on a helper thread.
        """
        options = _fetch_options(
            timeout=timeout, concurrency=concurrency, per_host=per_host, retries=retries,
            user_agent=user_agent, max_bytes=max_bytes, respect_robots=respect_robots, cache_dir=cache_dir,
        )  # fmt: skip
        results = _run(_crawl(options, urls=[str(u).strip() for u in urls]))
        return cls._make(results).clean(dedup=dedup, boilerplate=dedup, min_chars=min_chars)

    @classmethod
    def from_url_file(cls, path: str | Path, **options: Any) -> Corpus:
        """:meth:`from_urls` on a text file with one URL per line.

        Blank lines and lines starting with "#" are ignored. ``options`` are
        the keyword options of :meth:`from_urls`.
        """
        path = Path(path)
        try:
            content = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise CorpusError(f"no such URL file: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CorpusError(f"cannot read URL file {path}: {exc}") from exc
        urls = [s for s in (line.strip() for line in content.splitlines()) if s and not s.startswith("#")]
        if not urls:
            raise CorpusError(f"empty corpus: {path} lists no URL (one per line; '#' starts a comment)")
        return cls.from_urls(urls, **options)

    @classmethod
    def from_sitemap(cls, url: str, *, limit: int | None = None, **options: Any) -> Corpus:
        """Fetch every page listed in a sitemap.xml (gzipped or not), following sitemap indexes.

        Nested indexes are followed up to 5 levels; a sitemap listed twice is
        read once. Each sitemap gets its own record ("kept" with the number
        of URLs it listed, or "failed"/"skipped" with the reason), then each
        page one as in :meth:`from_urls`. A page listed in several sitemaps is
        fetched once. ``limit`` caps the number of pages (in sitemap order).
        ``options`` are the keyword options of :meth:`from_urls`.
        """
        min_chars = options.pop("min_chars", 1)
        dedup = options.pop("dedup", True)
        if limit is not None and limit < 0:
            raise ValueError("from_sitemap needs limit >= 0")
        fetch = _fetch_options(**options)
        results = _run(_crawl(fetch, sitemap=str(url).strip(), limit=limit))
        return cls._make(results).clean(dedup=dedup, boilerplate=dedup, min_chars=min_chars)

    @classmethod
    def load(cls, path: str | Path) -> Corpus:
        """Read a corpus written by :meth:`save`."""
        folder = Path(path)
        docs_file, records_file = folder / "documents.jsonl", folder / "records.jsonl"
        if not docs_file.is_file() or not records_file.is_file():
            raise CorpusError(f"{folder} is not a saved corpus (want documents.jsonl and records.jsonl)")
        try:
            records = [SourceRecord(**row) for row in read_jsonl(records_file)]
            docs: list[Document] = []
            owners: list[int] = []
            for row in read_jsonl(docs_file):
                owner = row.pop("record", -1)
                docs.append(Document(**row))
                owners.append(owner if isinstance(owner, int) and 0 <= owner < len(records) else -1)
        except TypeError as exc:  # fields this version does not know
            raise CorpusError(f"{folder} is not a corpus saved by this version of kinfuse: {exc}") from exc
        cleaning_file = folder / "cleaning.json"
        cleaning = json.loads(cleaning_file.read_text(encoding="utf-8")) if cleaning_file.is_file() else None
        corpus = cls(docs, records, cleaning)
        corpus._owner = owners
        return corpus

    # -- cleaning ------------------------------------------------------------

    def clean(
        self,
        *,
        dedup: bool = True,
        near_dup_threshold: float | None = 0.9,
        boilerplate: bool = True,
        min_chars: int = 0,
    ) -> Corpus:
        """A cleaned copy: duplicates, near-duplicates, boilerplate lines and short texts removed.

        In order: exact duplicates (same text up to case and spacing) and then
        near-duplicates (Jaccard similarity of word 5-gram sets >=
        ``near_dup_threshold``) go, the first occurrence staying (``dedup``);
        lines repeated on at least half, and at least 3, of the pages of one
        site with 3 or more pages are deleted from them (``boilerplate``;
        http(s) sources only), after which pages that became identical go too;
        documents shorter than ``min_chars`` go last. Duplicates are removed
        before counting boilerplate so that copies of one page do not make its
        whole text look like boilerplate.

        Every removed document's record becomes "skipped" with the reason
        ("duplicate of <source>", "near-duplicate of <source>", "shorter than
        N characters"), or, when its source still has other documents, says
        how many were removed. The counts go to :attr:`cleaning` and
        :meth:`report`. Raises :class:`CorpusError` if nothing is left.
        """
        if near_dup_threshold is not None and not 0 < near_dup_threshold <= 1:
            raise ValueError("near_dup_threshold must be in (0, 1], or None to skip near-duplicates")
        texts = {i: d.text for i, d in enumerate(self.documents)}
        sources = {i: d.source for i, d in enumerate(self.documents)}
        removed: dict[int, str] = {}
        stats = dict.fromkeys(_CLEANING_LABELS, 0)

        def drop_exact() -> None:
            first: dict[str, int] = {}
            for i, text in texts.items():
                if i in removed:
                    continue
                key = _dedup_key(text)
                if key in first:
                    removed[i] = f"duplicate of {sources[first[key]]}"
                    stats["exact_duplicates"] += 1
                else:
                    first[key] = i

        if dedup:
            drop_exact()
            if near_dup_threshold is not None:
                sets = [None if i in removed else _shingles(texts[i]) for i in range(len(self.documents))]
                for j, i in _near_duplicates(sets, near_dup_threshold).items():
                    removed[j] = f"near-duplicate of {sources[i]}"
                    stats["near_duplicates"] += 1
        if boilerplate:
            alive = {i: t for i, t in texts.items() if i not in removed}
            changed, distinct, occurrences = _boilerplate_lines(alive, sources)
            texts.update(changed)
            stats["boilerplate_lines"] = distinct
            stats["boilerplate_lines_removed"] = occurrences
            for i, text in changed.items():
                if not text:
                    removed[i] = "no text left after removing boilerplate lines"
                    stats["emptied_by_boilerplate"] += 1
            if dedup and changed:
                drop_exact()  # pages that differed only by their boilerplate
        if min_chars > 0:
            for i, text in texts.items():
                if i not in removed and len(text) < min_chars:
                    removed[i] = f"shorter than {min_chars} characters ({len(text)}; min_chars={min_chars})"
                    stats["too_short"] += 1

        docs: list[Document] = []
        owners: list[int] = []
        records = [replace(r) for r in self.records]
        extra: list[SourceRecord] = []  # removed documents that had no record of their own
        lost: dict[int, list[str]] = defaultdict(list)  # record -> reasons of its removed documents
        for i, doc in enumerate(self.documents):
            owner = self._owner[i]
            if i in removed:
                if owner >= 0:
                    lost[owner].append(removed[i])
                else:
                    extra.append(SourceRecord(doc.source, "skipped", removed[i]))
                continue
            docs.append(doc if texts[i] == doc.text else replace(doc, text=texts[i]))
            owners.append(owner)
        # Documents and characters of every record that owns documents, after cleaning.
        counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for doc, owner in zip(docs, owners):
            if owner >= 0:
                counts[owner][0] += 1
                counts[owner][1] += len(doc.text)
        for idx in set(counts) | set(lost):
            r = records[idx]
            r.documents, r.chars = counts[idx] if idx in counts else (0, 0)
            reasons = lost.get(idx)
            if not reasons:
                continue
            if r.documents == 0 and len(reasons) == 1:
                r.status, r.reason = "skipped", reasons[0]
            else:
                shown = "; ".join(reasons[:3]) + ("; ..." if len(reasons) > 3 else "")
                note = f"{len(reasons)} document(s) removed by cleaning: {shown}"
                if r.documents == 0:
                    r.status, r.reason = "skipped", note
                else:
                    r.reason = f"{r.reason}; {note}" if r.reason else note
        merged = Counter(self.cleaning)
        merged.update(stats)
        corpus = Corpus(docs, records + extra, dict(merged))
        corpus._owner = owners
        return corpus

    # -- container protocol ------------------------------------------------

    def __len__(self) -> int:
        return len(self.documents)

    def __iter__(self) -> Iterator[Document]:
        return iter(self.documents)

    def __getitem__(self, index: int) -> Document:
        return self.documents[index]

    def __add__(self, other: Corpus) -> Corpus:
        if not isinstance(other, Corpus):
            return NotImplemented
        cleaning = Counter(self.cleaning)
        cleaning.update(other.cleaning)
        corpus = Corpus(self.documents + other.documents, self.records + other.records, dict(cleaning))
        shift = len(self.records)
        corpus._owner = self._owner + [o + shift if o >= 0 else -1 for o in other._owner]
        return corpus

    def __repr__(self) -> str:
        chars = sum(len(d.text) for d in self.documents)
        return f"Corpus({len(self.documents)} documents from {len(self.records)} sources, {chars} characters)"

    # -- outputs -----------------------------------------------------------

    def to_dataset(self) -> datasets.Dataset:
        """A ``datasets.Dataset`` with columns ``text``, ``source``, ``title`` and ``fetched_at``."""
        import datasets  # heavy import, deferred until a dataset is wanted

        return datasets.Dataset.from_dict(
            {
                "text": [d.text for d in self.documents],
                "source": [d.source for d in self.documents],
                "title": [d.title for d in self.documents],
                "fetched_at": [d.fetched_at for d in self.documents],
            }
        )

    def save(self, path: str | Path) -> Path:
        """Write the corpus to a folder: documents.jsonl, records.jsonl (and cleaning.json).

        :meth:`load` reads it back with the same documents, records and counts.
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        _write_jsonl(
            folder / "documents.jsonl",
            ({**asdict(d), "record": owner} for d, owner in zip(self.documents, self._owner)),
        )
        _write_jsonl(folder / "records.jsonl", (asdict(r) for r in self.records))
        cleaning_file = folder / "cleaning.json"
        if self.cleaning:
            cleaning_file.write_text(json.dumps(self.cleaning, indent=1) + "\n", encoding="utf-8")
        elif cleaning_file.exists():  # a stale file from an earlier save would mislead load()
            cleaning_file.unlink()
        return folder

    def report(self) -> str:
        """One line per source (status, documents, characters, reason), then totals and cleaning counts."""
        lines = []
        width = max((len(r.status) for r in self.records), default=7)
        for r in self.records:
            line = f"{r.status:<{width}}  {r.source}"
            if r.status == "kept" and r.documents:
                line += f"  ({r.documents} doc{'s' if r.documents != 1 else ''}, {r.chars} chars)"
            if r.from_cache:
                line += "  [from cache]"
            if r.reason:
                line += f"  {r.reason}"
            lines.append(line)
        counts = {s: sum(1 for r in self.records if r.status == s) for s in ("kept", "skipped", "failed")}
        chars = sum(len(d.text) for d in self.documents)
        lines.append(
            f"total: {len(self.records)} sources ({counts['kept']} kept, {counts['skipped']} skipped, "
            f"{counts['failed']} failed), {len(self.documents)} documents, {chars} characters, "
            f"~{chars // 4} tokens (chars/4)"
        )
        if self.cleaning:
            parts = [f"{self.cleaning.get(k, 0)} {label}" for k, label in _CLEANING_LABELS.items()]
            lines.append("cleaning: " + ", ".join(parts))
        return "\n".join(lines)


def _text_result(text: Any, source: str, title: str = "", fetched_at: str = "") -> tuple[list[Document], SourceRecord]:
    if not isinstance(text, str):
        return [], SourceRecord(source, "skipped", f"not a string ({type(text).__name__})")
    text = normalize_text(text)
    if not text:
        return [], SourceRecord(source, "skipped", "no text")
    docs = [Document(text, source, title, fetched_at)]
    return docs, _kept(source, docs)


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)  # a crash mid-write leaves the previous file whole


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """JSON objects, one per non-empty line; a bad line raises CorpusError naming file and line."""
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise CorpusError(f"{path}:{lineno}: not a JSON object")
        rows.append(row)
    return rows


def _empty_message(records: list[SourceRecord]) -> str:
    if not records:
        return "empty corpus: no source was given"
    lines = [f"empty corpus: no document could be loaded from {len(records)} source(s):"]
    for r in records:
        why = r.reason or ("no text" if r.status == "kept" else r.status)
        lines.append(f"  - {r.source}: {r.status} ({why})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Decoding bytes, and telling text from binary
# ---------------------------------------------------------------------------

_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)
# Bytes that never occur in text: C0 controls other than tab, LF, VT, FF, CR, ESC.
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 11, 12, 13, 27)) + b"\x7f"
_TEXT_BYTES = bytes(b for b in range(256) if b not in _CONTROL_BYTES)
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _binary_reason(raw: bytes) -> str | None:
    """Why a body that claims to be text is not (NUL bytes, control bytes), or None."""
    if raw.startswith(_UTF16_BOMS):  # UTF-16 text is full of NULs, legitimately
        return None
    sample = raw[:65536]
    if b"\x00" in sample:
        return "NUL bytes"
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    if sample and controls > 0.05 * len(sample):
        return f"{controls / len(sample):.0%} control bytes"
    return None


def _codec_ok(name: str | None) -> bool:
    if not name:
        return False
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _decode(raw: bytes, declared: str | None = None, html: bool = True) -> tuple[str, str]:
    """Text of a body and a note on decoding problems ("" when there were none).

    The charset comes from a byte-order mark, else the declared one (the
    Content-Type header), else a ``<meta charset>``, else UTF-8; a body that is
    not valid UTF-8 and declares nothing is decoded as windows-1252, the
    fallback browsers use for legacy Western pages. Invalid byte sequences in
    the chosen charset become U+FFFD, and the note says how many there were.
    """
    if raw.startswith(codecs.BOM_UTF8):
        name: str | None = "utf-8"
        raw = raw[3:]
    elif raw.startswith(_UTF16_BOMS):
        name = "utf-16"
    else:
        name = declared if _codec_ok(declared) else None
        if name is None and html:
            m = _META_CHARSET.search(raw[:4096])
            meta = m.group(1).decode("ascii", "replace") if m else None
            # A <meta charset=utf-16> in a page that reached us as bytes is a
            # mislabelled 8-bit page: browsers read it as UTF-8 too.
            if meta and meta.lower().startswith("utf-16"):
                meta = "utf-8"
            name = meta if _codec_ok(meta) else None
    if name is None:
        try:
            return raw.decode("utf-8"), ""
        except UnicodeDecodeError:
            text = raw.decode("windows-1252", errors="replace")
            return text, "not valid UTF-8 and no charset declared: decoded as windows-1252"
    try:
        return raw.decode(name), ""
    except UnicodeDecodeError:
        text = raw.decode(name, errors="replace")
        label = codecs.lookup(name).name.upper()
        return text, f"invalid {label}: {text.count(chr(0xFFFD))} bad byte sequence(s) replaced with U+FFFD"


def _decode_html(raw: bytes, declared: str | None = None) -> str:
    """Decode an HTML page (see :func:`_decode`)."""
    return _decode(raw, declared)[0]


def _mostly_undecodable(text: str) -> bool:
    """True when over a tenth of a decoded body is U+FFFD: bytes in no charset we know."""
    sample = text[:65536]
    return bool(sample) and sample.count("\ufffd") > 0.1 * len(sample)

# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

_HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
_TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})


def _json_doc(obj: Any, source: str) -> Document | None:
    """A document from one JSON value: an object with "text", or a bare string."""
    if isinstance(obj, str):
        text, title, src, fetched = obj, "", source, ""
    elif isinstance(obj, dict) and isinstance(obj.get("text"), str):
        text = obj["text"]
        title = str(obj.get("title") or "")
        src = str(obj.get("source") or obj.get("url") or source)
        fetched = str(obj.get("fetched_at") or "")
    else:
        return None
    text = normalize_text(text)
    return Document(text, src, title, fetched) if text else None


def _load_file(path: Path) -> tuple[list[Document], SourceRecord]:
    """Documents of one file and its record; never raises for bad content."""
    source = str(path)
    name = path.name.lower()
    compressed = name.endswith(".gz")
    suffix = Path(name[:-3]).suffix if compressed else path.suffix.lower()
    if suffix not in _HTML_SUFFIXES | _TEXT_SUFFIXES | {".jsonl", ".json"}:
        return [], SourceRecord(source, "skipped", f"unsupported file type {suffix or '(no suffix)'!r}")
    try:
        raw = path.read_bytes()
        if compressed:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        return [], SourceRecord(source, "failed", f"cannot read: {exc}")

    if suffix in _HTML_SUFFIXES | _TEXT_SUFFIXES:
        binary = _binary_reason(raw)
        if binary:
            return [], SourceRecord(source, "skipped", f"binary content, not text ({binary})")
    if suffix in _HTML_SUFFIXES:
        html = _decode_html(raw)
        text = extract_text(html)
        if not text:
            return [], SourceRecord(source, "skipped", "no text")
        docs = [Document(text, source, extract_title(html))]
        return docs, _kept(source, docs)
    content = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
    if suffix in _TEXT_SUFFIXES:
        text = normalize_text(content)
        if not text:
            return [], SourceRecord(source, "skipped", "no text")
        docs = [Document(text, source)]
        return docs, _kept(source, docs)

    docs = []
    problems: list[str] = []
    if suffix == ".jsonl":
        for lineno, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                doc = _json_doc(json.loads(line), f"{source}:{lineno}")
            except json.JSONDecodeError as exc:
                problems.append(f"line {lineno}: invalid JSON ({exc.msg})")
                continue
            if doc is None:
                problems.append(f"line {lineno}: no \"text\"")
            else:
                docs.append(doc)
    else:
        try:
            data = json.loads(content)
        except json.JSONDecodeError as exc:
            return [], SourceRecord(source, "failed", f"invalid JSON: {exc}")
        items = data if isinstance(data, list) else [data]
        for i, item in enumerate(items):
            doc = _json_doc(item, f"{source}:{i}")
            if doc is None:
                problems.append(f"item {i}: no \"text\"")
            else:
                docs.append(doc)
    reason = ""
    if problems:
        shown = "; ".join(problems[:3]) + (f"; ... ({len(problems)} in all)" if len(problems) > 3 else "")
        reason = f"{len(problems)} entr{'y' if len(problems) == 1 else 'ies'} without text: {shown}"
    if not docs:
        return [], SourceRecord(source, "skipped", reason or "no text")
    return docs, _kept(source, docs, reason)




# ---------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------

_KEPT_TYPES = frozenset({"text/html", "application/xhtml+xml", "text/plain"})
_MAX_REDIRECTS = 10
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_BACKOFF_BASE = 0.5  # seconds before the first retry; doubles each time, plus jitter
_RETRY_AFTER_CAP = 30.0  # never wait longer than this for one Retry-After
_ROBOTS_MAX_BYTES = 512_000  # RFC 9309 asks parsers to read at least 500 KiB
_SITEMAP_MAX_BYTES = 52_428_800  # the sitemaps.org limit for one uncompressed sitemap
_SITEMAP_MAX_DEPTH = 5  # index -> index -> ... : deeper is a loop or a mistake
_DOCTYPE = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.I)
_HTML_START = re.compile(rb"(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)", re.I | re.S)
# Response headers worth keeping in the cache; the body is stored decoded, so
# Content-Encoding and Content-Length would no longer describe it.
_CACHED_HEADERS = frozenset({"content-type", "etag", "last-modified", "date", "cache-control", "expires"})

T = TypeVar("T")


@dataclass
class _FetchOptions:
    timeout: float
    concurrency: int
    per_host: int
    retries: int
    user_agent: str
    max_bytes: int
    respect_robots: bool
    cache_dir: Path | None


def _fetch_options(
    *,
    timeout: float = 20.0,
    concurrency: int = 8,
    per_host: int = 4,
    retries: int = 2,
    user_agent: str = "kinfuse/0.1 (+https://github.com/kinfuse)",
    max_bytes: int = 20_000_000,
    respect_robots: bool = False,
    cache_dir: str | Path | None = None,
) -> _FetchOptions:
    """Checked fetch options (the keyword options of Corpus.from_urls but min_chars and dedup)."""
    if concurrency < 1 or per_host < 1 or retries < 0 or timeout <= 0 or max_bytes < 1:
        raise ValueError(
            "from_urls needs concurrency >= 1, per_host >= 1, retries >= 0, timeout > 0, max_bytes >= 1"
        )
    cache = Path(cache_dir) if cache_dir is not None else None
    return _FetchOptions(timeout, concurrency, per_host, retries, user_agent, max_bytes, respect_robots, cache)


class _Outcome(Exception):
    """Ends one fetch early: a "failed" or "skipped" record with its reason."""

    def __init__(self, status: str, reason: str, http_status: int = 0) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.http_status = http_status


@dataclass
class _Response:
    """A 2xx response (or a cached body revalidated by a 304)."""

    url: str  # the URL that answered, after redirects
    headers: dict[str, str]  # lower-case names
    body: bytes  # already decoded from any Content-Encoding
    fetched_at: str
    from_cache: bool = False

    @property
    def media(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def charset(self) -> str | None:
        m = _HEADER_CHARSET.search(self.headers.get("content-type", ""))
        return m.group(1) if m else None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A loop already runs in this thread (a notebook, an async app):
    # asyncio.run would refuse, so the fetch gets a loop on its own thread.
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="kinfuse-fetch")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), _RETRY_AFTER_CAP)


def _backoff(attempt: int) -> float:
    # Full jitter keeps many clients that failed together from retrying together.
    return _BACKOFF_BASE * (2**attempt) * (0.5 + random.random())


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"invalid URL: {exc}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"invalid URL {url!r}: only http:// and https:// are supported"
    if not parts.hostname:
        return f"invalid URL {url!r}: no host"
    return None


def _root_cause(exc: BaseException) -> str | None:
    """"tls" or "dns" when an httpx transport error comes from ssl or the resolver."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 10:
        if isinstance(cur, (ssl.SSLError, ssl.CertificateError)):
            return "tls"
        if isinstance(cur, socket.gaierror):
            return "dns"
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return "tls" if "[SSL" in str(exc) else None


def _http_reason(status: int, phrase: str) -> str:
    return f"HTTP {status} {phrase}".strip()


def texts_with_sources(corpus: Any) -> list[tuple[str, str]]:
    """(text, source) for each non-empty document of a Corpus, a list of Documents, dicts or strings:
    the one reading of "documents" that probes, augmentation and rule-written questions share."""
    docs = []
    for i, d in enumerate(corpus):
        if isinstance(d, str):
            docs.append((d, f"document {i + 1}"))
        elif isinstance(d, dict):
            docs.append((d.get("text", ""), str(d.get("source") or f"document {i + 1}")))
        else:
            docs.append((getattr(d, "text", ""), str(getattr(d, "source", "") or f"document {i + 1}")))
    return [(t, s) for t, s in docs if t and t.strip()]


class _Cache:
    """Raw responses on disk: <sha256(url)>.body and .json (URL, headers, fetch time).

    The body is written before its metadata and each through a rename, so a
    crash leaves either a whole entry or one that load() ignores.
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder

    def _paths(self, url: str) -> tuple[Path, Path]:
        key = hashlib.sha256(url.encode("utf-8")).hexdigest()
        return self.folder / f"{key}.json", self.folder / f"{key}.body"

    def load(self, url: str) -> tuple[dict[str, str], bytes] | None:
        meta_path, body_path = self._paths(url)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            body = body_path.read_bytes()
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("url") != url or meta.get("size") != len(body):
            return None  # torn or foreign entry: fetch afresh
        headers = meta.get("headers")
        return (headers, body) if isinstance(headers, dict) else None

    def store(self, url: str, headers: dict[str, str], body: bytes, fetched_at: str) -> None:
        meta_path, body_path = self._paths(url)
        meta = {"url": url, "headers": headers, "size": len(body), "fetched_at": fetched_at}
        try:
            tmp = body_path.with_suffix(".body.tmp")
            tmp.write_bytes(body)
            os.replace(tmp, body_path)
            tmp = meta_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(meta), encoding="utf-8")
            os.replace(tmp, meta_path)
        except OSError:
            pass  # a cache that cannot be written only costs a refetch next time


def _cacheable_headers(headers: httpx.Headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower() in _CACHED_HEADERS}


class _Fetcher:
    """One crawl's shared state: client, concurrency limits, robots.txt rules and cache."""

    def __init__(self, client: httpx.AsyncClient, opt: _FetchOptions) -> None:
        self.client = client
        self.opt = opt
        self.total = asyncio.Semaphore(opt.concurrency)
        self.hosts: dict[str, asyncio.Semaphore] = {}
        self.robots: dict[str, asyncio.Task[tuple[RobotFileParser | None, str]]] = {}
        self.cache = _Cache(opt.cache_dir) if opt.cache_dir is not None else None

    # -- one URL ---------------------------------------------------------------

    async def get(
        self, url: str, *, max_bytes: int, accept: frozenset[str] | None, robots: bool = True
    ) -> _Response:
        """GET a URL, following redirects by hand; raises _Outcome when there is no usable body.

        Redirects are followed here rather than by httpx so that a loop can be
        reported as one, robots.txt is checked for every hop, and each hop's
        response is cached under its own URL.
        """
        chain = [url]
        current = url
        while True:
            if robots and self.opt.respect_robots:
                blocked = await self._robots_block(current)
                if blocked:
                    raise _Outcome("skipped", blocked)
            got = await self._request(current, max_bytes, accept)
            if isinstance(got, _Response):
                return got
            target = urljoin(current, got).split("#", 1)[0]
            problem = _url_problem(target)
            if problem:
                raise _Outcome("failed", f"redirected to an unusable URL: {problem}")
            if target in chain:
                raise _Outcome("failed", "redirect loop: " + " -> ".join(chain + [target]))
            if len(chain) > _MAX_REDIRECTS:
                raise _Outcome("failed", f"too many redirects (more than {_MAX_REDIRECTS}), last to {target}")
            chain.append(target)
            current = target

    async def _request(self, url: str, max_bytes: int, accept: frozenset[str] | None) -> _Response | str:
        """One request (with retries): a response, or the Location of a redirect."""
        import httpx

        cached = self.cache.load(url) if self.cache is not None else None
        conditional: dict[str, str] = {}
        if cached is not None:
            if "etag" in cached[0]:
                conditional["If-None-Match"] = cached[0]["etag"]
            if "last-modified" in cached[0]:
                conditional["If-Modified-Since"] = cached[0]["last-modified"]
        host = (urlsplit(url).hostname or "").lower()
        host_sem = self.hosts.setdefault(host, asyncio.Semaphore(self.opt.per_host))
        attempt = 0
        while True:
            wait: float | None = None
            failure = ""
            status = 0  # the HTTP status of a retryable failure, for robots.txt handling
            # The host slot is taken first so that requests queued for a busy
            # host do not hold global slots other hosts could use.
            async with host_sem, self.total:
                try:
                    async with self.client.stream("GET", url, headers=conditional) as resp:
                        code = resp.status_code
                        if code == 304 and cached is not None:
                            # Not modified: the stored body is current. The 304's
                            # validators replace the stored ones.
                            headers = {**cached[0], **_cacheable_headers(resp.headers)}
                            got = _Response(url, headers, cached[1], _now(), from_cache=True)
                            if self.cache is not None:
                                self.cache.store(url, headers, cached[1], got.fetched_at)
                            return got
                        if code in _REDIRECT_CODES and resp.headers.get("location"):
                            return resp.headers["location"].strip()
                        if code == 429 or code >= 500:
                            failure, status = _http_reason(code, resp.reason_phrase), code
                            wait = _retry_after(resp.headers.get("retry-after"))
                        elif code >= 300:  # 4xx, and 3xx that cannot be followed (or a stray 304)
                            raise _Outcome("failed", _http_reason(code, resp.reason_phrase), code)
                        else:
                            body = await _read_body(resp, max_bytes, accept)
                            got = _Response(url, _cacheable_headers(resp.headers), body, _now())
                            if self.cache is not None:
                                self.cache.store(url, got.headers, body, got.fetched_at)
                            return got
                except httpx.TimeoutException as exc:
                    # A server too slow once is usually too slow again: no retry.
                    reason = f"timeout after {self.opt.timeout:g}s ({type(exc).__name__})"
                    raise _Outcome("failed", reason) from None
                except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
                    raise _Outcome("failed", f"invalid URL: {exc}") from None
                except httpx.TransportError as exc:
                    cause = _root_cause(exc)
                    if cause == "tls":  # a certificate or protocol mismatch does not heal on retry
                        raise _Outcome("failed", f"TLS/SSL error: {exc}") from None
                    if cause == "dns":
                        failure = f"DNS lookup failed for {host}: {exc}"
                    else:  # refused connections, resets: maybe transient
                        failure = f"{type(exc).__name__}: {exc or 'connection failed'}"
            if attempt >= self.opt.retries:
                tries = f" (after {attempt + 1} attempts)" if attempt else ""
                raise _Outcome("failed", failure + tries, status)
            await asyncio.sleep(wait if wait is not None else _backoff(attempt))
            attempt += 1

    # -- robots.txt --------------------------------------------------------------

    async def _robots_block(self, url: str) -> str | None:
        """The skip reason when robots.txt disallows ``url`` for our user agent, else None."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        task = self.robots.get(origin)
        if task is None:  # one fetch per host, however many pages wait on it
            task = self.robots[origin] = asyncio.ensure_future(self._load_robots(origin))
        rules, note = await task
        if rules is None or rules.can_fetch(self.opt.user_agent, url):
            return None
        return "disallowed by robots.txt" + note

    async def _load_robots(self, origin: str) -> tuple[RobotFileParser | None, str]:
        """The parsed rules of one host (None: everything allowed), and a note on how.

        As urllib.robotparser.RobotFileParser.read(): 401/403 disallow
        everything, other 4xx allow everything; a 5xx (after retries)
        disallows everything too, as RFC 9309 asks. An unreachable host is
        let through: the page's own fetch will then record the real error.
        """
        robots_url = origin + "/robots.txt"
        try:
            got = await self.get(robots_url, max_bytes=_ROBOTS_MAX_BYTES, accept=None, robots=False)
        except _Outcome as outcome:
            code = outcome.http_status
            if code in (401, 403) or code >= 500:
                rules = RobotFileParser(robots_url)
                rules.disallow_all = True
                return rules, f" (robots.txt answered HTTP {code})"
            return None, ""
        rules = RobotFileParser(robots_url)
        rules.parse(_decode(got.body, got.charset, html=False)[0].splitlines())
        return rules, ""

    # -- pages -------------------------------------------------------------------

    async def page(self, url: str) -> tuple[list[Document], SourceRecord]:
        try:
            got = await self.get(url, max_bytes=self.opt.max_bytes, accept=_KEPT_TYPES)
        except _Outcome as outcome:
            return [], SourceRecord(url, outcome.status, outcome.reason)
        return _documents_from_response(url, got)

    async def pages(self, urls: list[str]) -> list[tuple[list[Document], SourceRecord]]:
        """Every URL's documents and record, in input order."""
        results: list[tuple[list[Document], SourceRecord] | None] = [None] * len(urls)
        seen: dict[str, int] = {}
        todo: list[int] = []
        for i, url in enumerate(urls):
            problem = _url_problem(url)
            if problem:
                results[i] = ([], SourceRecord(url, "failed", problem))
            elif url in seen:
                results[i] = ([], SourceRecord(url, "skipped", f"duplicate of source #{seen[url]}"))
            else:
                seen[url] = i
                todo.append(i)

        from tqdm.auto import tqdm

        bar = tqdm(total=len(urls), desc="fetching", unit="url", disable=None if len(urls) > 20 else True)
        bar.update(len(urls) - len(todo))

        async def one(i: int) -> None:
            url = urls[i]
            try:
                results[i] = await self.page(url)
            except Exception as exc:  # a bug or an odd server must not lose the other sources
                results[i] = ([], SourceRecord(url, "failed", f"{type(exc).__name__}: {exc}"))
            bar.update(1)

        await asyncio.gather(*(one(i) for i in todo))
        bar.close()
        return [r for r in results if r is not None]

    # -- sitemaps ----------------------------------------------------------------

    async def sitemap(self, url: str, depth: int, seen: set[str]) -> tuple[list[SourceRecord], list[str]]:
        """Records of this sitemap and those it nests, and the page URLs they list, in order."""
        if url in seen:
            return [SourceRecord(url, "skipped", "sitemap already read (listed twice, or a loop)")], []
        seen.add(url)  # before the first await: sibling tasks see it at once
        problem = _url_problem(url)
        if problem:
            return [SourceRecord(url, "failed", problem)], []
        try:
            got = await self.get(url, max_bytes=_SITEMAP_MAX_BYTES, accept=None)
            kind, locs = _parse_sitemap(got.body)
        except _Outcome as outcome:
            return [SourceRecord(url, outcome.status, outcome.reason)], []
        except ValueError as exc:
            return [SourceRecord(url, "failed", f"invalid sitemap: {exc}")], []
        locs = [urljoin(url, loc) for loc in locs]
        cached = got.from_cache
        if kind == "urlset":
            return [SourceRecord(url, "kept", f"sitemap: {len(locs)} page URLs", from_cache=cached)], locs
        if depth >= _SITEMAP_MAX_DEPTH:
            reason = f"sitemap index nested more than {_SITEMAP_MAX_DEPTH} deep: not followed"
            return [SourceRecord(url, "skipped", reason)], []
        record = SourceRecord(url, "kept", f"sitemap index: {len(locs)} sitemaps", from_cache=cached)
        nested = await asyncio.gather(*(self.sitemap(loc, depth + 1, seen) for loc in locs))
        records, pages = [record], []
        for child_records, child_pages in nested:
            records.extend(child_records)
            pages.extend(child_pages)
        return records, pages


def _parse_sitemap(body: bytes) -> tuple[str, list[str]]:
    """("urlset" or "index", the <loc> URLs) of a sitemap; gzip and plain-text lists too.

    Raises _Outcome or ValueError saying what is wrong.
    """
    if body[:2] == b"\x1f\x8b":  # a .xml.gz served as a file, not as Content-Encoding
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, _SITEMAP_MAX_BYTES)
        except zlib.error as exc:
            raise ValueError(f"corrupt gzip ({exc})") from None
        if inflater.unconsumed_tail:
            raise _Outcome("skipped", f"too large: more than {_SITEMAP_MAX_BYTES} bytes uncompressed")
    stripped = body.lstrip(b"\xef\xbb\xbf \t\r\n")
    if _HTML_START.match(stripped):
        raise ValueError("an HTML page, not a sitemap")
    if not stripped.startswith(b"<"):
        # sitemaps.org also allows a plain text file with one URL per line.
        lines = [line.strip() for line in stripped.decode("utf-8", "replace").splitlines() if line.strip()]
        if lines and all(_url_problem(line) is None for line in lines):
            return "urlset", lines
        raise ValueError("neither XML nor a list of URLs")
    # No sitemap needs a DTD; refusing one rules out entity-expansion bombs.
    if _DOCTYPE.search(body):
        raise ValueError("DOCTYPE or ENTITY declarations are not allowed")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise ValueError(f"malformed XML ({exc})") from None

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]  # ignore the namespace

    kind = local(root.tag)
    if kind not in ("urlset", "sitemapindex"):
        raise ValueError(f"root element <{kind}> is neither <urlset> nor <sitemapindex>")
    entry = "url" if kind == "urlset" else "sitemap"
    locs = [
        sub.text.strip()
        for el in root
        if local(el.tag) == entry
        for sub in el
        if local(sub.tag) == "loc" and sub.text and sub.text.strip()
    ]
    return ("urlset" if kind == "urlset" else "index"), locs


async def _crawl(
    opt: _FetchOptions, *, urls: list[str] | None = None, sitemap: str | None = None, limit: int | None = None
) -> list[tuple[list[Document], SourceRecord]]:
    """Fetch pages (given, or listed by a sitemap) with one client and shared limits."""
    import httpx  # deferred: only URL loading needs it

    limits = httpx.Limits(max_connections=opt.concurrency, max_keepalive_connections=opt.concurrency)
    async with httpx.AsyncClient(
        follow_redirects=False,  # _Fetcher.get follows them itself
        timeout=httpx.Timeout(opt.timeout),
        headers={"User-Agent": opt.user_agent},
        limits=limits,
    ) as client:
        fetcher = _Fetcher(client, opt)
        results: list[tuple[list[Document], SourceRecord]] = []
        if sitemap is not None:
            records, listed = await fetcher.sitemap(sitemap, 0, set())
            results.extend(([], r) for r in records)
            # A page listed by several sitemaps is one source, not a duplicate.
            urls = list(dict.fromkeys(listed))
            if limit is not None:
                urls = urls[:limit]
        results.extend(await fetcher.pages(urls or []))
    return results


async def _read_body(resp: httpx.Response, max_bytes: int, accept: frozenset[str] | None) -> bytes:
    """Check the content type (when ``accept`` is given) and size, then read the (decompressed) body."""
    media = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if accept is not None and media and media not in accept:
        raise _Outcome("skipped", f"unsupported content type {media}")
    length = resp.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise _Outcome("skipped", f"too large: {int(length)} bytes > max_bytes={max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:  # also catches compressed bodies that inflate, and no Content-Length
            raise _Outcome("skipped", f"too large: more than max_bytes={max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _documents_from_response(url: str, got: _Response) -> tuple[list[Document], SourceRecord]:
    media = got.media
    raw = got.body
    if not raw.strip():
        return [], SourceRecord(url, "skipped", "empty response body", from_cache=got.from_cache)
    if not media:  # no header: sniff, since servers of static files forget it
        media = "text/html" if raw.lstrip()[:1] == b"<" else "text/plain"
    binary = _binary_reason(raw)
    if binary:
        reason = f"binary content served as {media} ({binary})"
        return [], SourceRecord(url, "skipped", reason, from_cache=got.from_cache)
    decoded, note = _decode(raw, got.charset, html=media != "text/plain")
    if _mostly_undecodable(decoded):
        reason = f"binary content served as {media} (mostly bytes that are not text in {got.charset or 'any charset tried'})"
        return [], SourceRecord(url, "skipped", reason, from_cache=got.from_cache)
    if media == "text/plain":
        text, title = normalize_text(decoded), ""
    else:
        text, title = extract_text(decoded, url), extract_title(decoded)
    notes = [f"redirected to {got.url}"] if got.url != url else []
    if note:
        notes.append(note)
    if not text:
        return [], SourceRecord(url, "skipped", "no text", from_cache=got.from_cache)
    docs = [Document(text, url, title, got.fetched_at)]
    record = _kept(url, docs, "; ".join(notes))
    record.from_cache = got.from_cache
    return docs, record
