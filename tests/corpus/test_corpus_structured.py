"""Tests for kinfuse.corpus.extract.structured: structured data (JSON-LD, microdata posts,
<noscript> copies, the meta description) reaching the extracted text where the page lacks it."""

from __future__ import annotations

import json

from corpus_site import ARTICLE_HTML, ARTICLE_SENTENCES
from selectolax.lexbor import LexborHTMLParser

from kinfuse.corpus import extract_text
from kinfuse.corpus.extract.structured import json_ld, ld_blocks, meta_description, microdata_posts

DESCRIPTION = (
    "Hand-thrown stoneware mug, glazed in a deep sea green; holds 350 ml, safe in the dishwasher "
    "and the microwave, and every piece is signed by the potter who made it."
)


def _page(head: str = "", body: str = "") -> str:
    return f"<html><head><title>T</title>{head}</head><body>{body}</body></html>"


def _ld(data: object) -> str:
    return f'<script type="application/ld+json">{json.dumps(data)}</script>'


SHELL = "<div id='app'><button>Add to cart</button><span>$28</span></div>"


def test_product_json_ld_added_when_the_page_lacks_it() -> None:
    product = {
        "@context": "https://schema.org",
        "@type": "ProductGroup",
        "name": "Sea Green Mug",
        "description": f"<p>{DESCRIPTION}</p>",
        "hasVariant": [{"@type": "Product", "name": "Sea Green Mug, small variant", "description": "x y z"}],
        "offers": {"@type": "Offer", "price": 28},
    }
    text = extract_text(_page(_ld(product), SHELL))
    assert "Sea Green Mug" in text and DESCRIPTION in text  # tags dropped, text kept
    assert "small variant" not in text  # variants are other items, not this page's content
    # Already on the page: not added a second time.
    visible = _page(_ld(product), f"<article><h1>Sea Green Mug</h1><p>{DESCRIPTION}</p></article>")
    assert extract_text(visible).count("signed by the potter") == 1


def test_faq_in_graph_and_entities() -> None:
    faq = {
        "@context": "https://schema.org",
        "@graph": [
            {"@type": "WebPage", "name": "Help"},
            {
                "@type": "FAQPage",
                "mainEntity": [
                    {
                        "@type": "Question",
                        "name": "Can the mug go in the oven?",
                        "acceptedAnswer": {"@type": "Answer", "text": "No &amp; never above 120 degrees: the glaze crazes."},
                    },
                    {
                        "@type": "Question",
                        "name": "How long does shipping take?",
                        "acceptedAnswer": {"@type": "Answer", "text": "Three to five working days within the country."},
                    },
                ],
            },
        ],
    }
    text = extract_text(_page(_ld(faq), SHELL))
    assert "Can the mug go in the oven?" in text
    assert "No & never above 120 degrees: the glaze crazes." in text
    assert "Three to five working days within the country." in text
    assert text.count("Three to five working days") == 1  # the Answer object is not added twice


def test_howto_steps() -> None:
    howto = {
        "@context": "http://schema.org",
        "@type": ["HowTo"],
        "name": "Re-glaze a chipped rim",
        "step": [
            {"@type": "HowToStep", "text": "Sand the chipped edge smooth with wet 400 grit paper."},
            {"@type": "HowToStep", "text": "Brush on two thin coats of food-safe glaze, drying between them."},
        ],
    }
    text = extract_text(_page(_ld(howto), SHELL))
    assert "Sand the chipped edge smooth" in text and "Brush on two thin coats" in text


def test_broken_json_ld_is_skipped() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    head = (
        '<script type="application/ld+json">{"@type": "Product", "name": </script>'
        f'<script type="application/ld+json">{deep}</script>'
        '<script type="APPLICATION/LD+JSON"><!-- {"@type": "Product", "name": "Mug", "description": "Raw\nnewline in a string."} --></script>'
    )
    tree = LexborHTMLParser(_page(head))
    assert len(list(json_ld(tree))) == 1  # the broken and the too-deep ones are skipped
    assert ld_blocks(tree) == ["Mug\n\nRaw\nnewline in a string."]


POST = (
    "<article class='comment message' itemscope itemtype='https://schema.org/Comment'>"
    "<div itemprop='author' itemscope itemtype='https://schema.org/Person'><span itemprop='name'>{who}</span></div>"
    "<time datetime='2024-07-05'>Jul 5, 2024</time>"
    "<div itemprop='text'>{text}<blockquote>quoted <b>bold</b>word</blockquote>after quote</div></article>"
)


def test_microdata_forum_posts() -> None:
    posts = [
        ("ada", "I bought the sea green mug last spring and the glaze has not faded at all."),
        ("brook", "Mine cracked after a year in the dishwasher, so I wash it by hand now."),
    ]
    body = "<div class='comments-list'>" + "".join(POST.format(who=w, text=t) for w, t in posts) + "</div>"
    text = extract_text(_page("", body))
    for who, said in posts:
        assert said in text and who in text
    assert "Jul 5, 2024" in text
    assert "quoted bold\nword" not in text and "boldword" in text  # inline tags do not split words
    tree = LexborHTMLParser(_page("", body))
    assert microdata_posts(tree)[0].startswith("ada\nJul 5, 2024\n\nI bought")


def test_noscript_copy_of_a_script_rendered_page() -> None:
    posts = "".join(f"<div class='post'><p>{s}</p></div>" for s in ARTICLE_SENTENCES)
    body = (
        "<section id='splash'><div class='dots'></div></section>"
        f"<noscript><div id='crawler'><h1>A thread</h1>{posts}</div></noscript>"
        "<noscript><img src='pixel.gif'></noscript>"
    )
    text = extract_text(_page("", body))
    for sentence in ARTICLE_SENTENCES:
        assert sentence in text


def test_meta_description_only_for_an_about_empty_page() -> None:
    head = '<meta property="og:description" content="OG text."><meta name="description" content="Rugs you can wash &amp; reuse, made to order.">'
    assert meta_description(LexborHTMLParser(_page(head))) == "Rugs you can wash & reuse, made to order."
    assert extract_text(_page(head, SHELL)).startswith("Rugs you can wash & reuse, made to order.")
    # A page with an article keeps its text only.
    article = ARTICLE_HTML.replace("<head>", "<head>" + head, 1)
    text = extract_text(article)
    assert ARTICLE_SENTENCES[0] in text and "Rugs you can wash" not in text
    assert "Rugs" not in extract_text(_page("", SHELL)) and "OG text" not in extract_text(_page(head, SHELL))


def test_a_site_tagline_is_not_the_pages_description() -> None:
    def head(description: str) -> str:
        return (
            '<meta property="og:title" content="Sea Green Mug - Potter\'s Shop">'
            f'<meta property="og:site_name" content="Potter\'s Shop"><meta name="description" content="{description}">'
        )

    # Short, and nothing in common with the title but the shop's name: the same line on every page.
    assert "Smarter" not in extract_text(_page(head("Smarter shopping, better living! Potter's Shop"), SHELL))
    # Short but about the page's subject, or long enough to say something: the page's summary.
    assert extract_text(_page(head("A sea green mug, thrown by hand."), SHELL)).startswith("A sea green mug")
    assert DESCRIPTION in extract_text(_page(head(DESCRIPTION), SHELL))
