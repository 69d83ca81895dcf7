"""From the chosen line ranges to plain text: low-text blocks dropped, lines joined.

Inside the main content there are still link lines ("Read more", teasers), the
headline (kept apart as the document's title) and blocks of recommended items
("Customers also viewed"): :func:`prune_lines` drops them,
and :func:`render` joins what is left with the spacing of the page's blocks.
"""

from __future__ import annotations

import bisect
import re

from ..clean import WORD
from .lines import HEADINGS, Builder
from .score import Page

# Lines at least this share link text are pointers elsewhere ("Read more",
# "Related: ...", teaser headlines), not prose of the article.
_LINK_LINE = 0.75
# Chosen content with more link text than this share is a list of linked items (prune_lines).
_LINK_CONTENT = 0.5
# A kept line at least this long that repeats one kept before is a layout copy (prune_lines);
# 40 gained more on WCXB dev (forum, product) but cost the 61 articles 0.005 of F1. Items,
# table rows and code repeat by design (each pricing plan lists "Two rounds of revisions", each
# code sample sets the same constant): theirs is _REPEAT_ITEM_CHARS. 70 for all lines: forum
# +0.004 but service -0.0009, docs -0.001; 70 for the others only: forum +0.002, service +0.0003.
_REPEAT_CHARS = 70
_REPEAT_ITEM_CHARS = 100
_ITEM_TAGS = frozenset("li tr td th dd dt".split())
# A heading announcing recommendations heads a block of other items than the page's (a
# shop's "Customers also viewed" grid, "You may also like", "Similar items"), which no class
# word marks: the block it heads is dropped when under _RECOMMENDS_SHARE of the content
# (0.25 lost a shop whose grid is a third of its page; 0.5 and 0.8 the same on WCXB dev).
# Any short line instead of headings only: the same F1, two pages lower, two higher.
# "Related"/"similar" items, products, threads, brands, articles, posts and stories too (a shop's
# "Explore related items", a forum's "Similar threads"): on WCXB dev 19 pages up, none down.
# Popular articles/posts/products and trending content/stories/topics: 5 more up, none down
# ("More to explore" was tried too: a news front page's own sections, -0.04 there).
_RECOMMENDS = re.compile(
    r"also (?:viewed|bought|like|love|purchased)|you may (?:also )?like|recently viewed|frequently bought|"
    r"(?:similar|related) (?:items|products|threads|brands|articles|posts|stories)|customers who|"
    r"(?:most )?popular (?:articles|posts|products)|trending (?:content|stories|topics)",
    re.I,
)
_RECOMMENDS_CHARS = 80
_RECOMMENDS_SHARE = 0.5
# A heading in a header row of its own (the heading, a "See all" link, a "Sponsored" label: at
# most _HEADER_LINES lines) heads the grid beside it, not that row: the block is the smallest
# one starting at the header with more lines, while under _RECOMMENDS_SHARE (a shop's "Similar
# items" carousel). On WCXB dev (2 / 3 / 5 lines): 3 and 5 the same, 4 pages move, 3 up.
_HEADER_LINES = 3
# A line that is one word, a colon and a number ("Posts: 4,032", "Messages: 12", "Likes: 1.2k"):
# the counters of a forum poster's panel or a profile card. Measured and units have two parts
# ("Weight: 5 kg") or more words and stay, and so do list items ("- Logbooks: 41": a fact
# listed in an article). On WCXB dev: forum +0.001, no page type down.
_COUNTER = re.compile(r"[^\W\d]+: ?\d[\d,.]*[kKmM]?$")
# Placeholder filler a theme shipped with and the site never replaced ("Lorem ipsum dolor sit
# amet..."): no page means it. On WCXB dev: 2 pages up (product +0.0005, article +0.0002), none down.
_FILLER = re.compile(r"(?:[-*] )?lorem ipsum\b", re.I)
# A block of 2 to _COPY_LINES lines and at least _COPY_CHARS characters whose lines repeat, in
# order, a block before it is a copy of that block (prune_lines): the same feature list or
# shipping note in a product's mobile and desktop layouts, a card repeated in a carousel's clones.
# Each line alone may be short ("Fast & Free Shipping."), under _REPEAT_CHARS. On WCXB dev
# (60 / 80 / 100 / 150 characters, 10 / 20 / 40 lines): 80 and 20, 132 pages move, 95 up.
_COPY_CHARS = 80
_COPY_LINES = 20
# A line that is one text twice over, run together ("EUR 163.12EUR 163.12", "Seller's other
# itemsSeller's other items"): a label shown and the same label for screen readers beside it,
# or a price in two layouts' spans with no space between, said once (render). At least
# _DOUBLED_CHARS characters each, with a letter ("1234-1234-" is a code). On WCXB dev 7 pages
# move, all up (product +0.0012, service +0.0002). A prefix said twice before a longer text
# too ("See all detailsSee all details on coverage"): the same overall F1, 9 pages down.
_DOUBLED_CHARS = 4


def _recommendations_end(page: Page, i: int, chars: int) -> int:
    """One past the last line of the block that heading line ``i`` heads, or -1: the smallest
    block holding more than that line (more than its header row, _HEADER_LINES), when it is
    under half the chosen content."""
    b = page.b
    e = b.owner[i]
    if e < 0:
        return -1
    elems = b.elems
    while elems[e].parent >= 0 and elems[elems[e].parent].end - elems[elems[e].parent].start <= 1:
        e = elems[e].parent  # wrappers of the heading alone
    block = elems[e].parent
    if block < 0 or elems[block].tag in ("body", "html"):
        return -1
    limit = _RECOMMENDS_SHARE * chars

    def size(x: int) -> int:
        return page.chars[elems[x].end] - page.chars[elems[x].start]

    while elems[block].end - elems[block].start <= _HEADER_LINES:
        up = elems[block].parent
        if up < 0 or elems[up].tag in ("body", "html") or elems[up].start != elems[block].start or size(up) >= limit:
            break
        block = up
    return elems[block].end if size(block) < limit else -1


def _in_pre(b: Builder) -> list[bool]:
    """Per element: inside a <pre> (elements are numbered in document order, parents first)."""
    elems = b.elems
    flags = [False] * len(elems)
    for e, el in enumerate(elems):
        flags[e] = el.tag == "pre" or (el.parent >= 0 and flags[el.parent])
    return flags


def _in_code(b: Builder, i: int, in_pre: list[bool]) -> bool:
    owner = b.owner[i]
    return owner >= 0 and in_pre[owner]


def _is_item(b: Builder, i: int, in_pre: list[bool]) -> bool:
    """Line ``i`` is a list item, a table row or cell, or code."""
    owner = b.owner[i]
    return owner >= 0 and b.elems[owner].tag in _ITEM_TAGS or _in_code(b, i, in_pre)


def block_copies(b: Builder, ranges: list[tuple[int, int]]) -> set[int]:
    """The lines of blocks that repeat an earlier block of the chosen content line for line.

    A wrapper with the same lines as its parent is the parent's block, asked once; only blocks
    of at most _COPY_LINES lines are keyed, so the work is linear in the page's text."""
    chosen = [False] * len(b.lines)
    for start, end in ranges:
        for i in range(start, end):
            chosen[i] = True
    elems = b.elems
    first_end: dict[str, int] = {}
    copies: set[int] = set()
    for e in elems:
        n = e.end - e.start
        if n < 2 or n > _COPY_LINES or not chosen[e.start]:
            continue
        if e.parent >= 0 and elems[e.parent].start == e.start and elems[e.parent].end == e.end:
            continue
        key = "\n".join(b.lines[e.start : e.end])
        if len(key) < _COPY_CHARS:
            continue
        end = first_end.get(key)
        if end is None:
            first_end[key] = e.end
        elif e.start >= end:  # after the first copy, not inside it
            copies.update(range(e.start, e.end))
    return copies


def _key(text: str) -> str:
    return " ".join(WORD.findall(text.lower()))


def _is_heading(b: Builder, i: int) -> bool:
    owner = b.owner[i]
    return owner >= 0 and b.elems[owner].tag in HEADINGS


def _link_title(b: Builder, i: int, line: str, plain: list[int]) -> bool:
    """A link line that names an item of the page rather than pointing elsewhere: a linked
    heading (one word is a title too: a film's, a product's), a linked title of five words or
    more outside lists and paragraphs (listing and collection cards), or the link of a list
    item that holds more than its link (a shop's card as ``<li>``: the linked name, then its
    price and badges; a menu's item holds only its link, or more links). ``plain``: prefix
    counts of lines that are not link lines. Chosen on WCXB dev (the scores in benchmarks/README.md)."""
    if _is_heading(b, i):
        return True
    words = len(line.split())
    owner = b.owner[i]
    if owner < 0:
        return False
    e = b.elems[owner]
    if e.tag == "li":
        return words >= 2 and plain[e.end] > plain[e.start]
    return words >= 5 and e.tag != "p"


def prune_lines(page: Page, ranges: list[tuple[int, int]], title: str = "") -> list[int]:
    """The lines of the chosen content that are its text: link lines and the headline dropped.

    Whole blocks are not dropped for their link density or their class names: inside the
    chosen content a block of links is a listing's items, a collection's product cards or a
    documentation page's reference list, and a "comment" or "media" class a forum's posts or a
    product's gallery captions. Dropping them cost word F1 on every WCXB dev page type but
    forum (benchmarks/README.md, "Page types").
    """
    b = page.b
    title_key = _key(title)
    # Content that is mostly link text is a list of items (a listing's rows, an index of
    # pages): its link lines are the items themselves, not pointers away from an article.
    chars = sum(page.chars[end] - page.chars[start] for start, end in ranges)
    links = sum(page.links[end] - page.links[start] for start, end in ranges)
    drop_links = links <= _LINK_CONTENT * chars
    plain = [0] * (len(b.lines) + 1)
    if drop_links:
        for i, line in enumerate(b.lines):
            plain[i + 1] = plain[i] + (b.link_chars[i] < len(line) * _LINK_LINE)
    seen: set[str] = set()
    in_pre = _in_pre(b)
    copies = block_copies(b, ranges)
    out = []
    skip_to = -1
    for start, end in ranges:
        for i in range(start, end):
            if i < skip_to or i in copies:
                continue
            line = b.lines[i]
            if len(line) < _RECOMMENDS_CHARS and _is_heading(b, i) and _RECOMMENDS.search(line):
                skip_to = _recommendations_end(page, i, chars)
                if skip_to > i:
                    continue
            # Lines that are (almost) all link text point elsewhere: "Read more",
            # "Related: ...", teaser headlines. They are not the article's prose.
            if drop_links and b.link_chars[i] >= len(line) * _LINK_LINE and not _link_title(b, i, line, plain):
                continue
            # A poster's panel in a forum thread ("Posts: 4,032", "Reputation: 12") is a
            # counter, not what was said; so is a bare number on its own line (a post's like or
            # vote count, a reply's index). Code keeps its line numbers; a list item ("- 12")
            # and a price ("$12") are not bare. On WCXB dev bare numbers: 97 pages move, 59 up,
            # forum +0.0005, listing +0.0004, product +0.0005, no page type down.
            if _COUNTER.match(line) or (line.isdigit() and not _in_code(b, i, in_pre)):
                continue
            if _FILLER.match(line):
                continue
            # The headline is the page title, kept apart in Document.title.
            if title_key and _is_heading(b, i) and len(line) > 10 and _key(line) in title_key:
                continue
            # Pages repeat blocks for other screen sizes (a product's description in the
            # mobile and the desktop layout): a long line already kept is that copy.
            if len(line) >= _REPEAT_CHARS and (len(line) >= _REPEAT_ITEM_CHARS or not _is_item(b, i, in_pre)):
                if line in seen:
                    continue
                seen.add(line)
            # A line of any length repeating the one kept just before it is a copy too: a card's
            # name over its photo and under it, a badge or a price said twice (on WCXB dev 111
            # pages move, 78 up).
            if out and b.lines[out[-1]] == line:
                continue
            out.append(i)
    return _drop_closing_headings(b, out)


def _drop_closing_headings(b: Builder, out: list[int]) -> list[int]:
    """``out`` without the headings after its last line of text whose block keeps nothing else:
    "Related posts", "Share this article", "Explore more" over links dropped as link lines, the
    teaser cards of other articles. They head nothing kept. Headings earlier in the content stay
    (a hero's headline over its buttons is a service page's text). On WCXB dev 53 pages move, 39
    up; every heading with nothing kept in its block, wherever it stands: service -0.0004."""
    k = len(out)
    while k > 0 and _is_heading(b, out[k - 1]):
        k -= 1
    if k == 0 or k == len(out):
        return out
    elems = b.elems
    res = out[:k]
    for i in out[k:]:
        e = b.owner[i]
        while elems[e].parent >= 0 and elems[elems[e].parent].end - elems[elems[e].parent].start <= 1:
            e = elems[e].parent  # wrappers of the heading alone
        block = elems[e].parent
        if block >= 0 and elems[block].end - elems[block].start > 1:
            start, end = elems[block].start, elems[block].end
            if bisect.bisect_left(out, end) - bisect.bisect_left(out, start) <= 1:
                continue  # its block keeps only the heading
        res.append(i)
    return res


def _undouble(line: str) -> str:
    """``line`` said once when it is one text said twice, with nothing between."""
    half = len(line) // 2
    if len(line) % 2 == 0 and half >= _DOUBLED_CHARS and line[:half] == line[half:]:
        if any(c.isalpha() for c in line[:half]):  # "20202020" is a number
            return line[:half]
    return line


def render(page: Page, idxs: list[int]) -> str:
    """The kept lines as text: a blank line between blocks, none inside a list or table."""
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
        parts.append(_undouble(b.lines[i]))
        prev = owner
    return "".join(parts)
