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
"""

from __future__ import annotations

import re

MAX_DEPTH = 512

# Any tag-like token: a comment opener, a start or end tag, or <!doctype>/<?...>.
_TOKEN = re.compile(r"<(?:(!--)|(/?)([A-Za-z][^\s/>]*)[^>]*>|[!?][^>]*>)")
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


def cap_depth(html: str, limit: int = MAX_DEPTH) -> str:
    """``html`` with elements nested deeper than ``limit`` unwrapped (their text kept).

    Returns ``html`` itself when nothing is nested that deep.
    """
    if html.count("<") <= limit:  # too few tags to nest that deep
        return html
    end = html.rfind(">") + 1  # past the last ">" no tag can close: bounds every match
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
            elif open_count.get(name):
                while True:
                    top = open_names.pop()
                    open_count[top] -= 1
                    if top == name:
                        break
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
        open_names.append(name)
        open_count[name] = open_count.get(name, 0) + 1
    if not cuts:
        return html
    parts: list[str] = []
    last = 0
    for start, stop in cuts:
        parts.append(html[last:start])
        last = stop
    parts.append(html[last:])
    return "".join(parts)
