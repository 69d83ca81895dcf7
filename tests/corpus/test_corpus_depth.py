"""Tests for kinfuse.corpus.extract.depth: the fast proof that a page is shallow never skips a cut.

cap_depth first tries to prove from one findall that its exact scan would cut nothing, and runs
the scan only when that fails; the proof must never say "shallow" for a page the scan would cut.
Random markup with a small cap exercises both ways, with the constructs the scan treats
specially: comments (closed and not), raw-text elements (their tags are text), flat and void
elements, unclosed and self-closed tags, stray end tags, mixed case and non-ASCII names.
"""

from __future__ import annotations

import random

from kinfuse.corpus.extract import depth
from kinfuse.corpus.extract.depth import cap_depth

_PIECES = [
    "<div>", "</div>", "<DIV class='a'>", "</Div>", "<span>", "</span>", "<a href='/x'>", "</a>",
    "<section>", "</section>", "<ul>", "</ul>", "<li>", "</li>", "<p>", "</p>", "<br>", "<img src=x>",
    "<svg>", "</svg>", "<path d='M0'/>", "<x-card>", "</x-card>", "<td>", "<table>", "</table>",
    "<!-- <div><div> -->", "<!-- -- > still a comment <span> -->", "<!doctype html>", "<?xml x?>",
    "<script>if (a <b) { '<div>' }</script>", "<SCRIPT type=x><div></ScRiPt >", "<style>p>a{}</style/>",
    "<title><div></title>", "<textarea></div></textarea>", "text ", "a < b ", "<div data-x='1>2'>",
    "<lin\u212a>", "<d\u0130v>", "</d\u0130v>", "<b>", "</b>", "</i>", "< div>", "<div", "x>",
]
_TAILS = ["", "<!-- never closed <div>", "<script> never closed <div>", "</div>" * 3, "<div>" * 4]


def _scan(html: str, limit: int) -> str:
    return depth._scan(html, html.rfind(">") + 1, limit)


def test_cap_depth_equals_the_exact_scan_on_random_markup() -> None:
    rng = random.Random(17)
    fast = cut = 0
    for _ in range(3000):
        limit = rng.randint(2, 12)
        html = "".join(rng.choice(_PIECES) for _ in range(rng.randint(limit, 8 * limit))) + rng.choice(_TAILS)
        expected = _scan(html, limit)
        assert cap_depth(html, limit) == expected, (limit, html)
        if expected is not html:
            cut += 1
        elif html.count("<") > limit and depth._within(html, html.rfind(">") + 1, limit):
            fast += 1
    # Both ways were taken many times: pages proven shallow without the scan, and pages cut.
    assert fast > 300 and cut > 300, (fast, cut)


def test_cap_depth_deep_pages_still_cut_and_nested_pairs_counted() -> None:
    # Well-formed nesting to exactly the cap is kept; one level more is cut, though every
    # start tag has its end tag (cancelled pairs still count one level per round).
    at_cap = "<div>" * 8 + "x" + "</div>" * 8
    assert cap_depth(at_cap, 8) is at_cap
    over = "<div>" * 9 + "x" + "</div>" * 9
    assert cap_depth(over, 8) == "<div>" * 8 + "x" + "</div>" * 8
    # Self-closed foreign elements stay open for the scan until an end tag pops them.
    icons = "<svg>" + "<path/>" * 20 + "</svg>"
    assert cap_depth(icons, 8) == _scan(icons, 8) != icons


def test_the_fast_proof_gives_up_early_on_deeply_nested_pages(monkeypatch) -> None:
    # Each cancelling round of a deep nest removes one pair: going on until the cap would read
    # the whole tag string hundreds of times before the exact scan runs anyway.
    passes = []
    pair = depth._PAIR

    class Counting:
        def subn(self, repl: str, s: str):
            passes.append(len(s))
            return pair.subn(repl, s)

    monkeypatch.setattr(depth, "_PAIR", Counting())
    deep = "<html><body>" + '<div class="share">' * 2000 + "<p>x</p>" + "</div>" * 2000 + "</body></html>"
    assert cap_depth(deep) == _scan(deep, depth.MAX_DEPTH) != deep
    assert passes and sum(passes) <= (depth._ROUND_BUDGET + 1) * passes[0]  # not 512 passes
    # A shallow page is still proven without the exact scan.
    passes.clear()
    shallow = "<html><body>" + "<div><section><span>a</span><b>b</b></section></div>" * 200 + "</body></html>"
    monkeypatch.setattr(depth, "_scan", None)
    assert cap_depth(shallow) is shallow
    assert sum(passes) <= (depth._ROUND_BUDGET + 1) * passes[0]
