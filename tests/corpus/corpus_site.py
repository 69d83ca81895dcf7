"""The test site the corpus tests fetch from, and its pages.

`CorpusHandler` is the `http_handler` of tests/corpus (see conftest.py there): routes for
redirects, retries, rate limits, compression, charsets, timeouts, sitemaps, robots.txt,
caching, bad bodies and cleaning, served by the shared `http_server` fixture.
"""

from __future__ import annotations

import gzip
import random
import threading
import time
from collections import Counter
from typing import Any

from local_http import PageHandler

from kinfuse.corpus import Corpus, Document, SourceRecord

# ---------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------

ARTICLE_SENTENCES = [
    "The lighthouse keeper of Varnholm logged every passing ship for forty-one years, in ink, by hand.",
    "Her logbooks, recovered in 2019, record storms, wrecks, and a whale that circled the island for a week.",
    "Historians now use them to date changes in the herring trade along the northern coast, decade by"
    " decade.",
]

ARTICLE_HTML = f"""<!doctype html>
<html><head><title>The keeper of Varnholm</title>
<style>.x {{ color: red }}</style><script>var tracking = "SCRIPT-TEXT";</script></head>
<body>
<header class="site-header"><a href="/">Daily Example</a> <span>HEADER-TEXT</span></header>
<nav class="main-nav"><ul><li><a href="/news">News</a></li><li><a href="/sport">NAV-TEXT</a></li></ul></nav>
<div id="cookie-consent" class="cookie-banner">We use cookies COOKIE-TEXT. <button>Accept all</button></div>
<div class="breadcrumbs"><a href="/">Home</a> &gt; <a href="/history">BREADCRUMB-TEXT</a></div>
<main>
  <article>
    <h1>The keeper of Varnholm</h1>
    <div class="share-bar"><a href="#fb">Facebook</a> <a href="#tw">SHARE-TEXT</a></div>
    <p>{ARTICLE_SENTENCES[0]}</p>
    <p>{ARTICLE_SENTENCES[1]}</p>
    <h2>A record of the coast</h2>
    <p>{ARTICLE_SENTENCES[2]}</p>
    <ul><li>Logbooks: 41</li><li>Ships recorded: 12,000</li></ul>
    <table><tr><th>Year</th><th>Storms</th></tr><tr><td>1961</td><td>14</td></tr></table>
    <div class="related-articles"><h3>Related</h3><ul>
      <li><a href="/a">RELATED-TEXT lighthouse history</a></li>
      <li><a href="/b">Another story about islands</a></li></ul></div>
    <div class="newsletter-signup">Subscribe to our NEWSLETTER-TEXT for more.</div>
  </article>
</main>
<aside class="sidebar"><h3>Most read</h3>
<p>SIDEBAR-TEXT is here with a long sentence that could look like prose.</p></aside>
<footer class="site-footer"><p>FOOTER-TEXT Copyright 2024 Daily Example.</p></footer>
</body></html>"""

CHROME_MARKERS = [
    "SCRIPT-TEXT", "HEADER-TEXT", "NAV-TEXT", "COOKIE-TEXT", "BREADCRUMB-TEXT", "SHARE-TEXT",
    "RELATED-TEXT", "NEWSLETTER-TEXT", "SIDEBAR-TEXT", "FOOTER-TEXT",
]  # fmt: skip


def page(body: str, title: str = "Test page") -> str:
    paras = "".join(f"<p>{body} Sentence {i} adds words, so it reads like prose.</p>" for i in range(3))
    return f"<html><head><title>{title}</title></head><body><article>{paras}</article></body></html>"


MALFORMED_HTML = (
    "<html><body><div class=content><p>Unclosed paragraph about the tides of the northern bay, long enough"
    " to be prose.<p>Second <b>bold <i>crossed</b> nesting</i> & a stray &bogus; entity, still prose here."
    "</span></div></td><p>Third paragraph after stray closing tags, which parsers must tolerate too.<!-- x"
)

# A sitemap index nesting a plain sitemap, a gzipped one, another index, a
# missing one and itself (a loop). {base} is the server's address.
SITEMAPS = {
    "/sitemap.xml": """<?xml version="1.0" encoding="UTF-8"?>
<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <sitemap><loc>{base}/sitemaps/pages.xml</loc></sitemap>
  <sitemap><loc>{base}/sitemaps/more.xml.gz</loc></sitemap>
  <sitemap><loc>{base}/sitemaps/nested-index.xml</loc></sitemap>
  <sitemap><loc>{base}/sitemaps/missing.xml</loc></sitemap>
  <sitemap><loc>{base}/sitemap.xml</loc></sitemap>
</sitemapindex>""",
    "/sitemaps/pages.xml": """<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <url><loc>{base}/sm/1</loc><lastmod>2024-01-01</lastmod></url>
  <url><loc>{base}/sm/2?a=1&amp;b=2</loc></url>
</urlset>""",
    "/sitemaps/more.xml.gz": """<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <url><loc>{base}/sm/3</loc></url>
  <url><loc>{base}/sm/1</loc></url>
</urlset>""",
    "/sitemaps/nested-index.xml": """<?xml version="1.0" encoding="UTF-8"?>
<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <sitemap><loc>{base}/sitemaps/deep.xml</loc></sitemap>
</sitemapindex>""",
    "/sitemaps/deep.xml": """<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <url><loc>{base}/sm/4</loc></url>
</urlset>""",
}

_VOCAB = (
    "tide harbour lantern copper meadow orchard ferry granite willow falcon ledger cellar beacon quarry "
    "thistle saddle marble ember canyon parcel hollow timber glacier pebble compass ribbon barley cobalt "
    "furnace signal voyage cradle anchor summit velvet shutter basalt meridian"
).split()


def prose(seed: int, words: int = 300) -> list[str]:
    """Deterministic pseudo-prose: three paragraphs of sentences from a small vocabulary."""
    rng = random.Random(seed)
    ws = [rng.choice(_VOCAB) for _ in range(words)]
    sentences = [" ".join(ws[i : i + 15]).capitalize() + "." for i in range(0, words, 15)]
    third = len(sentences) // 3
    return [" ".join(sentences[:third]), " ".join(sentences[third : 2 * third]), " ".join(sentences[2 * third :])]


def site_page(paras: list[str], extra: str = "") -> str:
    body = "".join(f"<p>{p}</p>" for p in paras)
    return f"<html><head><title>Site</title></head><body><article>{body}{extra}</article></body></html>"


BYLINE = "<p>Written by the Example Site editorial team, all rights reserved.</p>"
_NEAR = prose(1)
_NEAR[1] = _NEAR[1].replace(" ", " zebra ", 1)  # one word more: Jaccard ~0.98
SITE_PAGES = {
    "/site/a": site_page(prose(1)),
    "/site/a-copy": site_page(prose(1)).replace("<p>", "<p> "),  # same text, other spacing
    "/site/a-near": site_page(_NEAR),
    "/site/p1": site_page(prose(2), BYLINE),
    "/site/p2": site_page(prose(3), BYLINE),
    "/site/p3": site_page(prose(4), BYLINE),
}


# ---------------------------------------------------------------------------
# The handler
# ---------------------------------------------------------------------------


class CorpusHandler(PageHandler):
    """Every route the corpus tests fetch; the `n`th request of a path can answer differently."""

    lock = threading.Lock()
    in_flight = [0, 0]  # requests being served now, the most at once
    conditional: Counter = Counter()  # 304s answered to If-None-Match / If-Modified-Since
    robots_mode = ["ok"]  # "503": /robots.txt answers 503

    @classmethod
    def fresh_state(cls) -> dict[str, Any]:
        return {**super().fresh_state(), "in_flight": [0, 0], "conditional": Counter(), "robots_mode": ["ok"]}

    def route(self, path: str, n: int) -> None:
        if path == "/article":
            self.send(200, ARTICLE_HTML.encode())
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/target")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/target":
            self.send(200, page("Redirect target reached.").encode())
        elif path == "/missing":
            self.send(404, b"<html><body><p>not here</p></body></html>")
        elif path == "/flaky":  # 500 once, then fine: a retry must recover it
            if n == 1:
                self.send(500, b"oops")
            else:
                self.send(200, page("Flaky server recovered.").encode())
        elif path == "/always500":
            self.send(500, b"down")
        elif path == "/ratelimited":  # 429 with Retry-After: 1 once, then fine
            if n == 1:
                self.send(429, b"slow down", Retry_After="1")
            else:
                self.send(200, page("Rate limit lifted.").encode())
        elif path == "/doc.pdf":
            self.send(200, b"%PDF-1.4 fake", ctype="application/pdf")
        elif path == "/gzip":
            body = gzip.compress(page("Compressed page decoded.").encode())
            self.send(200, body, Content_Encoding="gzip")
        elif path == "/latin1":
            body = page("Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e na\u00efve.").encode("latin-1")
            self.send(200, body, ctype="text/html; charset=ISO-8859-1")
        elif path == "/metacharset":
            html = page("Gr\u00fc\u00dfe aus K\u00f6ln.")
            html = html.replace("<head>", '<head><meta charset="windows-1252">')
            self.send(200, html.encode("cp1252"), ctype="text/html")
        elif path == "/plain":
            body = b"Plain   text\tfile.\n\n\n\nSecond paragraph."
            self.send(200, body, ctype="text/plain; charset=utf-8")
        elif path == "/empty":
            self.send(200, b"<html><body><nav><a href='/'>Home</a></nav></body></html>")
        elif path == "/big":
            self.send(200, b"<html><body><p>" + b"x" * 5000 + b"</p></body></html>")
        elif path == "/concurrent":  # holds the request a while to count overlaps
            with self.lock:
                self.in_flight[0] += 1
                self.in_flight[1] = max(self.in_flight)
            time.sleep(0.1)
            with self.lock:
                self.in_flight[0] -= 1
            self.send(200, page("Concurrent page.").encode())
        elif path == "/slow":
            time.sleep(2.0)
            self.send(200, page("Too late.").encode())
        elif self._more(path):
            pass
        else:
            super().route(path, n)

    def _more(self, path: str) -> bool:
        """Routes for sitemaps, robots.txt, caching, bad bodies and cleaning; False if none."""
        base = f"http://{self.headers['Host']}"
        if path in SITEMAPS:
            body = SITEMAPS[path].replace("{base}", base).encode()
            if path.endswith(".gz"):  # a gzipped file, not a Content-Encoding
                self.send(200, gzip.compress(body), ctype="application/x-gzip")
            else:
                self.send(200, body, ctype="application/xml")
        elif path.startswith("/sm/"):
            self.send(200, page(f"Sitemap page {path[4:]} with its own words.").encode())
        elif path == "/robots.txt":
            if self.robots_mode[0] == "503":
                self.send(503, b"busy")
            else:  # our group disallows /private/; everyone else is kept out entirely
                rules = b"User-agent: kinfuse\nDisallow: /private/\n\nUser-agent: *\nDisallow: /\n"
                self.send(200, rules, ctype="text/plain")
        elif path.startswith("/private/"):
            self.send(200, page("Private page.").encode())
        elif path == "/etag":  # revalidated with If-None-Match
            if self.headers.get("If-None-Match") == '"v1"':
                self.conditional[path] += 1
                self.send(304, b"", ETag='"v1"')
            else:
                self.send(200, page("Cached by entity tag.").encode(), ETag='"v1"')
        elif path == "/lastmod":  # revalidated with If-Modified-Since
            stamp = "Wed, 01 May 2024 10:00:00 GMT"
            if self.headers.get("If-Modified-Since") == stamp:
                self.conditional[path] += 1
                self.send(304, b"")
            else:
                self.send(200, page("Cached by date.").encode(), Last_Modified=stamp)
        elif path in ("/loop/a", "/loop/b"):
            self.send_response(302)
            self.send_header("Location", "/loop/b" if path == "/loop/a" else "/loop/a")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/binary":  # a PNG served as HTML
            self.send(200, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8)
        elif path == "/badutf8":  # declared UTF-8, with bytes that are not
            body = page("Broken \xff\xfe bytes in an otherwise fine page.").encode("latin-1")
            self.send(200, body, ctype="text/html; charset=utf-8")
        elif path == "/undeclared1252":  # no charset anywhere, not UTF-8
            self.send(200, page("Caf\u00e9 \u201cquoted\u201d.").encode("cp1252"), ctype="text/html")
        elif path == "/malformed":
            self.send(200, MALFORMED_HTML.encode())
        elif path == "/emptybody":
            self.send(200, b"")
        elif path == "/hugestream":  # no Content-Length: the size shows only while reading
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            for _ in range(10):
                self.wfile.write(b"<p>" + b"y" * 1000 + b"</p>")
            self.close_connection = True
        elif path == "/trickle":  # 8 bytes every 0.25 s for 8 s: each read is quick, the whole body is not
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for _ in range(32):
                self.wfile.write(b"trickle ")
                self.wfile.flush()
                time.sleep(0.25)
            self.close_connection = True
        elif path == "/badport":  # a redirect to a port that cannot exist
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:99999/page")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path in SITE_PAGES:
            self.send(200, SITE_PAGES[path].encode())
        else:
            return False
        return True


# ---------------------------------------------------------------------------
# The routes one concurrent fetch covers (the `fetched` fixture)
# ---------------------------------------------------------------------------

FETCHED_PATHS = [
    "/article", "/redirect", "/missing", "/flaky", "/ratelimited", "/doc.pdf", "/gzip",
    "/latin1", "/metacharset", "/plain", "/empty", "/always500",
]  # fmt: skip


# The corpus, records and documents by path, and the seconds the fetch took.
Fetched = tuple[Corpus, dict[str, SourceRecord], dict[str, Document], float]


# Chrome and prose for the small handwritten pages of the extraction tests
# (test_corpus_extract.py, test_corpus_extract_markup.py).
NAV = "<nav><a href='/'>Home</a> <a href='/a'>Products</a> <a href='/b'>Pricing</a></nav>"
FOOTER = "<footer><p>Copyright 2024 Example Incorporated, all rights reserved, terms apply.</p></footer>"


def chrome_page(body: str) -> str:
    """A whole page: ``body`` between the shared navigation and footer."""
    return f"<html><head><title>Example</title></head><body>{NAV}{body}{FOOTER}</body></html>"


def own_prose(tag: str, n: int) -> str:
    """A sentence of its own per (tag, n), long enough to read as a page's prose."""
    return (
        f"The {tag} paragraph number {n} says something of its own, with a clause, another clause, "
        "and enough words to read as the prose of a page."
    )


def paragraphs(tag: str, n: int) -> str:
    """``n`` ``<p>`` elements of :func:`own_prose` for ``tag``."""
    return "".join(f"<p>{own_prose(tag, i)}</p>" for i in range(n))
