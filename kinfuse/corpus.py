"""Load a text corpus from URLs, files or strings, with main-text extraction for HTML.

The corpus is what kinfuse infuses into a model, so two things matter here:

* only the article text of a web page should reach the model: navigation,
  cookie banners, share bars, related links and footers are noise the model
  would otherwise memorise (see :func:`extract_text`);
* nothing is lost silently: every input source gets exactly one
  :class:`SourceRecord` saying whether it was kept, skipped or failed and why,
  and a corpus without any document raises :class:`~kinfuse.errors.CorpusError`
  listing every source and the reason it was dropped.

Typical use::

    corpus = Corpus.from_urls(["https://example.org/a", "https://example.org/b"])
    corpus = corpus + Corpus.from_paths(["notes/", "extra.jsonl.gz"])
    print(corpus.report())
    dataset = corpus.to_dataset()  # columns: text, source, title
"""

from __future__ import annotations

import asyncio
import codecs
import email.utils
import functools
import gzip
import json
import random
import re
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Coroutine, Iterable, Iterator, TypeVar
from urllib.parse import urlsplit

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
# Documents, records and the corpus
# ---------------------------------------------------------------------------


@dataclass
class Document:
    """One text to train on, and where it came from."""

    text: str
    source: str
    title: str = ""


@dataclass
class SourceRecord:
    """What happened to one input source: "kept", "skipped" or "failed", and why."""

    source: str
    status: str
    reason: str = ""
    documents: int = 0
    chars: int = 0


def _kept(source: str, docs: list[Document], reason: str = "") -> SourceRecord:
    return SourceRecord(source, "kept", reason, len(docs), sum(len(d.text) for d in docs))


class Corpus:
    """Documents plus one :class:`SourceRecord` per input source.

    Build one with :meth:`from_urls`, :meth:`from_paths`, :meth:`from_texts`
    or :meth:`from_documents`, and combine them with ``+``. A corpus always
    holds at least one document: otherwise the constructor raises
    :class:`CorpusError` listing every source and why it was dropped.
    """

    def __init__(self, documents: Iterable[Document], records: Iterable[SourceRecord]) -> None:
        self.documents: list[Document] = list(documents)
        self.records: list[SourceRecord] = list(records)
        if not self.documents:
            raise CorpusError(_empty_message(self.records))

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
        docs: list[Document] = []
        records: list[SourceRecord] = []
        for text, source in zip(texts, names):
            if not isinstance(text, str):
                records.append(SourceRecord(source, "skipped", f"not a string ({type(text).__name__})"))
                continue
            text = normalize_text(text)
            if not text:
                records.append(SourceRecord(source, "skipped", "no text"))
                continue
            doc = Document(text, source)
            docs.append(doc)
            records.append(_kept(source, [doc]))
        return cls(docs, records)

    @classmethod
    def from_documents(cls, documents: Iterable[Document]) -> Corpus:
        """Wrap ready-made documents (their text is normalised; empty ones are skipped)."""
        docs: list[Document] = []
        records: list[SourceRecord] = []
        for d in documents:
            text = normalize_text(d.text or "")
            if not text:
                records.append(SourceRecord(d.source, "skipped", "no text"))
                continue
            doc = Document(text, d.source, d.title)
            docs.append(doc)
            records.append(_kept(d.source, [doc]))
        return cls(docs, records)

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path]) -> Corpus:
        """Load files and directories (recursively, in sorted order).

        .html/.htm → :func:`extract_text`; .txt/.md → the text; .jsonl → one
        document per line's "text"; .json → a list of objects with "text" (or
        one such object); any of these may be gzipped (.gz). Other suffixes
        get a "skipped" record. A missing path raises :class:`CorpusError`.
        Hidden files and directories (".git", ".DS_Store") inside a
        directory are not corpus material and are passed over.
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
        docs: list[Document] = []
        records: list[SourceRecord] = []
        for f in files:
            file_docs, record = _load_file(f)
            docs.extend(file_docs)
            records.append(record)
        return cls(docs, records)

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
    ) -> Corpus:
        """Fetch web pages concurrently and keep their main text.

        At most ``concurrency`` requests run at once, at most ``per_host`` per
        host. Redirects are followed (up to 10). Connection errors, 429 and
        5xx are retried ``retries`` times with exponential backoff and jitter
        (a Retry-After in seconds is honoured, capped). Bodies over
        ``max_bytes`` are skipped; so are content types other than HTML,
        XHTML and plain text, and pages whose text is shorter than
        ``min_chars``. Errors (HTTP status, timeout, DNS, refused connection,
        invalid URL) give a "failed" record naming them.

        Runs its own event loop; it works from any thread, and from inside a
        running loop (e.g. a notebook) by fetching on a helper thread.
        """
        if concurrency < 1 or per_host < 1 or retries < 0 or timeout <= 0 or max_bytes < 1:
            raise ValueError(
                "from_urls needs concurrency >= 1, per_host >= 1, retries >= 0, timeout > 0, max_bytes >= 1"
            )
        urls = [str(u).strip() for u in urls]
        options = _FetchOptions(timeout, concurrency, per_host, retries, user_agent, max_bytes, min_chars)
        results = _run(_fetch_all(urls, options))
        docs = [doc for doc_list, _ in results for doc in doc_list]
        return cls(docs, [record for _, record in results])

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
        return Corpus(self.documents + other.documents, self.records + other.records)

    def __repr__(self) -> str:
        chars = sum(len(d.text) for d in self.documents)
        return f"Corpus({len(self.documents)} documents from {len(self.records)} sources, {chars} characters)"

    # -- outputs -----------------------------------------------------------

    def to_dataset(self) -> datasets.Dataset:
        """A ``datasets.Dataset`` with columns ``text``, ``source`` and ``title``."""
        import datasets  # heavy import, deferred until a dataset is wanted

        return datasets.Dataset.from_dict(
            {
                "text": [d.text for d in self.documents],
                "source": [d.source for d in self.documents],
                "title": [d.title for d in self.documents],
            }
        )

    def report(self) -> str:
        """One line per source (status, documents, characters, reason), then totals."""
        lines = []
        width = max((len(r.status) for r in self.records), default=7)
        for r in self.records:
            line = f"{r.status:<{width}}  {r.source}"
            if r.status == "kept":
                line += f"  ({r.documents} doc{'s' if r.documents != 1 else ''}, {r.chars} chars)"
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
        return "\n".join(lines)


def _empty_message(records: list[SourceRecord]) -> str:
    if not records:
        return "empty corpus: no source was given"
    lines = [f"empty corpus: no document could be loaded from {len(records)} source(s):"]
    for r in records:
        why = r.reason or ("no text" if r.status == "kept" else r.status)
        lines.append(f"  - {r.source}: {r.status} ({why})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

_HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
_TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)


def _decode_html(raw: bytes, declared: str | None = None) -> str:
    """Decode with the declared charset, else a <meta charset>, else UTF-8 (errors replaced)."""
    candidates = [declared] if declared else []
    m = _META_CHARSET.search(raw[:4096])
    if m:
        candidates.append(m.group(1).decode("ascii", "replace"))
    for name in candidates:
        try:
            codecs.lookup(name)
        except LookupError:
            continue
        return raw.decode(name, errors="replace")
    return raw.decode("utf-8", errors="replace")


def _json_doc(obj: Any, source: str) -> Document | None:
    """A document from one JSON value: an object with "text", or a bare string."""
    if isinstance(obj, str):
        text, title, src = obj, "", source
    elif isinstance(obj, dict) and isinstance(obj.get("text"), str):
        text = obj["text"]
        title = str(obj.get("title") or "")
        src = str(obj.get("source") or obj.get("url") or source)
    else:
        return None
    text = normalize_text(text)
    return Document(text, src, title) if text else None


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
_BACKOFF_BASE = 0.5  # seconds before the first retry; doubles each time, plus jitter
_RETRY_AFTER_CAP = 30.0  # never wait longer than this for one Retry-After

T = TypeVar("T")


@dataclass
class _FetchOptions:
    timeout: float
    concurrency: int
    per_host: int
    retries: int
    user_agent: str
    max_bytes: int
    min_chars: int


class _Skip(Exception):
    """A response that is fine but not corpus material (type, size)."""


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


async def _fetch_all(urls: list[str], opt: _FetchOptions) -> list[tuple[list[Document], SourceRecord]]:
    import httpx  # deferred: only URL loading needs it

    results: list[tuple[list[Document], SourceRecord] | None] = [None] * len(urls)
    total = asyncio.Semaphore(opt.concurrency)
    hosts: dict[str, asyncio.Semaphore] = {}
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
    limits = httpx.Limits(max_connections=opt.concurrency, max_keepalive_connections=opt.concurrency)
    async with httpx.AsyncClient(
        follow_redirects=True,
        max_redirects=_MAX_REDIRECTS,
        timeout=httpx.Timeout(opt.timeout),
        headers={"User-Agent": opt.user_agent},
        limits=limits,
    ) as client:

        async def one(i: int) -> None:
            url = urls[i]
            host = (urlsplit(url).hostname or "").lower()
            sem = hosts.setdefault(host, asyncio.Semaphore(opt.per_host))
            try:
                results[i] = await _fetch_one(client, url, sem, total, opt)
            except Exception as exc:  # a bug or an odd server must not lose the other sources
                results[i] = ([], SourceRecord(url, "failed", f"{type(exc).__name__}: {exc}"))
            bar.update(1)

        await asyncio.gather(*(one(i) for i in todo))
    bar.close()
    return [r for r in results if r is not None]


async def _fetch_one(
    client: httpx.AsyncClient,
    url: str,
    host_sem: asyncio.Semaphore,
    total_sem: asyncio.Semaphore,
    opt: _FetchOptions,
) -> tuple[list[Document], SourceRecord]:
    import httpx

    attempt = 0
    while True:
        wait: float | None = None
        failure = ""
        # The host slot is taken first so that requests queued for a busy
        # host do not hold global slots other hosts could use.
        async with host_sem, total_sem:
            try:
                async with client.stream("GET", url) as resp:
                    if resp.status_code == 429 or resp.status_code >= 500:
                        failure = f"HTTP {resp.status_code} {resp.reason_phrase}".strip()
                        wait = _retry_after(resp.headers.get("retry-after"))
                    elif resp.status_code >= 400:
                        reason = f"HTTP {resp.status_code} {resp.reason_phrase}".strip()
                        return [], SourceRecord(url, "failed", reason)
                    else:
                        try:
                            raw = await _read_body(resp, opt.max_bytes)
                        except _Skip as skip:
                            return [], SourceRecord(url, "skipped", str(skip))
                        return _documents_from_response(url, resp, raw, opt.min_chars)
            except httpx.TimeoutException as exc:
                # A server too slow once is usually too slow again: no retry.
                reason = f"timeout after {opt.timeout:g}s ({type(exc).__name__})"
                return [], SourceRecord(url, "failed", reason)
            except httpx.TooManyRedirects:
                return [], SourceRecord(url, "failed", f"too many redirects (more than {_MAX_REDIRECTS})")
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
                return [], SourceRecord(url, "failed", f"invalid URL: {exc}")
            except httpx.TransportError as exc:
                # Refused connections, DNS failures, resets: maybe transient.
                failure = f"{type(exc).__name__}: {exc or 'connection failed'}"
        if attempt >= opt.retries:
            tries = f" (after {attempt + 1} attempts)" if attempt else ""
            return [], SourceRecord(url, "failed", failure + tries)
        await asyncio.sleep(wait if wait is not None else _backoff(attempt))
        attempt += 1


async def _read_body(resp: httpx.Response, max_bytes: int) -> bytes:
    """Check the content type and size, then read the (decompressed) body."""
    media = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media not in _KEPT_TYPES:
        raise _Skip(f"unsupported content type {media}")
    length = resp.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise _Skip(f"too large: {int(length)} bytes > max_bytes={max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:  # also catches compressed bodies that inflate
            raise _Skip(f"too large: more than max_bytes={max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _documents_from_response(
    url: str, resp: httpx.Response, raw: bytes, min_chars: int
) -> tuple[list[Document], SourceRecord]:
    media = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if not media:  # no header: sniff, since servers of static files forget it
        media = "text/html" if raw.lstrip()[:1] == b"<" else "text/plain"
    charset = resp.charset_encoding
    if media == "text/plain":
        text = normalize_text(raw.decode(charset if _codec_ok(charset) else "utf-8", errors="replace"))
        title = ""
    else:
        html = _decode_html(raw, charset if _codec_ok(charset) else None)
        text = extract_text(html, url)
        title = extract_title(html)
    final = str(resp.url)
    note = f"redirected to {final}" if final != url else ""
    if not text:
        return [], SourceRecord(url, "skipped", "no text")
    if len(text) < min_chars:
        reason = f"only {len(text)} characters of text (min_chars={min_chars})"
        return [], SourceRecord(url, "skipped", reason)
    docs = [Document(text, url, title)]
    return docs, _kept(url, docs, note)


def _codec_ok(name: str | None) -> bool:
    if not name:
        return False
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True
