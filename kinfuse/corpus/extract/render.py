"""From the chosen line ranges to plain text: low-text blocks dropped, lines joined.

Inside the main content there are still link lists, teaser lines and the
headline (kept apart as the document's title): :func:`prune_lines` drops them,
and :func:`render` joins what is left with the spacing of the page's blocks.
"""

from __future__ import annotations

from ..clean import WORD
from .score import Page, class_weight
from .tree import HEADINGS, Builder

# Lines at least this share link text are pointers elsewhere ("Read more",
# "Related: ...", teaser headlines), not prose of the article.
_LINK_LINE = 0.75


def _key(text: str) -> str:
    return " ".join(WORD.findall(text.lower()))


def _is_heading(b: Builder, i: int) -> bool:
    owner = b.owner[i]
    return owner >= 0 and b.elems[owner].tag in HEADINGS


def _link_title(b: Builder, i: int, line: str) -> bool:
    """A link line that names an item of the page rather than pointing elsewhere: a linked
    heading of two words or more, or a linked title of five words or more outside lists and
    paragraphs (listing and collection cards). Chosen on WCXB dev (the scores in benchmarks/README.md)."""
    words = len(line.split())
    if _is_heading(b, i):
        return words >= 2
    owner = b.owner[i]
    return words >= 5 and owner >= 0 and b.elems[owner].tag not in ("li", "p")


def prune_lines(page: Page, ranges: list[tuple[int, int]], title: str = "") -> list[int]:
    """Drop link lists and other low-text blocks inside the chosen content: the lines kept."""
    b = page.b
    elems = b.elems
    keep: list[int] = []
    for start, end in ranges:
        keep.extend(range(start, end))
    if not keep:
        return keep
    lo, hi = min(keep), max(keep) + 1
    # Dropped ranges are marked by their ends and summed in one sweep: nested
    # blocks would otherwise mark the same lines once per level.
    marks = [0] * (len(b.lines) + 1)
    for e in elems:
        if e.start < lo or e.end > hi or e.end <= e.start:
            continue
        if e.start == lo and e.end == hi:
            continue  # the chosen content itself (a thread of "comments"), not a block inside it
        if e.tag not in ("ul", "ol", "div", "section", "table", "dl", "aside", "figure"):
            continue
        n = page.text_len(e)
        ld = page.link_density(e)
        weight = class_weight(e.attr)
        if weight < 0 and n < 1000:
            marks[e.start] += 1
            marks[e.end] -= 1
        elif ld > 0.5 and e.tag != "table":
            marks[e.start] += 1
            marks[e.end] -= 1
    drop = set()
    inside = 0
    for i in range(lo, hi):
        inside += marks[i]
        if inside > 0:
            drop.add(i)
    title_key = _key(title)
    out = []
    for i in keep:
        if i in drop:
            continue
        line = b.lines[i]
        # Lines that are (almost) all link text point elsewhere: "Read more",
        # "Related: ...", teaser headlines. They are not the article's prose.
        if b.link_chars[i] >= len(line) * _LINK_LINE and not _link_title(b, i, line):
            continue
        # The headline is the page title, kept apart in Document.title.
        if title_key and _is_heading(b, i) and len(line) > 10 and _key(line) in title_key:
            continue
        out.append(i)
    return out


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
        parts.append(b.lines[i])
        prev = owner
    return "".join(parts)
