"""Statistics and Readability-style scores of the candidate blocks of a walked page.

:class:`Page` adds prefix sums over the walked lines, so that the text length,
link density and amount of prose of any element cost O(1); :func:`score_blocks`
lets every paragraph vote for the elements around it, as Readability does.
"""

from __future__ import annotations

import functools
import re

from .chrome import ClassWords
from .lines import HEADINGS, Builder, Elem

# For scoring candidates: class/id words that lean towards / away from content.
_POSITIVE = ClassWords(r"article|body|content|entry|hentry|main|page|post|text|blog|story|prose")
_NEGATIVE = ClassWords(
    r"banner|combx|comment|contact|foot|footnote|masthead|media|meta|"
    r"outbrain|promo|related|scroll|share|shoutbox|sidebar|skyscraper|sponsor|"
    r"shopping|tags|tool|widget|caption|credit"
)
_COMMAS = re.compile(r"[,،、，]")


@functools.lru_cache(maxsize=8192)
def class_weight(attr: str) -> float:
    """+25 for content-like class/id words, -25 for chrome-like ones (both can apply)."""
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


# A line at least this long with under 30% link text reads as prose (Page's "good" text;
# select._is_section counts a section's prose the same way).
PROSE_LINE = 40


class Page:
    """The walked page plus prefix sums for O(1) per-element statistics."""

    def __init__(self, b: Builder) -> None:
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
            if len(line) >= PROSE_LINE and b.link_chars[i] < 0.3 * len(line):
                owner = b.owner[i]
                tag = b.elems[owner].tag if owner >= 0 else ""
                if tag not in HEADINGS and tag not in ("li", "tr", "dt", "dd"):
                    g = len(line)
            good[i + 1] = good[i] + g
        self.good = good

    def good_len(self, e: Elem) -> int:
        return self.good[e.end] - self.good[e.start]

    def text_len(self, e: Elem) -> int:
        return self.chars[e.end] - self.chars[e.start]

    def link_density(self, e: Elem) -> float:
        total = self.text_len(e)
        return (self.links[e.end] - self.links[e.start]) / total if total else 0.0


def score_blocks(page: Page) -> list[int]:
    """Readability-style: paragraphs vote for their parent and ancestors.

    Sets ``score`` and ``scored`` on the elements that got votes and returns
    their indices, in the order they were first scored.
    """
    b = page.b
    elems = b.elems
    scored: list[int] = []
    for i, line in enumerate(b.lines):
        owner = b.owner[i]
        if owner < 0:
            continue
        tag = elems[owner].tag
        if tag in HEADINGS or tag in ("tr", "li", "dt", "figcaption", "caption"):
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
                e.score = _TAG_WEIGHT.get(e.tag, 0.0) + class_weight(e.attr)
                scored.append(anc)
            e.score += points / (1 if level == 0 else 2 if level == 1 else level * 3)
            anc = e.parent
            level += 1
    for idx in scored:
        e = elems[idx]
        e.score *= 1.0 - page.link_density(e)
    return scored
