"""Tests for kinfuse.corpus.extract: how pages are built (page builders, streamed React pages,
disclosure panels, product and listing markup) decides what is content, not the class words alone.

Each test is a small handwritten page for one rule of issue 17 (benchmarks/README.md, "Page
builders, streamed segments, panels"), checked to fail without that rule.
"""

from __future__ import annotations

from corpus_site import FOOTER, NAV, chrome_page, own_prose, paragraphs

from kinfuse.corpus import extract_text


def test_page_builder_widgets_are_content() -> None:
    # Elementor (and Amazon's "celwidget") call every content block a widget: a landing page is
    # nothing but widgets, each one text editor holding a section of the page.
    widgets = "".join(
        f"<div class='elementor-element elementor-widget elementor-widget-text-editor'><p>{own_prose('widget', i)}</p></div>"
        for i in range(4)
    )
    text = extract_text(chrome_page(f"<div class='elementor-section'>{widgets}</div>"))
    for i in range(4):
        assert own_prose("widget", i) in text, i


def test_utility_classes_and_builder_words_do_not_name_chrome() -> None:
    # Half the page's prose sits in the named block: a chrome block that size would be dropped.
    body = paragraphs("body", 3)
    other = paragraphs("other", 3)
    wrappers = (
        "stack lg:first:pt-[calc(var(--banner-min-height))]",  # a utility with an arbitrary value
        "wsite-elements wsite-not-footer wsite-content",  # "not a footer"
        "kt-adv-heading356 wp-block-kadence-advancedheading",  # "adv" = advanced, not an ad
        "shared-wrapper",  # "shared" is not a share bar
    )
    for wrapper in wrappers:
        html = chrome_page(f"<div class='{wrapper}'>{body}</div><div class='section'>{other}</div>")
        assert own_prose("body", 1) in extract_text(html), wrapper
    # The words themselves still mark chrome.
    share = chrome_page(f"<div class='post'>{body}</div><div class='share-bar'><p>{own_prose('share', 0)}</p></div>")
    assert own_prose("share", 0) not in extract_text(share)


def test_react_streamed_segments_are_walked_where_they_are_shown() -> None:
    # React's streaming server rendering: the shell holds <template id="B:0"> where a boundary
    # will go; the content arrives later as <div hidden id="S:0">, moved there by a script.
    # Segments nest (a placeholder P:1 inside S:0 gets S:1).
    html = (
        "<html><body><main><h1>Sofas</h1><!--$?--><template id='B:0'></template>"
        "<div class='loading'></div><!--/$--></main>"
        f"<div hidden id='S:0'><div class='grid'><p>{own_prose('streamed', 0)}</p>"
        "<template id='P:1'></template></div></div>"
        "<script>$RC('B:0','S:0')</script>"
        f"<div hidden id='S:1'><p>{own_prose('streamed', 1)}</p></div>"
        f"<div hidden id='other'><p>{own_prose('hidden', 0)}</p></div></body></html>"
    )
    text = extract_text(html)
    assert own_prose("streamed", 0) in text and own_prose("streamed", 1) in text
    assert text.index(own_prose("streamed", 0)) < text.index(own_prose("streamed", 1))
    assert text.count(own_prose("streamed", 0)) == 1
    assert own_prose("hidden", 0) not in text


def test_react_streamed_segment_whose_place_was_skipped_is_walked_where_it_stands() -> None:
    # The article's template sits in a layout wrapper named like chrome ("toc-content-sidebar")
    # that holds no prose until the segments arrive, so the walk skips it; the segments, shown
    # by the browser all the same, are walked where they stand, once each.
    html = (
        f"<html><body>{NAV}<main><h1>Index funds</h1><div class='grid-toc-content-sidebar'>"
        "<nav><a href='#a'>What is it</a></nav><div class='article-body'>"
        "<template id='B:0'></template><div>Loading paragraph...</div>"
        "<template id='B:1'></template><div>Loading paragraph...</div></div></div></main>"
        f"<div hidden id='S:0'><p>{own_prose('streamed', 0)}</p><p>{own_prose('streamed', 1)}</p></div>"
        f"<div hidden id='S:1'><p>{own_prose('streamed', 2)}</p></div>"
        f"<div hidden id='other'><p>{own_prose('hidden', 0)}</p></div>{FOOTER}</body></html>"
    )
    text = extract_text(html)
    for i in range(3):
        assert text.count(own_prose("streamed", i)) == 1, i
    assert own_prose("hidden", 0) not in text and "Copyright" not in text


def test_self_closed_iframe_in_noscript_does_not_swallow_thechrome_page() -> None:
    # Google Tag Manager's snippet written with "/>": a parser without scripts reads the
    # <noscript>, where the iframe's raw text would run to the end of the page.
    body = paragraphs("after", 3)
    html = (
        "<html><body><noscript><iframe src='https://www.googletagmanager.com/ns.html?id=GTM-X' "
        f"height='0' width='0' style='display:none' /></noscript><div class='content'>{body}</div></body></html>"
    )
    text = extract_text(html)
    for i in range(3):
        assert own_prose("after", i) in text, i


def test_form_wrapping_a_page_without_paragraphs_is_a_wrapper() -> None:
    # ASP.NET table layouts: one <form> around the whole page, and no <p> anywhere.
    rows = "".join(
        f"<tr><td>Item {i}</td><td>Electrician in Marietta, cost range {i * 10} to {i * 20} dollars a visit</td></tr>"
        for i in range(12)
    )
    html = f"<html><body><form id='aspnetForm' action='/cost.aspx'><table>{rows}</table></form></body></html>"
    text = extract_text(html)
    assert "Item 11 | Electrician in Marietta, cost range 110 to 220 dollars a visit" in text


def test_tab_labels_and_collapsed_accordion_panels_are_content() -> None:
    intro = paragraphs("intro", 2)
    panels = "".join(
        f"<h3><button aria-controls='p{i}'>Question {i}?</button></h3>"
        f"<div id='p{i}' role='region' aria-labelledby='q{i}' hidden><p>{own_prose('answer', i)}</p></div>"
        for i in range(2)
    )
    styled = f"<div class='accordion-content' style='display:none'><p>{own_prose('details', 0)}</p></div>"
    faq = f"<div class='faq-answer' aria-hidden='true'><p>{own_prose('faq', 0)}</p></div>"
    tabs = "<div role='tablist'><p>Overview of the product and its specifications</p></div>"
    hidden = f"<div class='popup' hidden><p>{own_prose('hidden', 0)}</p></div>"
    text = extract_text(chrome_page(f"<main>{intro}{tabs}{panels}{styled}{faq}{hidden}</main>"))
    for fragment in (own_prose("answer", 0), own_prose("answer", 1), own_prose("details", 0), own_prose("faq", 0)):
        assert fragment in text, fragment
    assert "Overview of the product and its specifications" in text
    assert own_prose("hidden", 0) not in text  # other hidden elements stay hidden


def test_caption_holding_a_heading_is_an_item_card() -> None:
    # A shop's product card: photo, then a "caption" block with the linked title and price.
    cards = "".join(
        f"<li class='product'><img src='{i}.jpg' alt=''><div class='product-caption'>"
        f"<h3><a href='/p/{i}'>Canvas trail tent model {i}</a></h3><span>${100 + i}.00</span></div></li>"
        for i in range(6)
    )
    photo = f"<figure><img src='a.jpg' alt=''><div class='photo-caption'>{own_prose('caption', 0)}</div></figure>"
    intro = f"<p>{own_prose('intro', 0)}</p>"
    text = extract_text(chrome_page(f"<div class='shop'>{intro}{photo}<ul class='products'>{cards}</ul></div>"))
    for i in range(6):
        assert f"Canvas trail tent model {i}" in text, i
    assert own_prose("caption", 0) not in text  # a photo's caption still goes


def test_promo_or_banner_holding_a_heading_is_a_section_of_thechrome_page() -> None:
    # A landing page: a hero banner (headline, lead) and promo tiles (heading, text), each a
    # section of the page; a cookie banner and an ad promo hold no heading and still go.
    hero = f"<div class='hero-banner'><h1>Watches for every wrist</h1><p>{own_prose('hero', 0)}</p></div>"
    tiles = "".join(
        f"<div class='promo-tile'><h2>Collection number {i}</h2><p>{own_prose('tile', i)}</p></div>" for i in range(4)
    )
    cookie = f"<div class='cookie-banner'><p>{own_prose('cookie', 0)}</p></div>"
    ad = f"<div class='promo-slot'><p>{own_prose('ad', 0)}</p></div>"
    text = extract_text(chrome_page(f"<div class='home'>{cookie}{hero}{tiles}{ad}</div>"))
    assert own_prose("hero", 0) in text
    for i in range(4):
        assert own_prose("tile", i) in text, i
    assert own_prose("cookie", 0) not in text and own_prose("ad", 0) not in text

def test_customer_reviews_beside_a_product_are_not_its_content() -> None:
    def product(description: str, reviews: str) -> str:
        return chrome_page(
            f"<div class='product-main'><h1>Trail 25 pack</h1>{description}"
            f"<div id='reviews' class='product-reviews'><h2>Reviews</h2>{reviews}</div></div>"
        )

    reviews = "".join(f"<div class='review'><p>{own_prose('review', i)}</p></div>" for i in range(2))
    text = extract_text(product(paragraphs("description", 3), reviews))
    assert own_prose("description", 2) in text
    assert own_prose("review", 0) not in text and own_prose("review", 1) not in text
    # Reviews holding most of the prose (a short description, many long reviews) are still
    # reviews: like comments, they are kept only where they are about all the page has.
    many = "".join(f"<div class='review'><p>{own_prose('review', i)} {own_prose('more', i)}</p></div>" for i in range(3))
    text = extract_text(product(paragraphs("description", 1), many))
    assert own_prose("description", 0) in text
    assert own_prose("review", 0) not in text and own_prose("review", 2) not in text


def _post(n: int) -> str:
    return (
        f"<div class='message'><div class='user'>member{n}</div><blockquote class='messageText'>"
        f"Reply number {n} of the thread gives its own advice, with a clause, another clause,<br>"
        "and a second line after a break, as forum software writes posts.</blockquote></div>"
    )


def test_chrome_named_wrapper_of_a_page_without_paragraphs_is_kept() -> None:
    # Forum software (XenForo, SMF) writes posts as <div>/<blockquote> with <br>, not <p>, inside
    # a moderation <form> or a wrapper named for the footer it pushes down: on a page with so
    # little paragraph text, what holds most of the page is measured by its text.
    posts = "".join(_post(i) for i in range(6))
    aside = "<div class='notice'><p>Welcome to the forum. Please read the rules before posting.</p></div>"
    for wrapper in ("<form class='InlineModForm section' method='post'>{}</form>", "<div id='footerfix'>{}</div>"):
        text = extract_text(chrome_page(aside + wrapper.format(posts)))
        for i in range(6):
            assert f"Reply number {i} of the thread" in text, (wrapper, i)
    # A small search form on such a page is still chrome.
    search = "<form class='search'><div>Search the forum for threads about anything at all</div></form>"
    assert "Search the forum" not in extract_text(chrome_page(aside + search + posts))


def test_comment_named_thread_keeps_its_comments() -> None:
    # old.reddit: the thread is a "commentarea" holding most of the page's prose, and each reply
    # in it a "comment" block: once the area is kept as the content, comment words inside it
    # no longer mark chrome.
    replies = "".join(
        f"<div class='thing comment'><p>{own_prose(f'reply{i}', i)}</p></div>" for i in range(4)
    )
    html = chrome_page(f"<div class='link'><a href='/x'>A linked story</a></div><div class='commentarea'>{replies}</div>")
    text = extract_text(html)
    for i in range(4):
        assert own_prose(f"reply{i}", i) in text, i


def test_forum_poster_blocks_and_signatures_are_not_the_post() -> None:
    posts = "".join(
        f"<div class='post message'><div class='userinfo'><span class='usertitle'>Senior Member Title{i}</span>"
        f"<dl class='userExtras'><dt>Joined</dt><dd>Mar 2011</dd><dt>Messages</dt><dd>4,21{i}</dd></dl></div>"
        f"<div class='post-body'><p>{own_prose(f'post{i}', i)}</p></div>"
        f"<div class='signature'><p>My rig: a very long signature line about the computer build number {i}.</p></div>"
        f"<span class='author_flair'>Flair{i}</span></div>"
        for i in range(4)
    )
    text = extract_text(chrome_page(f"<div class='thread'>{posts}</div>"))
    for i in range(4):
        assert own_prose(f"post{i}", i) in text, i
    for chrome in ("Title0", "Joined", "4,213", "signature line", "Flair1"):
        assert chrome not in text, chrome


def test_tooltips_are_not_content() -> None:
    body = paragraphs("product", 3)
    tip = (
        "<div class='badge'>Star Seller<div role='tooltip' class='popover-body'><p>Star Sellers have an outstanding "
        "track record for providing a great customer experience, shipping on time and replying quickly.</p></div></div>"
    )
    text = extract_text(chrome_page(f"<div class='product'>{body}{tip}</div>"))
    assert own_prose("product", 2) in text
    assert "outstanding track record" not in text


def test_headers_of_list_items_are_their_titles() -> None:
    # A news river: each teaser is <article><header><h2><a>title</a></h2>...</header><p>...</p>.
    # The page's own header (logo, menu) holds no linked heading and stays chrome.
    items = "".join(
        f"<article><header><h2><a href='/n{i}'>Teaser title number {i} about headphones</a></h2>"
        f"<p class='desc'>{own_prose(f'teaser{i}', i)}</p></header></article>"
        for i in range(7)
    )
    html = chrome_page(f"<header><a href='/'>Logo</a><div>Site slogan text here</div></header><main>{items}</main>")
    text = extract_text(html)
    for i in range(7):
        assert own_prose(f"teaser{i}", i) in text, i
    assert "Site slogan" not in text


def test_a_header_or_aside_wrapping_the_article_is_not_chrome() -> None:
    # Webflow names its page sections <header>: the blog post's whole body can sit in one. The
    # page's own header, which carries the site navigation, stays chrome even when it is long.
    body = paragraphs("post", 5)
    site_header = f"<header><nav><a href='/'>Home</a></nav><p>{own_prose('menu', 0)}</p></header>"
    html = chrome_page(f"{site_header}<header class='section_blog-post-content'><h1>A post</h1>{body}</header>")
    text = extract_text(html)
    for i in range(5):
        assert own_prose("post", i) in text, i
    assert own_prose("menu", 0) not in text
    # The same for an <aside> holding the article (an announcement layout around the post).
    aside = extract_text(chrome_page(f"<aside class='columns announcement-banner'>{body}</aside>"))
    assert own_prose("post", 4) in aside
    # A small aside beside the article is still chrome.
    beside = extract_text(chrome_page(f"<div>{body}</div><aside><p>{own_prose('aside', 0)}</p></aside>"))
    assert own_prose("aside", 0) not in beside
    # A site header holding most of the prose but also the navigation stays chrome.
    nav_header = extract_text(chrome_page(f"<header><nav><a href='/'>Home</a></nav>{body}</header><p>{own_prose('x', 0)}</p>"))
    assert own_prose("post", 0) not in nav_header


def test_a_wrapper_hidden_until_scripts_run_is_thechrome_page() -> None:
    # Pages hide their content wrapper by style until their scripts have run (against a flash
    # of unstyled content, A/B-test anti-flicker): it holds the whole page.
    body = paragraphs("doc", 4)
    for hidden in ("style='visibility:hidden;min-height:100vh'", "style='display:none'", "aria-hidden='true'"):
        text = extract_text(chrome_page(f"<div {hidden}><h1>A tutorial</h1>{body}</div>"))
        assert own_prose("doc", 3) in text, hidden
    # A small hidden block beside the content, and anything under the hidden attribute, stay out.
    beside = extract_text(chrome_page(f"<div>{body}</div><div style='display:none'><p>{own_prose('modal', 0)}</p></div>"))
    assert own_prose("modal", 0) not in beside
    attr = extract_text(chrome_page(f"<div hidden>{body}</div><p>{own_prose('shown', 0)}</p>"))
    assert own_prose("doc", 0) not in attr


def test_hidden_tab_panels_are_content() -> None:
    # A quickstart's code in three languages: one tab panel shown, the others hidden until their
    # tab is clicked; a reader (and the corpus) wants them all.
    tabs = "<div role='tablist'><button role='tab'>Python</button><button role='tab'>Node.js</button></div>"
    panels = "".join(
        f"<div role='tabpanel' id='t{i}' {'' if i == 0 else 'hidden'}><p>{own_prose(f'lang{i}', i)}</p></div>"
        for i in range(3)
    )
    intro = paragraphs("intro", 2)
    text = extract_text(chrome_page(f"<main>{intro}{tabs}{panels}</main>"))
    for i in range(3):
        assert own_prose(f"lang{i}", i) in text, i


def test_a_class_naming_what_an_element_goes_without_is_not_chrome() -> None:
    # Wired's story grid: "hide-read-more-ad" says the grid shows no ad, not that it is one.
    cards = "".join(
        f"<div class='summary-item'><h3><a href='/s{i}'>Story title number {i} about the science</a></h3>"
        f"<p>{own_prose(f'story{i}', i)}</p></div>"
        for i in range(4)
    )
    intro = paragraphs("intro", 5)  # the grid holds under half
    for cls in ("SummaryCollectionGridItems hide-read-more-ad", "grid no-ads", "cards without-ads"):
        text = extract_text(chrome_page(f"<div class='intro'>{intro}</div><div class='{cls}'>{cards}</div>"))
        assert own_prose("story3", 3) in text, cls
    # The words still mark chrome where they name the element.
    ad = extract_text(chrome_page(f"<div class='grid'>{cards}</div><div class='read-more-ad'><p>{own_prose('ad', 0)}</p></div>"))
    assert own_prose("ad", 0) not in ad


def _other_products(item: str, seller: str) -> str:
    """Five cards of other products (title, seller, price, delivery), each in ``<item>``."""
    tag = item.split()[0]
    return "".join(
        f"<{item}><h3>Other blouse number {i} size {10 + i} floral print top</h3><div>{seller}</div>"
        f"<div>${8 + i}.03</div><div>+ $23.51 delivery</div></{tag}>"
        for i in range(5)
    )


def test_a_block_headed_as_recommendations_is_not_thechrome_page() -> None:
    # A shop's product page: description and specs, then a grid of other products under "People
    # who viewed this item also viewed", with no class word saying what the grid is.
    description = paragraphs("product", 4)
    grid = _other_products("div class='card'", "Private")
    html = chrome_page(
        f"<main><h1>A top</h1>{description}"
        f"<div class='y'><h2>People who viewed this item also viewed</h2><div class='z'>{grid}</div></div></main>"
    )
    text = extract_text(html)
    assert own_prose("product", 3) in text
    assert "Other blouse number 2" not in text
    assert "delivery" not in text
    # The same words inside a paragraph of the content are prose, not a heading of items.
    inline = f"<p>Readers who liked this guide also liked our {own_prose('inline', 0)}</p>"
    assert "also liked our" in extract_text(chrome_page(f"<main>{description}{inline}</main>"))


def test_related_and_similar_items_headings_head_recommendations() -> None:
    # "Explore related items" under a shop's product, "Similar threads" under a forum thread,
    # "Related articles" or "Trending stories" under a post: other pages' items, which no class
    # word marks.
    description = paragraphs("product", 4)
    grid = _other_products("div class='card'", "Private")
    for heading in ("Explore related items", "Similar threads", "Related articles", "Most popular posts", "Trending stories"):
        html = chrome_page(
            f"<main><h1>A top</h1>{description}"
            f"<div class='y'><h2>{heading}</h2><div class='z'>{grid}</div></div></main>"
        )
        text = extract_text(html)
        assert own_prose("product", 3) in text, heading
        assert "Other blouse number 2" not in text, heading


def test_a_recommendations_heading_in_its_own_header_heads_the_grid_beside_it() -> None:
    # A shop's "Similar items": the heading sits in a header row of its own with a "See all" link
    # and a sponsor label; the carousel of other products is that header's sibling.
    description = paragraphs("product", 4)
    grid = _other_products("li", "New · Business")
    html = chrome_page(
        f"<main><h1>A top</h1>{description}<div class='y'><div class='head'><div><h2>Similar items</h2></div>"
        f"<div>Sponsored</div><a href='/recs'>See all</a></div><ul class='z'>{grid}</ul></div></main>"
    )
    text = extract_text(html)
    assert own_prose("product", 3) in text
    assert "Other blouse number 2" not in text


def test_a_header_inside_a_section_is_that_sections() -> None:
    # A landing page: each feature section opens with <header><h2>..</h2><p>lead</p></header>.
    sections = "".join(
        f"<section class='feature'><header><h2>Feature heading {i}</h2><p>{own_prose(f'lead{i}', i)}</p></header>"
        f"<div><p>{own_prose(f'detail{i}', i)}</p></div></section>"
        for i in range(3)
    )
    text = extract_text(chrome_page(f"<header><a href='/'>Logo</a><p>Site wide slogan of the company</p></header>{sections}"))
    for i in range(3):
        assert own_prose(f"lead{i}", i) in text, i
        assert f"Feature heading {i}" in text, i
    assert "Site wide slogan" not in text
    # A header inside a section that carries the site's navigation is still the page's.
    nav = extract_text(chrome_page(f"<section><header><nav><a href='/x'>X</a></nav><p>Menu slogan words here</p></header></section>{sections}"))
    assert "Menu slogan" not in nav


def test_text_for_screen_readers_only_is_not_content() -> None:
    # A product page's gallery announced to screen readers and its price said twice, once for
    # them: clipped off screen by the framework's class, never seen by a sighted reader.
    body = (
        "<div class='product'><span class='sr-only'>This is an image gallery carousel with clickable slides, "
        "use the buttons to navigate.</span>"
        f"{paragraphs('product', 3)}"
        "<p class='price'><span class='a-offscreen'>Offscreen price 24.99</span><span aria-hidden='true'>$24.99</span></p>"
        "<p><span class='visually-hidden'>Opens in a new window:</span> Care guide</p></div>"
    )
    text = extract_text(chrome_page(body))
    for i in range(3):
        assert own_prose("product", i) in text, i
    assert "image gallery carousel" not in text
    assert "Offscreen price" not in text
    assert "Opens in a new window" not in text
    assert "Care guide" in text
    # Shown again from a breakpoint on ("sr-only md:not-sr-only"): what a desktop reader sees.
    shown = extract_text(chrome_page(f"<div class='product'>{paragraphs('product', 3)}<p class='sr-only md:not-sr-only'>Shown on desktop screens</p></div>"))
    assert "Shown on desktop screens" in shown


def test_a_label_said_twice_run_together_is_said_once() -> None:
    # A shop's price and seller link shown and repeated for screen readers in a span beside
    # them, with a class no framework list names: "EUR 163.12EUR 163.12" is one price.
    body = (
        f"<div class='product'>{paragraphs('product', 3)}"
        "<div class='price'><span aria-hidden='true'>EUR 163.12</span><span class='clip'>EUR 163.12</span></div>"
        "<div><a href='/shop'>Seller's other items<span class='clip'>Seller's other items</span></a></div></div>"
    )
    text = extract_text(chrome_page(body))
    assert own_prose("product", 2) in text
    assert "EUR 163.12" in text and "163.12EUR" not in text
    assert text.count("Seller's other items") == 1
    # A code of two equal halves is one code, and text that only starts twice is left as it is.
    plain = extract_text(chrome_page(f"<div>{paragraphs('product', 3)}<p>1234-1234-</p><p>See allSee all on coverage</p></div>"))
    assert "1234-1234-" in plain and "See allSee all on coverage" in plain


def test_a_label_and_its_value_in_elements_side_by_side_are_two_words() -> None:
    # A shop's specs as label and value spans that CSS lays out as columns, with no space
    # between them in the markup: "PublisherHoughton" is two words to a reader.
    rows = "".join(
        f"<div class='row'><span class='name'>{k}</span><span class='value'>{v}</span></div>"
        for k, v in (("Publisher", "Houghton Mifflin"), ("Language", "English"), ("Pages", "240 pages"))
    )
    text = extract_text(chrome_page(f"<div class='product'>{paragraphs('product', 3)}{rows}</div>"))
    assert "Publisher Houghton Mifflin" in text
    assert "Language English" in text
    assert "Pages 240 pages" in text
    # A number written as an index belongs to its word.
    index = extract_text(chrome_page(f"<div>{paragraphs('product', 3)}<p>Emits CO<sub>2</sub> per m<sup>2</sup></p></div>"))
    assert "Emits CO2 per m2" in index
    # Inside one text node nothing changes: "JavaScript", "iPhone" and "McDonald" stay words.
    same = extract_text(chrome_page(f"<div>{paragraphs('product', 3)}<p>JavaScript on an iPhone at McDonald's</p></div>"))
    assert "JavaScript on an iPhone at McDonald's" in same


def test_a_page_marked_up_as_a_discussion_keeps_its_comment_replies() -> None:
    # A forum thread whose replies sit in "comment" blocks: beside an opening post that holds
    # more of the prose they read as an article's comments, unless the page says (schema.org
    # DiscussionForumPosting) that it is a discussion, whose replies are its content.
    replies = "".join(
        f"<div class='comment'><span class='author'>user{i}</span><p>{own_prose('reply', i)}</p></div>" for i in range(3)
    )
    body = (
        f"<body>{NAV}<div class='thread'><div class='topic-post'>{paragraphs('post', 2)}</div>"
        f"<div class='comments'>{replies}</div></div>{FOOTER}</body>"
    )
    ld = '{"@context": "https://schema.org", "@type": "DiscussionForumPosting", "headline": "Which telescope?"}'
    thread = extract_text(f"<html><head><script type='application/ld+json'>{ld}</script></head>{body}</html>")
    article = extract_text(f"<html><head></head>{body}</html>")
    for i in range(3):
        assert own_prose("reply", i) in thread and own_prose("reply", i) not in article, i
    assert own_prose("post", 1) in thread and own_prose("post", 1) in article
    assert "Copyright" not in thread


def test_seo_copy_is_content_whatever_else_its_class_says() -> None:
    # A shop's category page: product cards, then the copy it writes about the category for
    # search engines, in a block its class places in the footer area or folds until "Read more".
    cards = "".join(
        f"<div class='card'><h3>Trail runner model {i}</h3><div>Breathable mesh, rock plate, {i} colours</div>"
        f"<div>${80 + i}.00</div></div>"
        for i in range(16)
    )
    for cls in ("field-seofootercopy", "seo__module--copy hidden"):
        seo = f"<div class='{cls}'>{paragraphs('seo', 2)}</div>"
        text = extract_text(chrome_page(f"<div class='grid'>{cards}</div>{seo}"))
        assert "Trail runner model 3" in text and own_prose("seo", 1) in text, cls
    footer = extract_text(chrome_page(f"<div class='grid'>{cards}</div><div class='site-footer'>{paragraphs('foot', 2)}</div>"))
    assert "Trail runner model 3" in footer and own_prose("foot", 0) not in footer



def test_service_page_whose_faq_holds_most_prose_keeps_its_feature_sections() -> None:
    # The FAQ's long answers hold most of the page's prose, as an article would; but the page's
    # h1 stands above three feature sections, not above the FAQ: the FAQ is one section of a
    # landing page and the features join it.
    features = "".join(
        f"<section class='band'><div class='container'><h2>Feature {name}</h2><p>{own_prose('feature', i)}</p>"
        "<a class='button' href='/start'>Start your free trial today</a></div></section>"
        for i, name in enumerate(("one", "two", "three"))
    )
    faq = f"<section class='faq'><div class='faq-inner'><h2>FAQs</h2><div>{paragraphs('answer', 9)}</div></div></section>"
    html = (
        f"<html><body>{NAV}<div class='page'><section class='hero'><h1>Email marketing for everyone</h1></section>"
        f"{features}{faq}</div>{FOOTER}</body></html>"
    )
    text = extract_text(html)
    for i in range(3):
        assert own_prose("feature", i) in text, i
    assert own_prose("answer", 8) in text and "Copyright" not in text


def test_extract_drops_popovers_closed_until_opened() -> None:
    # An element with the popover attribute is not shown until a button opens it (an app's
    # "install on your home screen" steps, a push-notification prompt): not what the page says.
    prompt = "To install this app on iOS tap the Share icon in Safari and then tap Add to Home Screen."
    html = (
        f"<html><body>{NAV}<i-card popover id='pwa-learn'><p>{prompt}</p></i-card>"
        f"<div class='post'><h1>Roadmap discussion</h1>{paragraphs('post', 4)}</div>"
        f"<div popover='manual'><p>Configure browser push notifications in Chrome and Safari, then adjust them.</p></div>"
        f"{FOOTER}</body></html>"
    )
    text = extract_text(html)
    assert own_prose("post", 3) in text
    assert "Home Screen" not in text and "push notifications" not in text


def test_extract_walks_forms_without_controls() -> None:
    # Each reply of a thread sits in the form its author's edit would submit: the reply's id as
    # a hidden input, the text, no field to fill in. That is the thread, not a search box...
    replies = "".join(
        f"<div class='thing'><p class='tagline'>user{i}</p><form class='usertext' action='#'>"
        f"<input type='hidden' name='thing_id' value='t1_{i}'><div class='md'><p>{own_prose('reply', i)}</p></div>"
        f"</form></div>"
        for i in range(8)
    )
    search = "<form action='/search'><p>Search the whole forum archive by keyword, author or date here.</p><input name='q'></form>"
    html = f"<html><body>{NAV}{search}<div class='commentarea'><h1>Hair follicles grown</h1>{replies}</div>{FOOTER}</body></html>"
    text = extract_text(html)
    for i in range(8):
        assert own_prose("reply", i) in text, i
    # ...which, with a field to type in, stays dropped.
    assert "archive by keyword" not in text


def test_phpbb_post_profiles_are_not_the_post() -> None:
    # phpBB writes each post's poster beside it as <dl class="postprofile">: name, rank, the
    # nation or place they founded, join date. Who wrote it, not what the post says.
    posts = "".join(
        f"<div class='post bg2'><div class='inner'><div class='postbody'><p>{own_prose(f'post{i}', i)}</p></div>"
        f"<dl class='postprofile'><dt>Poster{i}</dt><dd>Senator</dd><dd>Founded: Dec 1{i}, 2021</dd>"
        f"<dd>Psychotic Dictatorship</dd></dl></div></div>"
        for i in range(4)
    )
    text = extract_text(chrome_page(f"<div id='page-body'>{posts}</div>"))
    for i in range(4):
        assert own_prose(f"post{i}", i) in text, i
    for chrome in ("Senator", "Founded", "Dictatorship"):
        assert chrome not in text, chrome


def test_landing_page_of_many_sections_is_the_wholechrome_page() -> None:
    # The story block holds most of the prose, and six feature sections join it; a page of that
    # many sections is a landing page, whose hero lead and plan list (list items, no prose) are
    # content too: the whole walked page, chrome still left out.
    names = ("speed", "boards", "chat", "files", "reports", "apps")
    features = "".join(
        f"<div class='{n}-wrap'><section class='{n}'><h2>Feature {n}</h2><p>{own_prose(n, 0)}</p>"
        "<a class='button' href='/start'>Start your free trial today</a></section></div>"
        for n in names
    )
    plans = (
        "<div class='plans-wrap'><section class='plans'><h2>Plans</h2><ul><li>Free: one project, two editors</li>"
        "<li>Team: unlimited projects and editors</li><li>Enterprise: single sign-on and audit logs</li></ul></section></div>"
    )
    html = (
        f"<html><body>{NAV}<div class='page'><section class='hero'><h1>Plan projects together</h1>"
        f"<p>Boards for every team.</p></section>{features}{plans}<div class='story-wrap'><section class='story'>"
        f"<h2>Why we built it</h2>{paragraphs('story', 9)}</section></div></div>{FOOTER}</body></html>"
    )
    text = extract_text(html)
    assert own_prose("story", 8) in text and own_prose("apps", 0) in text
    assert "Boards for every team." in text and "Team: unlimited projects" in text
    assert "Copyright" not in text and "Pricing" not in text


def test_purchase_widgets_are_chrome() -> None:
    # A shop's product page: the description, then the widgets that operate the purchase (the
    # add-to-cart form, "notify me when back in stock", the instalment note), named by the
    # platforms' classes. The widgets are not the product's text.
    desc = paragraphs("desc", 2)
    cart = (
        "<form class='product-form add-to-cart-form'><label>Size</label><select><option>Small</option>"
        "<option>Large</option></select><button>Add to cart - choose a size first</button></form>"
    )
    notify = "<div class='back-in-stock-notify'><p>Email me when this colour is back in stock again</p></div>"
    instal = "<div class='afterpay-note'><p>Or four interest-free payments of 12.50 with Afterpay</p></div>"
    text = extract_text(chrome_page(f"<main><h1>Wool Runner</h1>{desc}{cart}{notify}{instal}</main>"))
    assert own_prose("desc", 1) in text
    for words in ("choose a size first", "back in stock again", "interest-free payments"):
        assert words not in text, words


def test_framework_tab_panes_are_tab_panels() -> None:
    # A shop's product tabs ("Overview", "Specs") as Bootstrap and WooCommerce build them: no
    # ARIA role, a "tab-pane" / "woocommerce-Tabs-panel" class, the panes other than the first
    # hidden by their style until their tab is clicked.
    tabs = "<ul class='nav-tabs'><li><a href='#o'>Overview</a></li><li><a href='#s'>Specs</a></li></ul>"
    shut = 'style="display:none"'
    intro = paragraphs("intro", 2)
    for pane in ("tab-pane", "woocommerce-Tabs-panel"):
        panes = "".join(
            f"<div class='{pane}' id='t{i}' {'' if i == 0 else shut}><p>{own_prose(f'pane{i}', i)}</p></div>"
            for i in range(3)
        )
        text = extract_text(chrome_page(f"<main>{intro}{tabs}<div class='tab-holder'>{panes}</div></main>"))
        for i in range(3):
            assert own_prose(f"pane{i}", i) in text, (pane, i)
    hidden = f"<div class='pane-note' style='display:none'><p>{own_prose('note', 0)}</p></div>"
    assert own_prose("note", 0) not in extract_text(chrome_page(f"<main>{intro}{hidden}</main>"))


def test_placeholder_filler_is_dropped() -> None:
    # A theme's demo block the shop never filled in: "Lorem ipsum..." under a heading of its own,
    # beside the product's real description.
    desc = paragraphs("desc", 2)
    filler = (
        "<div class='feature'><p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod "
        "tempor incididunt ut labore et dolore magna aliqua. Quis ipsum suspendisse ultrices gravida.</p></div>"
    )
    text = extract_text(chrome_page(f"<main><h1>Aluminium Wallet</h1>{desc}{filler}</main>"))
    assert own_prose("desc", 1) in text
    assert "consectetur adipiscing" not in text


def test_card_links_kept_from_screen_readers_are_shown() -> None:
    # A news hub's card links its headline and, again, its teaser; the second link is
    # aria-hidden and out of the tab order (announced once), but the teaser is on screen.
    cards = "".join(
        f"<article class='card'><h2><a href='/p{i}'>Headline number {i}</a></h2>"
        f"<p class='desc'><a href='/p{i}' aria-hidden='true' tabindex='-1'>{own_prose('teaser', i)}</a></p></article>"
        for i in range(4)
    )
    text = extract_text(chrome_page(f"<main><h1>Topic</h1>{cards}</main>"))
    for i in range(4):
        assert own_prose("teaser", i) in text, i
    # An overlay link whose label the card shows again right after it adds nothing.
    overlay = "<h2><a href='/x' aria-hidden='true' tabindex='-1'><span>Fresh ways</span></a>Fresh ways</h2>"
    assert extract_text(chrome_page(f"<main>{overlay}{paragraphs('body', 3)}</main>")).count("Fresh ways") == 1
    # Any other aria-hidden element stays hidden: an icon's text, a carousel's copy.
    icon = f"<div>{paragraphs('body', 3)}<span aria-hidden='true' tabindex='-1'>Icon glyph</span></div>"
    assert "Icon glyph" not in extract_text(chrome_page(icon))


def test_a_carousel_styled_by_its_nav_buttons_is_not_a_navigation() -> None:
    # A home page's product rows are carousels; "dark-nav-btns" styles their previous/next
    # buttons, and the row itself is the shop's content.
    rows = "".join(
        f"<div class='category-carousel dark-nav-btns'><h2>Row {r}</h2>"
        + "".join(f"<div class='item'><a class='prod-name' href='/p{r}{i}'>Treadmill model {r}{i}</a> <span>$1,99{i}.00</span></div>" for i in range(5))
        + "</div>"
        for r in range(3)
    )
    text = extract_text(chrome_page(f"<div class='home'>{rows}</div>"))
    assert "Treadmill model 24" in text
    # A navigation is still one.
    assert "Gadgets" not in extract_text(chrome_page(f"<div class='nav-list'><a href='/g'>Gadgets</a></div>{paragraphs('body', 3)}"))


def test_a_section_repeated_for_screen_sizes_counts_once() -> None:
    # A shop's collection: a grid of linked product cards, then one short section about the
    # brand that the page repeats for three screen sizes. Three copies of one paragraph are
    # not three times the page's prose: the grid is the content.
    cards = "".join(
        f"<div class='card'><a href='/w{i}'><p>Ridge Wallet {i}</p><p>Matte Olive</p><p>$95</p></a></div>"
        for i in range(50)
    )
    why = f"<div class='why'><h2>Durable design</h2><p>{own_prose('why', 0)}</p></div>"
    text = extract_text(chrome_page(f"<main><h1>Wallets</h1><div class='grid'>{cards}</div>{why * 3}</main>"))
    assert "Ridge Wallet 42" in text
    assert text.count(own_prose("why", 0)) == 1
