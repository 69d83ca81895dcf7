"""Tests for kinfuse.corpus.extract: main text and title of HTML pages, and quality on the real dev pages."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest
from corpus_site import ARTICLE_HTML, ARTICLE_SENTENCES, CHROME_MARKERS, FOOTER, NAV, chrome_page, own_prose, paragraphs

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
    # shared/ lies beside the repository clone (CI clones it elsewhere); worktrees sit one
    # level deeper (<root>/wt/<name>), as in test_corpus_wcxb.py.
    repo = Path(__file__).resolve().parents[2]
    for base in (repo.parent, repo.parent.parent):
        if (base / "shared" / "extraction" / "score.py").exists():
            return base / "shared" / "extraction"
    return repo.parent / "shared" / "extraction"


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


def test_extract_keeps_noscript_page_drops_javascript_notice_and_copies() -> None:
    # Discourse's crawler view: the whole thread inside <noscript>.
    posts = "".join(f"<div class='topic-body crawler-post'><p>{own_prose('post', i)}</p></div>" for i in range(4))
    html = (
        "<html><body><noscript><p>You need to enable JavaScript to run this app.</p></noscript>"
        f"<noscript><div id='main-outlet'>{posts}</div></noscript>{FOOTER}</body></html>"
    )
    text = extract_text(html)
    for i in range(4):
        assert own_prose("post", i) in text
    assert "enable JavaScript" not in text
    # A <noscript> copy of text the page shows anyway is not repeated.
    article = paragraphs("article", 4)
    copy = f"<html><body><div class='post'>{article}</div><noscript>{article}</noscript></body></html>"
    assert extract_text(copy).count(own_prose("article", 0)) == 1


def test_extract_hiding_utility_classes_and_layout_modifiers_are_not_chrome() -> None:
    body = paragraphs("body", 3)
    for wrapper in ("overflow-hidden", "hidden-md-down", "hidden lg:block", "p-body-main p-body-main--withSidebar"):
        html = chrome_page(f"<div class='{wrapper}'><div>{body}</div></div>")
        assert own_prose("body", 1) in extract_text(html), wrapper
    hidden = f"<html><body><div>{body}</div><div class='hidden'><p>{own_prose('secret', 0)}</p></div></body></html>"
    assert own_prose("secret", 0) not in extract_text(hidden)


def test_extract_page_wide_form_is_a_wrapper() -> None:
    body = paragraphs("form", 3)
    html = (
        f"<html><body><form id='aspnetForm' action='/page.aspx'>{NAV}<div>{body}</div></form>"
        "<form class='search'><p>Search this site for anything you like at all today.</p></form></body></html>"
    )
    text = extract_text(html)
    assert own_prose("form", 2) in text
    assert "Search this site" not in text


def test_extract_forum_thread_of_comments_is_content_but_article_comments_are_not() -> None:
    posts = "".join(
        f"<article class='comment ipsComment'><div class='comment-body'><p>{own_prose('post', i)}</p></div></article>"
        for i in range(5)
    )
    forum = chrome_page(f"<h1>Topic title</h1><div class='cTopic comments'>{posts}</div>")
    text = extract_text(forum)
    for i in range(5):
        assert own_prose("post", i) in text
    article = paragraphs("article", 6)
    blog = (
        f"<html><body><article><div class='entry-content'>{article}</div></article>"
        f"<div class='comments'><div class='comment-body'><p>{own_prose('comment', 0)}</p></div></div></body></html>"
    )
    text = extract_text(blog)
    assert own_prose("article", 5) in text and own_prose("comment", 0) not in text


def test_extract_listing_keeps_every_card() -> None:
    cards = "".join(
        f"<div class='card'><h3><a href='/c/{i}'>Course {i}</a></h3>"
        f"<div class='card-body item-body-{i}'><p>{own_prose('card', i)}</p></div></div>"
        for i in range(6)
    )
    html = chrome_page(f"<div class='grid'>{cards}</div>")
    text = extract_text(html)
    for i in range(6):
        assert own_prose("card", i) in text
    assert "Copyright" not in text and "Pricing" not in text


def test_extract_service_page_keeps_every_section() -> None:
    def section(name: str, n: int) -> str:
        paras = "".join(f"<p>{own_prose(name, i)}</p>" for i in range(n))
        return f"<section class='{name}'><h2>{name.title()}</h2>{paras}</section>"

    related = "<div class='more'>" + "".join(f"<p><a href='/x{i}'>{own_prose('link', i)}</a></p>" for i in range(3))
    html = (
        f"<html><body>{NAV}<div class='page'>{section('hero', 1)}{section('features', 3)}"
        f"{section('pricing', 2)}{section('faq', 2)}{related}</div></div>{FOOTER}</body></html>"
    )
    text = extract_text(html)
    for name, n in (("hero", 1), ("features", 3), ("pricing", 2), ("faq", 2)):
        for i in range(n):
            assert own_prose(name, i) in text, (name, i)
    assert own_prose("link", 0) not in text and "Copyright" not in text


def test_extract_service_page_keeps_a_section_whose_text_is_set_in_heading_tags() -> None:
    # Landing pages set body text in heading tags for its type size (a "pillars" block of h3
    # titles and h5 sentences): beside the intro (the best block) and a details block, that
    # section is content as much as theirs. Each block sits in a page builder's wrapper.
    pillars = "".join(
        f"<h3>Pillar {name}</h3><h5>{own_prose('pillar', i)}</h5>" for i, name in enumerate(("one", "two", "three"))
    )
    details = "".join(f"<p>{_plain('details', i)}</p>" for i in range(3))
    blocks = (
        f"<section class='intro'>{paragraphs('intro', 2)}</section>",
        f"<section class='pillars'><h2>Our pillars</h2>{pillars}</section>",
        f"<section class='details'>{details}</section>",
    )
    wrapped = "".join(f"<div class='{name}'>{b}</div>" for name, b in zip(("hero", "band", "grid"), blocks))
    html = chrome_page(f"<div class='wrap'>{wrapped}</div>")
    text = extract_text(html)
    for i in range(3):
        assert own_prose("pillar", i) in text and _plain("details", i) in text, i
    assert own_prose("intro", 1) in text and "Copyright" not in text


def _plain(tag: str, n: int) -> str:
    return f"The {tag} paragraph number {n} is a plain sentence without any pause that runs on for a while."


def _feature(name: str) -> str:
    return f"The blade is {name} enough for the tightest gaps in phones, tablets, game consoles and laptops alike."


def test_extract_product_page_joins_its_spec_table_and_short_feature_sections() -> None:
    # A product page: the description is the best block; beside it a specification table (facts,
    # no sentences) and feature sections of a heading and one short sentence each. They are the
    # product's content; the related products' link list is not.
    specs = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in
                    (("Material", "301 stainless steel"), ("Length", "21 cm"), ("Part number", "IF145-259-1")))
    features = "".join(
        f"<section><h2>Feature {name}</h2><p>{_feature(name)}</p></section>" for name in ("thin", "flexible", "sharp")
    )
    related = "<ul>" + "".join(f"<li><a href='/p/{i}'>Related tool number {i}</a></li>" for i in range(4)) + "</ul>"
    html = (
        f"<html><body>{NAV}<div class='product'><div class='description'>{paragraphs('description', 2)}</div>"
        f"<div class='specs'><table>{specs}</table></div>{features}{related}</div>{FOOTER}</body></html>"
    )
    text = extract_text(html)
    assert own_prose("description", 1) in text
    assert "Material | 301 stainless steel" in text and "Part number | IF145-259-1" in text
    for name in ("thin", "flexible", "sharp"):
        assert _feature(name) in text
    assert "Related tool number" not in text and "Copyright" not in text


def test_extract_listing_keeps_linked_titles_but_not_link_lists() -> None:
    cards = "".join(
        f"<div class='card'><h3><a href='/c/{i}'>Course number {i} title</a></h3>"
        f"<p>{own_prose('card', i)}</p><a href='/c/{i}'>A practical course on subject {i} for beginners</a></div>"
        for i in range(6)
    )
    links = "<ul>" + "".join(f"<li><a href='/r/{i}'>Related story number {i} of many</a></li>" for i in range(6))
    html = chrome_page(f"<div class='grid'>{cards}{links}</ul></div>")
    text = extract_text(html)
    for i in range(6):
        assert f"Course number {i} title" in text
        assert f"A practical course on subject {i} for beginners" in text
    assert "Related story number" not in text


def test_extract_keeps_link_dense_item_lists_and_chrome_named_blocks_inside_the_content() -> None:
    # A collection page: an intro, then product cards whose text is mostly their linked names
    # (a link-dense block), and a spec table in a block named like chrome ("meta", "tools").
    # Inside the chosen content they are the page's items and facts, not navigation.
    items = "".join(
        f"<li class='product'><a href='/p/{i}'>Waxed canvas field jacket model {i}</a> <span>in stock, ${40 + i}.00</span></li>"
        for i in range(8)
    )
    specs = (
        "<div class='product-meta tools'><table><tr><td>Weight</td><td>1.2 kg</td></tr>"
        "<tr><td>Fabric</td><td>Waxed cotton canvas</td></tr></table></div>"
    )
    html = (
        f"<html><body>{NAV}<div class='collection'><h1>Jackets</h1><p>{own_prose('intro', 0)}</p>"
        f"<p>{own_prose('intro', 1)}</p><ul class='grid'>{items}</ul>{specs}</div>{FOOTER}</body></html>"
    )
    text = extract_text(html)
    assert own_prose("intro", 0) in text
    for i in range(8):
        assert f"- Waxed canvas field jacket model {i} in stock, ${40 + i}.00" in text, i
    assert "Weight | 1.2 kg" in text and "Fabric | Waxed cotton canvas" in text
    assert "Copyright" not in text and "Pricing" not in text


def test_extract_page_of_many_parts_keeps_the_whole_page() -> None:
    # A shop's collection page: one intro paragraph, then product cards with no prose at all
    # (name, price, rating). The intro is the best-scored block but a small part of the page.
    cards = "".join(
        f"<div class='tile'><h4>Trail shoe {i}</h4><div class='price'>${90 + i}.95</div><div class='rating'>4.{i} stars</div></div>"
        for i in range(12)
    )
    html = (
        f"<html><body>{NAV}<div class='wrap'><div class='intro'><p>{own_prose('intro', 0)}</p></div>"
        f"<div class='results'>{cards}</div></div>{FOOTER}</body></html>"
    )
    text = extract_text(html)
    assert own_prose("intro", 0) in text
    for i in range(12):
        assert f"Trail shoe {i}" in text and f"${90 + i}.95" in text, i
    assert "Copyright" not in text and "Pricing" not in text


def test_extract_content_of_linked_items_keeps_them() -> None:
    # An index page: a short heading line, then rows that are each one link (a catalogue's
    # subject list). Content that is mostly link text is a list of items, not link chrome.
    rows = "".join(f"<li><a href='/s/{i}'>Clocks and watches, volume {i}</a></li>" for i in range(15))
    html = chrome_page(f"<div class='subjects'><h2>Narrower terms:</h2><ul>{rows}</ul></div>")
    text = extract_text(html)
    for i in range(15):
        assert f"- Clocks and watches, volume {i}" in text, i
    assert "Copyright" not in text


def test_extract_drops_a_layout_copy_of_a_long_line() -> None:
    # Product pages render their description twice (mobile and desktop layouts, one hidden by
    # CSS the extractor cannot see): the copy adds nothing. Short lines may repeat (prices).
    description = (
        "A wheel thrown stoneware mug with a matte speckled glaze outside and a clear glazed interior, "
        "fired twice and finished by hand in our studio."
    )
    block = f"<div class='desc'><p>{description}</p><p>Volume: 350 ml</p><p>$60.00</p></div>"
    other = f"<div class='desc'><p>{description}</p><p>Volume: 350 ml</p><p>$64.00</p></div>"
    html = chrome_page(f"<div class='product'><h1>Speckle mug</h1>{block}{other}</div>")
    text = extract_text(html)
    assert text.count(description) == 1
    assert text.count("Volume: 350 ml") == 2 and "$64.00" in text


def test_extract_drops_a_layout_copy_of_a_block_of_short_lines() -> None:
    # The same block twice, line for line (a feature list in the mobile and the desktop layout):
    # the second is a copy, though each of its lines is short. A block that only starts the same
    # way is not a copy.
    perks = ("Fast and free shipping on every order.", "Risk-free 99 day trial.", "Lifetime warranty on the frame.")
    features = "".join(f"<li>{f}</li>" for f in perks)
    block = f"<div class='perks'><ul>{features}</ul></div>"
    other = f"<div class='perks'><ul>{features}<li>Made in Portugal.</li></ul></div>"
    desc = paragraphs("product", 3)
    body = f"<div class='product'><h1>Wallet</h1>{block}{desc}{block}{other}</div>"
    html = chrome_page(f"{body}")
    text = extract_text(html)
    assert own_prose("product", 2) in text
    assert text.count("Risk-free 99 day trial.") == 2  # the first block and the longer one
    assert "Made in Portugal." in text


def test_extract_keeps_the_linked_names_of_list_item_cards() -> None:
    # A shop's grid as a list: each <li> holds the product's linked name, then its price and a
    # badge. The name is a link line, but the item holds more than its link: a card, not a menu.
    # A list of bare links (each item only its link) is still dropped.
    cards = "".join(
        f"<li class='tile'><a href='/p/{i}'>Alpine boot {i}</a><div class='price'>${120 + i}.00</div>"
        f"<div class='badge'>Top rated</div></li>"
        for i in range(10)
    )
    links = "".join(f"<li><a href='/r/{i}'>Guide number {i}</a></li>" for i in range(4))
    html = (
        f"<html><body>{NAV}<div class='wrap'><div class='intro'>{paragraphs('intro', 1)}</div>"
        f"<ul class='grid'>{cards}</ul><ul class='more'>{links}</ul></div>{FOOTER}</body></html>"
    )
    text = extract_text(html)
    assert own_prose("intro", 0) in text
    for i in range(10):
        assert f"Alpine boot {i}" in text and f"${120 + i}.00" in text, i
    assert "Guide number" not in text and "Copyright" not in text


def test_extract_whole_page_starts_at_its_headline() -> None:
    # A page of many parts is taken whole; what comes before its <h1> and holds no prose is the
    # site's header without <header> or <nav> markup: account links, an app banner.
    top = "<div class='topbar'><div><a href='/app'>Open in app</a></div><div>Sign in</div><div>Write</div></div>"
    cards = "".join(
        f"<div class='tile'><h4>Trail shoe {i}</h4><div class='price'>${90 + i}.95</div><div class='rating'>4.{i} stars</div></div>"
        for i in range(12)
    )
    html = (
        f"<html><body>{NAV}{top}<div class='wrap'><h1>Trail shoes</h1><div class='intro'><p>{own_prose('intro', 0)}</p></div>"
        f"<div class='results'>{cards}</div></div>{FOOTER}</body></html>"
    )
    text = extract_text(html)
    assert own_prose("intro", 0) in text and "Trail shoe 11" in text
    assert "Sign in" not in text and "Write" not in text


def test_extract_drops_a_line_repeating_the_one_before_it() -> None:
    # A shop's cards print each name twice (over the photo and under it) and the price twice (for
    # screen readers): a copy of the line just kept. The same badge on several cards stays.
    cards = "".join(
        f"<div class='tile'><div class='name'>Trail shoe {i}</div><div class='title'>Trail shoe {i}</div>"
        f"<div class='price'>${90 + i}.95</div><div class='sale'>${90 + i}.95</div><div class='badge'>Top rated</div></div>"
        for i in range(12)
    )
    html = chrome_page(f"<div class='wrap'><p>{own_prose('intro', 0)}</p><div class='results'>{cards}</div></div>")
    text = extract_text(html)
    assert own_prose("intro", 0) in text
    for i in range(12):
        assert text.count(f"Trail shoe {i}\n") == 1 and text.count(f"${90 + i}.95") == 1, i
    assert text.count("Top rated") == 12


def test_extract_keeps_linked_headings_of_one_word() -> None:
    # A chart of films: each card's linked heading is its title, often one word; the card's
    # "Details" link under it is still a pointer elsewhere.
    titles = ["Shelter", "Hamnet", "Sinners", "Bugonia", "Mercy", "Hoppers", "Firebreak", "Goat"]
    cards = "".join(
        f"<div class='film'><h3><a href='/t/{i}'>{t}</a></h3><div>2026 · 1h {40 + i}m · rated R · drama</div>"
        f"<div><a href='/t/{i}/details'>Details</a></div></div>"
        for i, t in enumerate(titles)
    )
    html = chrome_page(f"<div class='chart'><p>{own_prose('intro', 0)}</p>{cards}</div>")
    text = extract_text(html)
    for t in titles:
        assert f"{t}\n" in text, t
    assert "Details" not in text


def test_extract_drops_the_counters_of_a_posters_panel() -> None:
    # A forum thread: each post's panel says the poster's name, rank and counters ("Posts: 4,032")
    # beside the message. The counters are not the thread; a measure with its unit stays.
    posts = "".join(
        f"<div class='post'><div class='panel'><div>poster{i}</div><div>Posts: {4032 + i}</div>"
        f"<div>Reputation: {12 + i}</div></div><div class='message'><p>{own_prose('reply', i)}</p>"
        f"<p>Weight: {5 + i} kg</p></div></div>"
        for i in range(5)
    )
    html = chrome_page(f"<div class='thread'><h1>Which saw to buy</h1>{posts}</div>")
    text = extract_text(html)
    for i in range(5):
        assert own_prose("reply", i) in text and f"Weight: {5 + i} kg" in text, i
    assert "Posts:" not in text and "Reputation:" not in text


def test_extract_drops_copies_of_a_mid_length_line_but_not_of_items() -> None:
    # A thread repeats each poster's signature (a line of 70-99 characters) under every post: a
    # copy of a line already kept. Pricing plans list the same long feature in each plan, and code
    # samples repeat a line: items and code are the page's content and stay.
    sig = "Retired cabinet maker, forty years at the bench, still learning every single day."
    feature = "- Two rounds of comprehensive revisions based on your feedback, in Word and PDF."
    code = "public static final String ACCOUNT_SID = System.getenv(\"ACCOUNT_SID_OF_YOURS\");"
    posts = "".join(
        f"<div class='post'><p>{own_prose('reply', i)}</p><p>{sig}</p><pre>{code}</pre></div>" for i in range(4)
    )
    plans = "".join(f"<div class='plan'><h3>Plan {i}</h3><ul><li>{feature[2:]}</li></ul></div>" for i in range(3))
    html = chrome_page(f"<div class='thread'><h1>Which saw to buy</h1>{posts}{plans}</div>")
    text = extract_text(html)
    for i in range(4):
        assert own_prose("reply", i) in text, i
    assert text.count(sig) == 1
    assert text.count(feature) == 3 and text.count(code) == 4


def test_extract_drops_bare_numbers_but_not_code_line_numbers() -> None:
    # A thread shows each post's like count as a number on its own line: not what was said. A
    # code block's line numbers, list items and prices are content and stay.
    posts = "".join(
        f"<div class='post'><p>{own_prose('reply', i)}</p><div class='likes'>{37 + i}</div></div>" for i in range(4)
    )
    code = "<pre><div>118</div><div>let total = parts.iter().sum();</div></pre>"
    html = (
        f"<html><body>{NAV}<div class='thread'><h1>Which saw to buy</h1>{posts}{code}"
        f"<ul><li>991</li><li>992</li></ul><p>$120</p></div>{FOOTER}</body></html>"
    )
    text = extract_text(html)
    for i in range(4):
        assert own_prose("reply", i) in text and f"{37 + i}" not in text, i
    assert "118" in text and "- 991" in text and "$120" in text


def test_extract_drops_comments_beside_an_article_even_when_they_outweigh_it() -> None:
    # A blog post of nine paragraphs with a hundred comments under it: the comments hold most of
    # the page's prose, yet they are beside an article of its own, not the page's content.
    comments = "".join(f"<li class='comment'><p>{own_prose('comment', i)}</p></li>" for i in range(100))
    html = (
        f"<html><body>{NAV}<main><div class='entry-content'>{paragraphs('post', 9)}</div>"
        f"<div class='entry-comments' id='comments'><h3>100 Comments</h3><ol class='comment-list'>{comments}</ol></div>"
        f"</main>{FOOTER}</body></html>"
    )
    text = extract_text(html)
    for i in range(9):
        assert own_prose("post", i) in text, i
    assert own_prose("comment", 0) not in text and own_prose("comment", 99) not in text


def test_extract_drops_comments_beside_a_post_written_without_paragraphs() -> None:
    # A blog post whose text is lines separated by <br> (no <p>), with its comment section in
    # the same post wrapper: the paragraph count sees no article outside the comments, the text does.
    post = "<br>".join(own_prose("post", i) for i in range(9))
    comments = "".join(f"<li class='comment'><p>{own_prose('comment', i)}</p></li>" for i in range(30))
    html = chrome_page(
        f"<div class='post-outer'><div class='post-body'>{post}</div>"
        f"<div class='comments' id='comments'><h4>30 comments:</h4><ol>{comments}</ol></div></div>"
    )
    text = extract_text(html)
    assert own_prose("post", 0) in text and own_prose("post", 8) in text
    assert own_prose("comment", 0) not in text and own_prose("comment", 29) not in text


def test_extract_drops_the_author_box_under_an_article() -> None:
    # Under the post, a box about its writer (photo, bio, links to their posts), named
    # "author-box", "author-description", "about-author", "author-section", "author-wrapper",
    # "contributor-box": about the writer, not the article.
    for cls in ("author-box", "author-description", "about-author", "saboxplugin-wrap", "author-section", "author-wrapper",
                "contributor-box"):
        bio = "Karina is the owner of a cleaning company and holds a degree in business; she writes on homes and work."
        html = (
            f"<html><body>{NAV}<div class='post'><h1>House cleaning trends</h1>{paragraphs('post', 4)}"
            f"<div class='{cls}'><p>{bio}</p></div></div>{FOOTER}</body></html>"
        )
        text = extract_text(html)
        assert own_prose("post", 3) in text, cls
        assert "Karina" not in text, cls


def test_extract_drops_closing_headings_over_dropped_links() -> None:
    # After the post, "Related posts" heads a list of links, dropped as link lines: the heading
    # heads nothing kept and goes too. A hero's headline over its buttons, earlier, stays.
    links = "".join(f"<li><a href='/p/{i}'>Another post about sofas number {i}</a></li>" for i in range(4))
    html = (
        f"<html><body>{NAV}<div class='post'><div class='hero'><h2>Sofas that last a lifetime</h2>"
        "<a href='/shop'>Shop now</a></div>"
        f"{paragraphs('post', 4)}<div class='more'><h3>Keep reading elsewhere</h3><ul>{links}</ul></div>"
        f"</div>{FOOTER}</body></html>"
    )
    text = extract_text(html)
    assert own_prose("post", 3) in text and "Sofas that last a lifetime" in text
    assert "Another post" not in text and "Keep reading elsewhere" not in text
