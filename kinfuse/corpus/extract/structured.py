"""Structured data as content: what a page states in JSON-LD, in microdata posts or in its meta
description, added where the visible text that extraction kept lacks it.

Product pages often render their description with scripts and keep it only in JSON-LD; forum
threads mark every post up as a schema.org ``Comment`` whose class names look like page chrome;
FAQ answers sit in collapsed accordions. Each such text is one *block* (a product's name and
description, a question with its answers, a post with its author and date). A block is added
only when most of its words are missing from the extracted text, so a page whose extraction
already holds it gains nothing twice. Which kinds of block are used, and the thresholds, were
chosen on WCXB's dev split (benchmarks/README.md, "structured data").

Everything here is one pass over the page's ``<script>`` elements, its ``itemscope`` elements
and its ``<meta>`` elements, plus one pass over each JSON document: linear in the page's size.
"""

from __future__ import annotations

import html as _html
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from selectolax.lexbor import LexborHTMLParser, LexborNode

from ..clean import WORD

_TAG = re.compile(r"<[^>]*>")
_BREAK_TAG = re.compile(r"<\s*(?:br|/p|/div|/li|/h[1-6]|/tr|p|li)\b[^>]*>", re.I)
_SPACES = re.compile(r"[ \t\f\v]+")

# A block joins the text when less than this share of its distinct words is already there.
_MISSING = 0.5
# The meta description stands in only for a page whose extracted text is about empty.
_NEAR_EMPTY_WORDS = 30
_NEAR_EMPTY_CHARS = 2_000  # more characters than that always hold 30 distinct words in practice
# A description this short that shares no word with the page's title, the site's name aside, is
# the site's tagline ("Smarter Shopping, Better Living!" on every product page of a shop), not a
# summary of the page, so it is not the page's content.
_TAGLINE_WORDS = 12
_DESCRIPTIONS = ("description", "og:description", "twitter:description")
_TITLES = ("og:title", "twitter:title")
_SITE_NAMES = ("og:site_name", "application-name")
_META_NAMES = frozenset(_DESCRIPTIONS + _TITLES + _SITE_NAMES)
# A <noscript> with at least this many words is the page's content, not a "enable JavaScript" note.
_NOSCRIPT_WORDS = 50
# A JSON-LD script or microdata list larger than this is not page content worth parsing.
_MAX_SCRIPT_CHARS = 2_000_000
_MAX_ITEMS = 2_000

# JSON-LD @types whose text fields are the page's content (the field names per type below).
_PRODUCTS = frozenset({"Product", "ProductGroup", "IndividualProduct", "ProductModel"})
_POSTS = frozenset({"DiscussionForumPosting", "SocialMediaPosting", "Comment"})
_QA = frozenset({"Question", "Answer"})
_HOWTO = frozenset({"HowTo", "Recipe", "HowToStep", "HowToSection", "HowToDirection", "HowToTip"})
# Lists and relations of *other* items: a product's variants or related products, a
# collection's items, a review's subject. Their names would be a list of links, not content.
_ELSEWHERE = frozenset(
    {"hasVariant", "isRelatedTo", "isSimilarTo", "isAccessoryOrSparePartFor", "itemReviewed",
     "itemListElement", "isVariantOf", "review", "offers", "brand", "author", "publisher"}
)
# Microdata item types that are posts, and the itemprops holding their text.
_MICRO_POST = re.compile(r"schema\.org/(?:Comment|DiscussionForumPosting|SocialMediaPosting|Answer|Question)\b")
_MICRO_TEXT = ("text", "articleBody")
# A plain substring test decides whether a page's microdata is worth a CSS query.
_POST_TYPES = ("Comment", "DiscussionForumPosting", "SocialMediaPosting", "Answer")
_SKIP_TEXT_PARENTS = frozenset({"script", "style", "noscript", "template"})
_BLOCK_TAGS = frozenset(
    "p div br li ul ol blockquote pre h1 h2 h3 h4 h5 h6 tr table section article dd dt dl".split()
)


def _words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def _plain(value: Any) -> str:
    """A JSON-LD text value as plain text: entities decoded, tags dropped, lines kept."""
    if isinstance(value, list):
        return "\n".join(t for t in (_plain(v) for v in value) if t)
    if isinstance(value, dict):  # {"@value": ...} or a HowToStep given inline
        return _plain(value.get("@value") or value.get("text") or "")
    if not isinstance(value, str):
        return ""
    text = _html.unescape(value)
    if "<" in text:
        text = _TAG.sub(" ", _BREAK_TAG.sub("\n", text))
        text = _html.unescape(text)  # "&amp;lt;" written twice over
    lines = (_SPACES.sub(" ", line).strip() for line in text.replace("\r", "\n").split("\n"))
    return "\n".join(line for line in lines if line)


def _types(obj: dict) -> set[str]:
    t = obj.get("@type")
    names = t if isinstance(t, list) else [t]
    # "http://schema.org/Product" and "schema:Product" are the same type.
    return {n.rsplit("/", 1)[-1].rsplit(":", 1)[-1] for n in names if isinstance(n, str)}


def json_ld(tree: LexborHTMLParser) -> Iterator[Any]:
    """The parsed JSON of every ``<script type=application/ld+json>``; broken ones are skipped."""
    for script in tree.css('script[type*="ld+json" i]'):
        raw = script.text(deep=True).strip()
        if not raw or len(raw) > _MAX_SCRIPT_CHARS:
            continue
        for wrapper in ("<!--", "-->", "<![CDATA[", "]]>", "//"):
            if raw.startswith(wrapper) or raw.endswith(wrapper):
                raw = raw.removeprefix(wrapper).removesuffix(wrapper).strip()
        try:
            yield json.loads(raw, strict=False)  # strict=False: raw newlines inside strings
        except (ValueError, RecursionError):
            continue


def _ld_items(doc: Any) -> Iterator[tuple[dict, str]]:
    """Every JSON object in a document with the key it sits under; iterative, any depth."""
    stack: list[tuple[Any, str]] = [(doc, "")]
    while stack:
        value, key = stack.pop()
        if isinstance(value, list):
            stack.extend((v, key) for v in reversed(value))
        elif isinstance(value, dict):
            yield value, key
            stack.extend((v, k) for k, v in reversed(list(value.items())) if isinstance(v, (dict, list)))


def _ld_block(obj: dict, key: str, types: set[str]) -> str:
    """The content one JSON-LD object holds, as one block of text ('' when none)."""
    if types & _PRODUCTS:
        if key in _ELSEWHERE:
            return ""
        description = _plain(obj.get("description"))
        return f"{_plain(obj.get('name'))}\n\n{description}" if description else ""
    if types & _QA:
        parts = [_plain(obj.get("name")), _plain(obj.get("text"))]
        if "Question" in types:
            for field in ("acceptedAnswer", "suggestedAnswer"):
                answers = obj.get(field)
                for answer in answers if isinstance(answers, list) else [answers]:
                    if isinstance(answer, dict):
                        parts.append(_plain(answer.get("text")))
        return "\n\n".join(p for p in parts if p)
    if types & _POSTS:
        return _plain(obj.get("articleBody") or obj.get("text"))
    if types & _HOWTO:
        parts = [_plain(obj.get(f)) for f in ("name", "description", "text", "recipeIngredient")]
        instructions = obj.get("recipeInstructions")
        if isinstance(instructions, str):  # steps given as objects are visited on their own
            parts.append(_plain(instructions))
        return "\n\n".join(p for p in parts if p)
    return ""


def ld_blocks(tree: LexborHTMLParser) -> list[str]:
    """Content blocks from the page's JSON-LD (products, questions and answers, posts, how-tos)."""
    blocks: list[str] = []
    for doc in json_ld(tree):
        for obj, key in _ld_items(doc):
            types = _types(obj)
            if types and (block := _ld_block(obj, key, types)):
                blocks.append(block)
    return blocks


def node_lines(node: LexborNode) -> str:
    """A node's text with a line break at each block element, scripts and styles left out."""
    out: list[str] = []
    for child in node.traverse(include_text=True):
        if child.tag in _BLOCK_TAGS:
            out.append("\n")
        elif child.tag == "-text":
            parent = child.parent
            if parent is not None and parent.tag in _SKIP_TEXT_PARENTS:
                continue
            if child.prev is not None and child.prev.tag in _BLOCK_TAGS:
                out.append("\n")  # text after a closed block starts a new line
            out.append(child.text_content or "")
    lines = (_SPACES.sub(" ", line).strip() for line in "".join(out).split("\n"))
    return "\n".join(line for line in lines if line)


def microdata_posts(tree: LexborHTMLParser) -> list[str]:
    """Forum posts and answers marked up as schema.org microdata: author, date and text each."""
    blocks: list[str] = []
    for item in tree.css('[itemtype*="schema.org/" i]')[:_MAX_ITEMS]:
        if not _MICRO_POST.search(item.attributes.get("itemtype") or ""):
            continue
        body = next((item.css_first(f'[itemprop="{p}"]') for p in _MICRO_TEXT if item.css_first(f'[itemprop="{p}"]')), None)
        if body is None:
            continue
        text = node_lines(body)
        if not text:
            continue
        author = item.css_first('[itemprop="author"] [itemprop="name"]') or item.css_first('[itemprop="author"]')
        when = item.css_first("time")
        head = [node_lines(n) if n.tag != "meta" else (n.attributes.get("content") or "") for n in (author, when) if n]
        blocks.append("\n".join([*(h for h in head if h and len(h) < 100), "", text]).strip())
    return blocks


def meta_description(tree: LexborHTMLParser) -> str:
    """``<meta name=description>``, else ``og:description`` / ``twitter:description``; empty when
    that is the site's tagline rather than a summary of this page."""
    found: dict[str, str] = {}
    for meta in tree.css("meta"):
        name = (meta.attributes.get("name") or meta.attributes.get("property") or "").strip().lower()
        if name in _META_NAMES and name not in found:
            found[name] = _plain(meta.attributes.get("content") or "")
    description = next((found[n] for n in _DESCRIPTIONS if found.get(n)), "")
    words = _title_words(description)
    if len(words) >= _TAGLINE_WORDS:
        return description
    title = tree.css_first("title")
    site = _title_words(" ".join(found.get(n, "") for n in _SITE_NAMES))
    titles = _title_words(" ".join([title.text() if title else "", *(found.get(n, "") for n in _TITLES)])) - site
    return "" if titles and not titles & (words - site) else description


def _title_words(text: str) -> set[str]:
    """The words of ``text`` that can name a subject: "rug", not "a" or "2"."""
    return {w for w in _words(text) if len(w) > 2 and not w.isdigit()}


def noscript_html(tree: LexborHTMLParser) -> str:
    """The inner HTML of the ``<noscript>`` holding the most text, when it holds real content.

    Discourse and Flarum forums (and other script-rendered sites) serve the whole thread to
    clients without scripts inside ``<noscript>``, which extraction skips as chrome."""
    best, best_len = None, 0
    for node in tree.css("noscript"):
        size = len(node.text(deep=True))
        if size > best_len:
            best, best_len = node, size
    if best is None or len(_words(best.text(deep=True))) < _NOSCRIPT_WORDS:
        return ""
    return "".join(child.html or "" for child in best.iter(include_text=True))


def _names_post_type(html: str) -> bool:
    """Whether ``html`` holds "schema.org/" followed by a post type: one pass over the page,
    where a search per type would read it once per type."""
    at = html.find("schema.org/")
    while at >= 0:
        if html.startswith(_POST_TYPES, at + 11):
            return True
        at = html.find("schema.org/", at + 11)
    return False


def add_structured(
    tree: LexborHTMLParser, html: str, text: str, main_text: Callable[[LexborHTMLParser], str]
) -> str:
    """``text`` (extracted from ``tree``, parsed from ``html``) plus the structured-data blocks it
    lacks, and the meta description when it is about empty: JSON-LD blocks first, as the page's
    own summary of its subject, then the text, then microdata posts it missed, in page order.

    When ``text`` is about empty and the page carries its content in ``<noscript>``,
    ``main_text`` (the extractor's main-text step) is run on that instead."""
    # Each CSS query walks the whole tree; a scan of the source decides which are worth it.
    near_empty = len(text) < _NEAR_EMPTY_CHARS and len(set(_words(text))) < _NEAR_EMPTY_WORDS
    if near_empty and ("<noscript" in html or "<NOSCRIPT" in html) and (inner := noscript_html(tree)):
        text = main_text(LexborHTMLParser(inner))
        near_empty = len(set(_words(text))) < _NEAR_EMPTY_WORDS
    ld = ld_blocks(tree) if "ld+json" in html or "LD+JSON" in html else []
    posts = microdata_posts(tree) if _names_post_type(html) else []
    if not ld and not posts and not near_empty:
        return text
    have = set(_words(text))
    before: list[str] = []
    after: list[str] = []
    for blocks, out in ((ld, before), (posts, after)):
        for block in blocks:
            words = set(_words(block))
            if words and len(words - have) > _MISSING * len(words):
                out.append(block)
                have |= words  # the same text twice (JSON-LD and microdata) goes in once
    if near_empty and not before and not after:
        description = meta_description(tree)
        words = set(_words(description))
        if words and len(words - have) > _MISSING * len(words):
            before.append(description)
    if not before and not after:
        return text
    return "\n\n".join(part for part in (*before, text, *after) if part)
