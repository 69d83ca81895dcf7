"""What the walk builds: output lines and the line range of every block element.

One line per paragraph, heading, list item or table row; for every block element an
:class:`Elem` recording the range of lines it contains. Every step after the walk (scoring
candidates, choosing the main block, cleaning it) works on these, without touching the tree
again.
"""

from __future__ import annotations

HEADINGS = frozenset("h1 h2 h3 h4 h5 h6".split())

CELL = "\x00"  # marks a table-cell boundary inside a line being built


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
        # " ".join(s.split()) is re.sub(r"\s+", " ", s).strip() (str.split and \s share one
        # definition of whitespace), without the regex engine: this runs once per line.
        if CELL in raw:
            cells = (" ".join(c.split()) for c in raw.split(CELL))
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
