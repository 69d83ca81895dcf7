"""What an element's attributes say it is: the chrome vocabulary and its predicates.

Class/id words naming page chrome (menus, share bars, cookie banners, comments...) or the
content itself, the ARIA roles of chrome landmarks and disclosure panels, and hiding by
attribute or style. Everything here reads one element's attributes, never the tree: the walk
(:mod:`.tree`) asks, and the scoring (:mod:`.score`) builds its own word lists with
:class:`ClassWords`.
"""

from __future__ import annotations

import functools
import re

# ARIA landmarks that are page chrome rather than the main content, tooltips (shown on hover
# beside what they explain: a badge's or a seller rating's fine print) and live regions that
# report the page's state ("Added to your bag", "3 results", a form's error).
_DROP_ROLES = frozenset(
    "navigation banner contentinfo complementary search menu menubar dialog alertdialog tooltip status alert".split()
)
# Disclosure panels: hidden until the visitor opens them (hiding). Tab panes named by the
# frameworks' classes, with no ARIA role (Bootstrap's "tab-pane" in a "tab-content", WooCommerce's
# "woocommerce-Tabs-panel", themes' "tab__content"), are tab panels: a product's "Specs" tab, a
# service page's other offers (WCXB dev: product +0.0008, service +0.0005, 2 sites).
_PANEL_ROLES = frozenset(["region", "tabpanel"])
_PANEL = re.compile(r"accordion|collaps|faq|tab-?pane|tabs?[-_]?panel|tab-?content|tabs?__(?:content|panel)", re.I)


class ClassWords:
    """A pattern of lowercase class/id words, searched case-insensitively.

    With ``re.I`` the regex engine folds case at every position for every
    alternative, which is slow on long utility-CSS class lists, and a page has
    hundreds of distinct ones. An ASCII string (all but a handful of class
    names) is lowered once and searched with the plain pattern instead: the
    same answer (the words are lowercase ASCII), much faster (benchmarks/README.md).
    """

    __slots__ = ("plain", "nocase")

    def __init__(self, pattern: str) -> None:
        self.plain = re.compile(pattern)
        self.nocase = re.compile(pattern, re.I)

    def search(self, attr: str) -> bool:
        if attr.isascii():
            return self.plain.search(attr.lower()) is not None
        return self.nocase.search(attr) is not None


# A forum post's poster block and signature: who wrote it (title, join date, post count,
# flair; phpBB's "postprofile") and what they append to every post, not what the post says.
# Strong chrome words, as they sit inside "post"/"message" blocks.
_POSTER = r"postprofile|signature|usertitle|user-title|userdetails|user-details|userextras|user-extras|userinfo|user-info|flair"
# The box about the article's author under it (their photo, a bio, links to their other posts):
# about the writer, not the article. "author-bio" was already chrome; the others name the same box
# ("author-section", "author-wrapper", a student paper's "contributor-box"). Not "author-card":
# a book's product page has its "about the author" card as content (WCXB dev: product -0.001).
_AUTHOR_BOX = r"author[-_]?(?:box|desc|info|profile)|author[-_](?:section|block|wrap|container|area)|contributor[-_](?:box|bio|area)|about[-_]?author|saboxplugin"
# A shop's purchase widgets, named by the platforms' own classes: the add-to-cart/bag button
# and its form, the "notify me when back in stock" form, instalment-payment notes (Afterpay,
# Klarna) and payment/trust badges. They operate the page; the product's text is beside them
# (WCXB dev: product +0.0017, 8 pages up). Not "quantity": recipes' ingredient quantities.
_PURCHASE = (
    r"add-to-cart|addtocart|add-to-bag|addtobag|notify|back-in-stock|backinstock|restock|"
    r"afterpay|klarna|installment|payment-icon|trust-badge|trustbadge"
)
# class/id fragments marking chrome. Long words match as substrings
# ("sharebar", "relatedPosts"); short ones only as whole tokens, because "ad"
# or "nav" as substrings would hit "header", "read", "canvas"...
_JUNK_SUBSTR = ClassWords(
    r"navigation|navbar|menu|cookie|consent|gdpr|footer|sidebar|side-bar|sharing|"
    r"share(?!d)|social|comment|disqus|advert|sponsor|related|breadcrumb|newsletter|"
    r"subscri|signup|sign-up|popup|modal|outbrain|taboola|recirc|recommend|"
    r"trending|masthead|skip-link|skiplink|promo|paywall|byline|author-bio|"
    r"popular|toolbar|pagination|jump-link|more-stories|read-more|readmore|"
    r"tags|overlay|banner|caption|credit|reviews|" + _AUTHOR_BOX + "|" + _POSTER + "|" + _PURCHASE
)
_JUNK_TOKENS = frozenset("nav ad ads tag print rss login share".split())
# Hiding classes count only as a whole class ("hidden", not "overflow-hidden",
# "hidden-md-down" or "md:hidden"), and not beside a breakpoint class that
# shows the element again ("hidden lg:flex"): utility CSS hides per screen size.
_HIDING_CLASSES = frozenset(
    "hidden hide is-hidden d-none".split()
    # Text for screen readers only, moved off screen or clipped to nothing by the framework's
    # class (Bootstrap and Tailwind, WordPress, Drupal, GOV.UK, Amazon): a sighted reader never
    # sees it ("This is an image gallery carousel", a price said twice for screen readers).
    + """sr-only screen-reader-text screen-reader-only screenreader-only visually-hidden visuallyhidden
    u-visually-hidden govuk-visually-hidden a-offscreen offscreen""".split()
)
# class/id fragments of the article itself ("article-body", "post-content"):
# they veto a junk match unless the junk word is one of the strong ones.
_GOOD = ClassWords(r"article|body|content|entry|main|post|story|text|blog|prose|column")
_STRONG_JUNK = ClassWords(
    r"comment|cookie|consent|gdpr|newsletter|subscri|related|share(?!d)|social|"
    r"breadcrumb|outbrain|taboola|recirc|recommend|sidebar|footer|navigation|navbar|"
    r"menu|advert|sponsor|promo|popup|modal|banner|byline|tags|" + _POSTER
)
# A comment section ("comments", "comment-list", id="disqus_thread") can hold
# more text than the article but never wraps it, unlike "has-comments".
COMMENTS = re.compile(r"(?:^|\s)(?:comments?|disqus)(?:[-_\s]|$)", re.I)
# "p-body-main--withSidebar", "has-sidebar", "mainContainer_noSidebar": a
# wrapper saying how the page is laid out around it, not the sidebar itself. A whole class
# "hide-read-more-ad" / "no-ads" / "without-sidebar" says what the element does without.
# "dark-nav-btns", "nav-arrows", "nav-dots" style a carousel's own previous/next controls:
# the element is the carousel (a shop's product row), not a navigation.
_LAYOUT_MODIFIER = re.compile(
    r"(?:with|no|not|has)[-_]?(?:sidebar|side-bar|comments?|footer|header)|nav[-_]?(?:btns?|buttons?|arrows?|dots)", re.I
)
_GOES_WITHOUT = re.compile(r"(?<![\w-])(?:hide|no|without)-[\w-]+", re.I)
COMMENT_WORDS = re.compile(r"comment|disqus", re.I)
REVIEW = re.compile(r"review", re.I)
# A block named as the page's SEO copy ("seo-text", "field-seofootercopy", "seo__module--copy"):
# the paragraphs a shop writes about a category for search engines, the prose of a collection
# page however its class also places it ("footer") or folds it ("hidden" until "Read more").
_SEO_COPY = re.compile(r"seo[\w-]*(?:copy|text|content|desc)", re.I)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_UTILITY = re.compile(r"[^\s]*[:\[][^\s]*")
_TOKEN_SPLIT = re.compile(r"[\s_\-]+")

# What hiding says of an element: shown; dropped whatever it holds; hidden by its style or
# aria-hidden, which a wrapper hidden until the page's scripts run also is (kept when it holds
# most of the page's prose).
SHOWN, DROPPED, STYLE_HIDDEN = 0, 1, 2


def hiding(attrs: dict[str, str | None]) -> int:
    """Hidden elements and ARIA chrome landmarks: :data:`DROPPED` or :data:`STYLE_HIDDEN`.

    A collapsed accordion panel is hidden only until its header is clicked (a FAQ's answers, a
    product's details): ARIA's accordion pattern marks it ``role=region``, and page builders
    name it "accordion"/"collapse". What it holds is the page's content. So is a tab panel
    (``role=tabpanel``) other than the one shown: a documentation page's other languages, a
    service page's other plans.
    """
    if not ("hidden" in attrs or "aria-hidden" in attrs or "style" in attrs or "role" in attrs or "popover" in attrs):
        return SHOWN  # most elements: none of the attributes read below
    role = (attrs.get("role") or "").lower()
    hidden = DROPPED if "hidden" in attrs else STYLE_HIDDEN if attrs.get("aria-hidden") == "true" else SHOWN
    # An element with the popover attribute is not shown until a button opens it (browsers'
    # own stylesheet hides it): an app's install steps, a push-notification prompt, an
    # off-canvas menu. Hidden like a styled-away wrapper: kept only when it holds most prose.
    if not hidden and "popover" in attrs:
        hidden = STYLE_HIDDEN
    if not hidden:
        style = attrs.get("style")
        if style and _HIDDEN_STYLE.search(style) is not None:
            hidden = STYLE_HIDDEN
    if hidden:  # the panel test only for hidden elements: most styled ones are not
        if role in _PANEL_ROLES or _PANEL.search(f"{attrs.get('class') or ''} {attrs.get('id') or ''}"):
            return SHOWN
        return hidden
    return DROPPED if role in _DROP_ROLES else SHOWN


def chrome_class(tag: str, attrs: dict[str, str | None], attr: str) -> bool:
    """True when the class/id names page chrome (menu, share bar, comments...)."""
    if not attr or tag in ("body", "html", "main", "article"):
        return False
    if (attrs.get("role") or "") in ("main", "article") or attrs.get("itemprop") == "articleBody":
        return False
    return chrome_words(attr)


@functools.lru_cache(maxsize=8192)
def chrome_words(attr: str) -> bool:
    """True when a class/id string names chrome, whatever element carries it."""
    # Cached: pages repeat the same few class strings hundreds of times.
    if "seo" in attr.lower() and _SEO_COPY.search(attr):
        return False
    attr = _LAYOUT_MODIFIER.sub(" ", attr)
    if "hide-" in attr or "no-" in attr or "without-" in attr:  # the regex only where it can match
        attr = _GOES_WITHOUT.sub(" ", attr)
    # Utility classes with a variant or an arbitrary value ("lg:pt-[calc(var(--banner-h))]",
    # "hover:shadow-menu") style the element; they do not name what it is.
    words = _UTILITY.sub(" ", attr) if (":" in attr or "[" in attr) else attr
    if not _JUNK_SUBSTR.search(words):
        tokens = {t.lower() for t in _TOKEN_SPLIT.split(words)}
        if not tokens & _JUNK_TOKENS:
            classes = attr.lower().split()
            return bool(_HIDING_CLASSES.intersection(classes)) and not any(":" in c for c in classes)
    # "post-content tags-visible" is the article; "comment-body" is not.
    return not (_GOOD.search(words) and not _STRONG_JUNK.search(words))
