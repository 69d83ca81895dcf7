"""Tests for kinfuse.corpus.extract: main text and title of HTML pages, and quality on the real dev pages."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest
from corpus_site import ARTICLE_HTML, ARTICLE_SENTENCES, CHROME_MARKERS

from kinfuse.corpus import extract_text, extract_title


def test_extract_keeps_article_and_drops_chrome() -> None:
    text = extract_text(ARTICLE_HTML)
    for sentence in ARTICLE_SENTENCES:
        assert sentence in text
    for marker in CHROME_MARKERS:
        assert marker not in text, marker
    assert "A record of the coast" in text  # headings stay
    assert "- Logbooks: 41" in text  # list items get "- "
    assert "Year | Storms" in text and "1961 | 14" in text  # rows: cells joined by " | "


def test_extract_structure_and_normalisation() -> None:
    html = (
        "<html><body><div class='content'>"
        "<p>Caf\u0065\u0301   au\tlait &amp; cr&egrave;me, with    spaces and entities &mdash; fine.</p>"
        "<p>Line one<br>Line two</p><p></p><p>   </p>"
        "<p>Last paragraph of the story, which is long enough to count as prose.</p>"
        "</div></body></html>"
    )
    text = extract_text(html)
    assert "Caf\u00e9 au lait & cr\u00e8me, with spaces and entities \u2014 fine." in text  # NFC, entities
    assert "Line one\nLine two" in text
    assert "\n\n\n" not in text and "  " not in text and "\t" not in text


def test_extract_picks_densest_block_without_semantic_markup() -> None:
    prose = " ".join(ARTICLE_SENTENCES)
    links = "".join(f"<li><a href='/{i}'>Link number {i} to elsewhere</a></li>" for i in range(30))
    html = (
        f"<html><body><div id='left'><ul>{links}</ul></div>"
        f"<div id='story'><p>{prose}</p><p>{prose}</p></div>"
        f"<div id='right'><ul>{links}</ul></div></body></html>"
    )
    text = extract_text(html)
    assert ARTICLE_SENTENCES[0] in text
    assert "Link number" not in text


def test_extract_degenerate_inputs() -> None:
    assert extract_text("") == ""
    assert extract_text("   ") == ""
    assert extract_text("<html><body><nav>only chrome</nav></body></html>") == ""
    assert extract_text("<p>just a fragment</p>") == "just a fragment"
    deep = "<div>" * 3000 + "<p>deeply nested text survives</p>" + "</div>" * 3000
    assert "deeply nested text survives" in extract_text(deep)


def test_extract_title() -> None:
    assert extract_title(ARTICLE_HTML) == "The keeper of Varnholm"
    assert extract_title("<html><body><h1>Only &amp; heading</h1></body></html>") == "Only & heading"
    assert extract_title("<p>nothing</p>") == ""


def _dev_dir() -> Path:
    # shared/ lies beside the repository clone (CI clones it elsewhere).
    return Path(__file__).resolve().parents[2].parent / "shared" / "extraction"


def test_extract_dev_set_f1() -> None:
    """Main-text quality on the real dev pages, with the benchmark's own scorer."""
    root = _dev_dir()
    if not (root / "score.py").exists() or not (root / "dev" / "ground-truth.json").exists():
        pytest.skip(f"extraction dev set not found at {root}")
    spec = importlib.util.spec_from_file_location("kinfuse_extraction_score", root / "score.py")
    assert spec is not None and spec.loader is not None
    scorer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scorer)
    truth = json.loads((root / "dev" / "ground-truth.json").read_text(encoding="utf-8"))
    pred = {}
    for page_id, item in truth.items():
        html = gzip.decompress((root / "dev" / "html" / f"{page_id}.html.gz").read_bytes())
        pred[page_id] = {"articleBody": extract_text(html.decode("utf-8", "replace"), item.get("url"))}
    metrics = scorer.score(truth, pred)
    assert metrics["f1"] >= 0.90, metrics


def _max_depth(html: str) -> int:
    from selectolax.lexbor import LexborHTMLParser

    deepest, stack = 0, [(LexborHTMLParser(html).root, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node.iter(include_text=False))
    return deepest


def test_deep_page_flattened_before_parsing_and_extracted() -> None:
    """100k nested blocks: the parser builds at most 512 levels (as browsers do), every
    paragraph's text is kept, and nothing recurses (no RecursionError)."""
    from kinfuse.corpus.extract.depth import MAX_DEPTH, cap_depth

    n = 100_000
    para = "<p>Deep paragraph number {} holds a sentence of real prose, with commas, to keep.</p>"
    html = "<html><body>" + "".join(f"<div>{para.format(i)}" if i % 20_000 == 0 else "<div>" for i in range(n))
    html += "</div>" * n + "<p>After the nesting, a closing sentence of prose, also kept.</p></body></html>"
    capped = cap_depth(html)
    assert _max_depth(capped) <= MAX_DEPTH + 8
    text = extract_text(html)
    for i in range(0, n, 20_000):
        assert f"Deep paragraph number {i} holds" in text
    shallow = "<html><body>" + "<div>" * 50 + "<p>x</p>" + "</div>" * 50 + "</body></html>"
    assert cap_depth(shallow) is shallow  # pages within the cap are parsed as they are
