"""Capping how deep a page nests before it is parsed, so that parsing stays linear in its size.

An HTML parser checks the stack of open elements at every block start tag
("is a <p> open in button scope?"), which costs time proportional to the
nesting depth: a page of 100k nested ``<div>`` costs 100k x 100k steps in the
parser alone, and every step after it that walks up the tree pays again.
Browsers bound this by building at most 512 levels (Blink); :func:`cap_depth`
does the same on the markup: one linear scan tracks the open elements by name,
and start tags that would open an element deeper than the cap are removed
together with their end tags, so their text is kept, flattened into the
element at the cap. Pages within the cap (all real pages) are returned as
they are.

That scan is a Python loop over every tag, a large share of the extraction
time of an ordinary page (benchmarks/README.md), so it runs only when a
cheaper proof fails: :func:`_within`
has the regular-expression engine list the same tags, cancels each start tag
directly followed by its own end tag (which leaves the scan's state as it
was, one level higher in between) round after round while the rounds shrink
the list fast, and scans the tags that remain. Their deepest point plus one level per round of cancelling bounds
how deep the scan would go; under the cap, the scan would cut nothing.
"""

from __future__ import annotations

import itertools
import re

MAX_DEPTH = 512

# Elements that never nest under themselves: void elements, and those whose
# start tag closes an open one of their kind (<p>, <li>, <td>...). Counting
# them would make an ordinary list of unclosed <li> look deep.
_FLAT = frozenset(
    """area base br col embed hr img input link meta param source track wbr keygen basefont bgsound frame
    p li dt dd option optgroup tr td th tbody thead tfoot colgroup caption rb rt rp rtc""".split()
)
# Elements whose content is text up to their end tag, not markup.
_RAW_TEXT = frozenset("script style textarea title xmp iframe noembed noframes".split())
_RAW_END: dict[str, re.Pattern[str]] = {name: re.compile(rf"</{name}[\s/>]", re.I) for name in _RAW_TEXT}

# Any tag-like token: a comment opener, a start or end tag, or <!doctype>/<?...>.
_TOKEN = re.compile(r"<(?:(!--)|(/?)([A-Za-z][^\s/>]*)[^>]*>|[!?][^>]*>)")


def _ascii_nocase(name: str) -> str:
    return "".join(f"[{c.upper()}{c}]" for c in name)


# The tags the scan acts on, as "name" or "/name", in one C-speed findall: the
# same alternatives as _TOKEN, but a comment, and a raw-text element's start
# tag and text, are consumed whole (as the scan skips them) and give "". A
# raw-text name is matched in ASCII letters only, as name.lower() compares it;
# its end tag is found as _RAW_END finds it (case-insensitive).
_TAGS = re.compile(
    r"<(?:!--(?s:.*?)(?:-->|\Z)"
    r"|(?=[IiNnSsTtXx])(?:"  # the first letters of the raw-text names: most tags skip these branches
    + "|".join(
        rf"{_ascii_nocase(n)}(?=[\s/>])[^>]*>[^<]*(?:<(?!/(?i:{n})[\s/>])[^<]*)*" for n in sorted(_RAW_TEXT)
    )
    + r")|(/?[A-Za-z][^\s/>]*)[^>]*>|[!?][^>]*>)"
)
_SEP = "\x01"  # joins the tag names; no page that holds it takes the fast path
# Tags the scan passes over: flat elements, and end tags of raw-text elements (never opened).
_NO_OP = frozenset([*_FLAT, *(f"/{name}" for name in _FLAT | _RAW_TEXT)])
# A start tag directly followed by its own end tag (ASCII names only, whose lower() is plain).
_PAIR = re.compile(rf"{_SEP}([a-z][a-z0-9-]*){_SEP}/\1(?={_SEP})")
# The cancelling rounds read at most this many times the tag string in all, and go on only
# while each removes at least 1/_MIN_SHRINK of it (see _within).
_ROUND_BUDGET, _MIN_SHRINK = 4, 16


def cap_depth(html: str, limit: int = MAX_DEPTH) -> str:
    """``html`` with elements nested deeper than ``limit`` unwrapped (their text kept).

    Returns ``html`` itself when nothing is nested that deep.
    """
    if html.count("<") <= limit:  # too few tags to nest that deep
        return html
    end = html.rfind(">") + 1  # past the last ">" no tag can close: bounds every match
    if _SEP not in html and _within(html, end, limit):
        return html
    return _scan(html, end, limit)


def _within(html: str, end: int, limit: int) -> bool:
    """True when :func:`_scan` provably opens fewer than ``limit`` elements at once (so cuts nothing).

    False only means the bound did not prove it.
    """
    names = _SEP.join(filter(None, _TAGS.findall(html, 0, end))).lower().split(_SEP)
    tags = _SEP + _SEP.join(itertools.filterfalse(_NO_OP.__contains__, names)) + _SEP
    rounds = 0
    # Each round hides at most one level of the scan's stack. A real page's rounds shrink the
    # string fast; a deeply nested one's lose one pair each: the rounds stop when one removes
    # less than 1/_MIN_SHRINK of the string, or have read it _ROUND_BUDGET times in all, and
    # the scan below takes what is left.
    budget = _ROUND_BUDGET * len(tags)
    while budget > 0:
        size = len(tags)
        budget -= size
        tags, cancelled = _PAIR.subn("", tags)
        if not cancelled:
            break
        rounds += 1
        if (size - len(tags)) * _MIN_SHRINK < size:
            break
    open_names: list[str] = []
    open_count: dict[str, int] = {}
    for tag in tags.split(_SEP):  # what is left: the scan's own steps, without cutting
        if not tag:
            continue
        if tag[0] == "/":
            _close(open_names, open_count, tag[1:])
            continue
        if tag in _FLAT or tag in _RAW_TEXT:
            continue
        _push(open_names, open_count, tag)
        if len(open_names) + rounds >= limit:  # not proven: the exact scan decides
            return False
    return rounds < limit


def _push(open_names: list[str], open_count: dict[str, int], name: str) -> None:
    """A start tag: the element is open."""
    open_names.append(name)
    open_count[name] = open_count.get(name, 0) + 1


def _close(open_names: list[str], open_count: dict[str, int], name: str) -> None:
    """An end tag: the innermost open element of its name closes, and every one inside it; with
    none open, nothing."""
    if open_count.get(name):
        while True:
            top = open_names.pop()
            open_count[top] -= 1
            if top == name:
                break


def _scan(html: str, end: int, limit: int) -> str:
    """The cap itself: one pass over the tags, tracking the open elements by name."""
    open_names: list[str] = []
    open_count: dict[str, int] = {}
    unwrapped: dict[str, int] = {}  # start tags removed, per name, whose end tags go too
    cuts: list[tuple[int, int]] = []
    skip_to = 0  # inside a comment or raw text until here: tags there are text
    for m in _TOKEN.finditer(html, 0, end):
        if m.start() < skip_to:
            continue
        comment, slash, name = m.groups()  # one call: this loop runs once per tag of every page
        if comment:  # a comment runs to "-->", or to the end of the page
            close = html.find("-->", m.end())
            if close < 0:
                break
            skip_to = close + 3
            continue
        if name is None:  # <!doctype>, <?xml ...?>
            continue
        name = name.lower()
        if name in _FLAT:
            continue
        if slash:
            # An end tag closes the innermost element of its name: an unwrapped
            # one (they are deeper than every open one), else an open one.
            if unwrapped.get(name):
                unwrapped[name] -= 1
                cuts.append(m.span())
            else:
                _close(open_names, open_count, name)
            continue
        if name in _RAW_TEXT:
            close_tag = _RAW_END[name].search(html, m.end())
            if close_tag is None:  # the rest of the page is its text
                break
            skip_to = close_tag.start()
            continue
        if len(open_names) >= limit:
            unwrapped[name] = unwrapped.get(name, 0) + 1
            cuts.append(m.span())
            continue
        _push(open_names, open_count, name)
    if not cuts:
        return html
    parts: list[str] = []
    last = 0
    for start, stop in cuts:
        parts.append(html[last:start])
        last = stop
    parts.append(html[last:])
    return "".join(parts)
