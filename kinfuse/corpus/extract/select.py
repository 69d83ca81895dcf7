"""Choosing the main content: the best-scored block, climbed and expanded to the whole article.

The top-scored block is often only part of the article (one section, one
wrapper between two ad slots), so :func:`select_main` climbs from it to the
element holding the whole article and adds siblings that read like more of it,
never past a semantic container (``<article>``, ``<main>``...) holding most of
the page's prose: the page itself says where its article ends.
"""

from __future__ import annotations

import re

from .lines import Elem
from .render import block_copies
from .score import PROSE_LINE, Page, score_blocks

_SENTENCE_END = re.compile(r"\.( |$)")
_DIGITS = re.compile(r"\d+")
# A section beside the main block joins it from this many characters of prose (200 left out
# short feature blocks of service and product pages: a heading and one sentence), or as a table
# or definition list of at least _FACT_ROWS rows (benchmarks/README.md, "Short sections").
_SECTION_CHARS = 100
_FACT_ROWS = 2
_ROW_TAGS = frozenset({"tr", "dt", "dd"})
_MAIN_SHARE = 0.6
# ... unless the page's <h1> comes before the main block with this many h2/h3 headings between
# them: the block is then one section of a landing page (its FAQ), not the article the h1 heads.
_SECTIONS_BEFORE = 3
_SECTION_HEADINGS = frozenset({"h2", "h3"})
# A main block holding less than this share of the text the walk kept (chrome already
# skipped) is one part of a page of many parts, unless it is an article: at least
# _ARTICLE_PARAGRAPHS prose lines holding _ARTICLE_PROSE of the page's prose (select_main).
_PAGE_OF_PARTS = 0.3
_ARTICLE_CHARS = 300
_ARTICLE_PROSE = 0.75
# When this many sections joined the main block (_sections), the page is a landing page of many
# parts: its hero lead, plan lists and short feature blocks that no section test keeps are
# content too, and the whole walked page is the better answer (WCXB dev: 20 pages up, 9 down,
# service +0.006; 4 sections: 14 down, 6: service +0.005).
_MANY_SECTIONS = 5


def _is_ancestor(elems: list[Elem], anc: int, idx: int) -> bool:
    """``anc`` is ``idx`` or one of its ancestors (descendants are numbered after it)."""
    return anc >= 0 and anc <= idx < elems[anc].last


def _within(elems: list[Elem], idx: int, limit: int) -> bool:
    return limit < 0 or _is_ancestor(elems, limit, idx)


def _semantic_root(page: Page) -> int:
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


def _climb(elems: list[Elem], scored: list[int], top: int, limit: int = -1) -> int:
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


def _expand(page: Page, top: int, limit: int = -1) -> int:
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


def _lca(elems: list[Elem], a: int, b: int) -> int:
    while a >= 0 and not _is_ancestor(elems, a, b):
        a = elems[a].parent
    return a


def _repeated(page: Page, top: int, limit: int = -1) -> int:
    """The container of the repeated items the best block is one of, or ``top``.

    Listing and collection pages (cards, teasers, products) and forum threads
    (posts) are many items of one template; the best-scored block is one of
    them. Items of one template share their tag and class (ids and numbers
    aside); their lowest common ancestor holds them all.
    """
    elems = page.b.elems
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(elems):
        if e.attr and e.end > e.start:
            groups.setdefault(e.tag + " " + _DIGITS.sub("", e.attr), []).append(i)
    cand = top
    for _ in range(3):
        e = elems[cand]
        if e.tag in ("body", "html") or not _within(elems, cand, limit):
            break
        if e.attr:
            same: list[int] = []
            for i in groups.get(e.tag + " " + _DIGITS.sub("", e.attr), ()):
                if (not same or not _is_ancestor(elems, same[-1], i)) and _within(elems, i, limit):
                    same.append(i)
            if len(same) >= 3:
                anc = _lca(elems, same[0], same[-1])
                if anc >= 0 and elems[anc].tag not in ("body", "html"):
                    items = sum(page.text_len(elems[i]) for i in same)
                    if items >= 0.5 * page.text_len(elems[anc]) and page.text_len(elems[anc]) > page.text_len(elems[top]):
                        return anc
        cand = e.parent
        if cand < 0:
            break
    return top


def _is_section(page: Page, e: Elem) -> bool:
    """A block that reads as a content section of its own, with few links: prose, or rows of a
    table or definition list (a product's specifications, a plan's features), which hold facts
    but no sentences.

    A long line is prose here whatever its tag but a list item (score.Page's "good" text leaves
    headings and rows out, to score articles): landing pages set their body text in heading
    tags for its type size."""
    n = page.text_len(e)
    if page.link_density(e) > 0.2:
        return False
    b = page.b
    prose = rows = row_chars = 0
    for i in range(e.start, e.end):
        line = b.lines[i]
        tag = b.elems[b.owner[i]].tag if b.owner[i] >= 0 else ""
        if tag in _ROW_TAGS:
            rows += 1
            row_chars += len(line)
        if len(line) >= PROSE_LINE and tag != "li" and b.link_chars[i] < 0.3 * len(line):
            prose += len(line)
    return (n >= _SECTION_CHARS and prose >= 0.4 * n) or (rows >= _FACT_ROWS and row_chars >= 0.6 * n)


def _sections_before(page: Page, first: int) -> bool:
    """The page's first ``<h1>`` comes before line ``first`` with _SECTIONS_BEFORE or more h2/h3
    headings between them. An article's headline stands right above its body (a byline, a date
    between); a service page's stands above its hero and feature sections, and the block holding
    most of its prose is a section further down (an FAQ of long answers)."""
    b = page.b
    h1 = -1
    for i in range(first):
        owner = b.owner[i]
        tag = b.elems[owner].tag if owner >= 0 else ""
        if h1 < 0:
            if tag == "h1":
                h1 = i
                heads = 0
        elif tag in _SECTION_HEADINGS:
            heads += 1
            if heads >= _SECTIONS_BEFORE:
                return True
    return False


def _sections(page: Page, top: int, ranges: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """Add the content sections around the main block, up to the page's wrapper.

    Service and landing pages spread their content over hero, feature,
    pricing and FAQ sections, each a block of its own: the best block is one
    of them. Sections beside it and beside its ancestors join when they read
    as content (prose, few links); chrome was already skipped by the walk.
    """
    elems = page.b.elems
    lines = page.b.lines
    main_good = sum(page.good[end] - page.good[start] for start, end in ranges)
    if main_good >= _MAIN_SHARE * page.good[-1] and not _sections_before(page, ranges[0][0]):
        return ranges  # an article: what lies around it is comments, bios, teasers
    taken = set(ranges)
    seen = {lines[i] for start, end in ranges for i in range(start, end)}
    out = list(ranges)
    child = top
    while True:
        parent = elems[child].parent
        if parent < 0 or child == limit or elems[child].sem:
            break  # the page said where its content ends
        for sib in elems[parent].children:
            e = elems[sib]
            if sib == child or (e.start, e.end) in taken or e.end <= e.start or not _is_section(page, e):
                continue
            # Pages repeat blocks for other screen sizes: a copy adds nothing.
            new = sum(len(lines[i]) for i in range(e.start, e.end) if lines[i] not in seen)
            if new >= 0.5 * page.text_len(e):
                out.append((e.start, e.end))
                seen.update(lines[e.start : e.end])
        if elems[parent].tag in ("body", "html"):
            break
        child = parent
    out.sort()
    return out


def select_main(page: Page) -> list[tuple[int, int]]:
    """Line ranges of the main content: :func:`_select`'s, and when that is the whole walked page,
    from its first ``<h1>`` on if no prose comes before it. What precedes the page's headline
    then is its header that no ``<header>`` or ``<nav>`` marks ("Sign in", "Open in app", an
    announcement bar, a menu of links). On WCXB dev 49 pages move, 38 of them up."""
    ranges = _select(page)
    b = page.b
    if ranges != [(0, len(b.lines))]:
        return ranges
    for i in range(len(b.lines)):
        owner = b.owner[i]
        if owner >= 0 and b.elems[owner].tag == "h1":
            return [(i, len(b.lines))] if page.good[i] == 0 else ranges
    return ranges


def _select(page: Page) -> list[tuple[int, int]]:
    """Line ranges of the main content.

    When the best block and what joined it hold under a third of the text the walk kept, the
    page is not one article with chrome around it but a page of many parts (a listing's rows,
    a shop's product grid beside its filters, a landing page's sections): the blocks scored
    by their prose miss most of it, and the whole walked page is the better answer. A block of
    several paragraphs holding most of the page's prose stays an article, however many link
    teasers surround it. Chosen on WCXB dev (benchmarks/README.md, "Page types").
    """
    ranges, top, sem = _main_ranges(page)
    if top >= 0:
        own = len(ranges)
        ranges = _sections(page, top, ranges, sem)
        if len(ranges) - own >= _MANY_SECTIONS:  # sections joined
            return [(0, len(page.b.lines))]
    # The main block's copies of its own blocks (the same section repeated for other screen
    # sizes, which render drops) count once: three copies of one section are not three times
    # the page's prose.
    copies = _copies(page, ranges)
    total = page.chars[-1] - copies[0]
    chosen = sum(page.chars[end] - page.chars[start] for start, end in ranges) - copies[0]
    if not total or chosen >= _PAGE_OF_PARTS * total:
        return ranges
    good = page.good
    prose = sum(good[end] - good[start] for start, end in ranges) - copies[1]
    chosen_links = sum(page.links[end] - page.links[start] for start, end in ranges) - copies[2]
    rest_plain = (total - chosen) - (page.links[-1] - copies[2] - chosen_links)
    if prose >= _ARTICLE_PROSE * good[-1] and prose >= _ARTICLE_CHARS and rest_plain < prose:
        return ranges
    return [(0, len(page.b.lines))]


def _copies(page: Page, ranges: list[tuple[int, int]]) -> tuple[int, int, int]:
    """Characters, prose characters and link characters of the blocks in ``ranges`` that
    repeat an earlier block of them line for line (render.block_copies: what render drops)."""
    chars, good, links = page.chars, page.good, page.links
    dup = [0, 0, 0]
    for i in block_copies(page.b, ranges):
        dup[0] += chars[i + 1] - chars[i]
        dup[1] += good[i + 1] - good[i]
        dup[2] += links[i + 1] - links[i]
    return dup[0], dup[1], dup[2]


def _main_ranges(page: Page) -> tuple[list[tuple[int, int]], int, int]:
    """The main block's line ranges, the block and the semantic root (-1 for none)."""
    b = page.b
    elems = b.elems
    if not b.lines:
        return [], -1, -1
    scored = score_blocks(page)
    if not scored:
        return [(0, len(b.lines))], -1, -1
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
    top = _repeated(page, top, sem)
    top_score = max(top_score, elems[top].score)

    # Siblings that look like more of the same article join it (not beyond
    # a semantic container: the page said where its article ends).
    parent = elems[top].parent
    if parent < 0 or top == sem or elems[top].sem:
        return [(elems[top].start, elems[top].end)], top, sem
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
    return ranges, top, sem
