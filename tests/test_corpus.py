"""Tests for kinfuse.corpus: extraction, files, texts and real HTTP fetching.

URL loading is tested against a real HTTP server on 127.0.0.1 (no mocks of
httpx), so redirects, retries, compression, charsets and timeouts go through
the same code paths as on the web.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import json
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from kinfuse.corpus import Corpus, Document, SourceRecord, extract_text, extract_title
from kinfuse.errors import CorpusError

# ---------------------------------------------------------------------------
# Fixtures: pages
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
# Fixtures: a real HTTP server
# ---------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    hits: Counter = Counter()  # shared by all handler instances of one server
    lock = threading.Lock()
    in_flight = [0, 0]  # requests being served now, the most at once
    conditional: Counter = Counter()  # 304s answered to If-None-Match / If-Modified-Since
    robots_mode = ["ok"]  # "503": /robots.txt answers 503

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _send(
        self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8", **headers: str
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?")[0]
        self.hits[path] += 1
        n = self.hits[path]
        try:
            if path == "/article":
                self._send(200, ARTICLE_HTML.encode())
            elif path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/target")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/target":
                self._send(200, page("Redirect target reached.").encode())
            elif path == "/missing":
                self._send(404, b"<html><body><p>not here</p></body></html>")
            elif path == "/flaky":  # 500 once, then fine: a retry must recover it
                if n == 1:
                    self._send(500, b"oops")
                else:
                    self._send(200, page("Flaky server recovered.").encode())
            elif path == "/always500":
                self._send(500, b"down")
            elif path == "/ratelimited":  # 429 with Retry-After: 1 once, then fine
                if n == 1:
                    self._send(429, b"slow down", Retry_After="1")
                else:
                    self._send(200, page("Rate limit lifted.").encode())
            elif path == "/doc.pdf":
                self._send(200, b"%PDF-1.4 fake", ctype="application/pdf")
            elif path == "/gzip":
                body = gzip.compress(page("Compressed page decoded.").encode())
                self._send(200, body, Content_Encoding="gzip")
            elif path == "/latin1":
                body = page("Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e na\u00efve.").encode("latin-1")
                self._send(200, body, ctype="text/html; charset=ISO-8859-1")
            elif path == "/metacharset":
                html = page("Gr\u00fc\u00dfe aus K\u00f6ln.")
                html = html.replace("<head>", '<head><meta charset="windows-1252">')
                self._send(200, html.encode("cp1252"), ctype="text/html")
            elif path == "/plain":
                body = b"Plain   text\tfile.\n\n\n\nSecond paragraph."
                self._send(200, body, ctype="text/plain; charset=utf-8")
            elif path == "/empty":
                self._send(200, b"<html><body><nav><a href='/'>Home</a></nav></body></html>")
            elif path == "/big":
                self._send(200, b"<html><body><p>" + b"x" * 5000 + b"</p></body></html>")
            elif path == "/concurrent":  # holds the request a while to count overlaps
                with self.lock:
                    self.in_flight[0] += 1
                    self.in_flight[1] = max(self.in_flight)
                time.sleep(0.1)
                with self.lock:
                    self.in_flight[0] -= 1
                self._send(200, page("Concurrent page.").encode())
            elif path == "/slow":
                time.sleep(2.0)
                self._send(200, page("Too late.").encode())
            elif self._more(path):
                pass
            else:
                self._send(404, b"unknown")
        except (BrokenPipeError, ConnectionResetError):  # a client that gave up (timeouts)
            pass


    def _more(self, path: str) -> bool:
        """Routes for sitemaps, robots.txt, caching, bad bodies and cleaning; False if none."""
        base = f"http://{self.headers['Host']}"
        if path in SITEMAPS:
            body = SITEMAPS[path].replace("{base}", base).encode()
            if path.endswith(".gz"):  # a gzipped file, not a Content-Encoding
                self._send(200, gzip.compress(body), ctype="application/x-gzip")
            else:
                self._send(200, body, ctype="application/xml")
        elif path.startswith("/sm/"):
            self._send(200, page(f"Sitemap page {path[4:]} with its own words.").encode())
        elif path == "/robots.txt":
            if self.robots_mode[0] == "503":
                self._send(503, b"busy")
            else:  # our group disallows /private/; everyone else is kept out entirely
                rules = b"User-agent: kinfuse\nDisallow: /private/\n\nUser-agent: *\nDisallow: /\n"
                self._send(200, rules, ctype="text/plain")
        elif path.startswith("/private/"):
            self._send(200, page("Private page.").encode())
        elif path == "/etag":  # revalidated with If-None-Match
            if self.headers.get("If-None-Match") == '"v1"':
                self.conditional[path] += 1
                self._send(304, b"", ETag='"v1"')
            else:
                self._send(200, page("Cached by entity tag.").encode(), ETag='"v1"')
        elif path == "/lastmod":  # revalidated with If-Modified-Since
            stamp = "Wed, 01 May 2024 10:00:00 GMT"
            if self.headers.get("If-Modified-Since") == stamp:
                self.conditional[path] += 1
                self._send(304, b"")
            else:
                self._send(200, page("Cached by date.").encode(), Last_Modified=stamp)
        elif path in ("/loop/a", "/loop/b"):
            self.send_response(302)
            self.send_header("Location", "/loop/b" if path == "/loop/a" else "/loop/a")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/binary":  # a PNG served as HTML
            self._send(200, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8)
        elif path == "/badutf8":  # declared UTF-8, with bytes that are not
            body = page("Broken \xff\xfe bytes in an otherwise fine page.").encode("latin-1")
            self._send(200, body, ctype="text/html; charset=utf-8")
        elif path == "/undeclared1252":  # no charset anywhere, not UTF-8
            self._send(200, page("Caf\u00e9 \u201cquoted\u201d.").encode("cp1252"), ctype="text/html")
        elif path == "/malformed":
            self._send(200, MALFORMED_HTML.encode())
        elif path == "/emptybody":
            self._send(200, b"")
        elif path == "/hugestream":  # no Content-Length: the size shows only while reading
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            for _ in range(10):
                self.wfile.write(b"<p>" + b"y" * 1000 + b"</p>")
            self.close_connection = True
        elif path in SITE_PAGES:
            self._send(200, SITE_PAGES[path].encode())
        else:
            return False
        return True


@dataclass
class Server:
    base: str  # http://127.0.0.1:PORT
    handler: type[_Handler]  # its hits and in_flight counters


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    fresh = {"hits": Counter(), "in_flight": [0, 0], "conditional": Counter(), "robots_mode": ["ok"]}
    handler = type("Handler", (_Handler,), fresh)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", handler)
    finally:
        httpd.shutdown()
        httpd.server_close()


FETCHED_PATHS = [
    "/article", "/redirect", "/missing", "/flaky", "/ratelimited", "/doc.pdf", "/gzip",
    "/latin1", "/metacharset", "/plain", "/empty", "/always500",
]  # fmt: skip


# The corpus, records and documents by path, and the seconds the fetch took.
Fetched = tuple[Corpus, dict[str, SourceRecord], dict[str, Document], float]


@pytest.fixture(scope="module")
def fetched(server: Server) -> Fetched:
    """One concurrent fetch of every test route (keeps the suite fast)."""
    base = server.base
    start = time.perf_counter()
    corpus = Corpus.from_urls([base + p for p in FETCHED_PATHS], timeout=5, retries=2)
    elapsed = time.perf_counter() - start
    records = {r.source[len(base) :]: r for r in corpus.records}
    docs = {d.source[len(base) :]: d for d in corpus.documents}
    return corpus, records, docs, elapsed


def closed_port() -> int:
    """A local port with nothing listening: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# extract_text / extract_title
# ---------------------------------------------------------------------------


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
    return Path(__file__).resolve().parents[1].parent / "shared" / "extraction"


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


# ---------------------------------------------------------------------------
# from_urls against the local server
# ---------------------------------------------------------------------------


def test_urls_every_source_has_one_record(fetched: Fetched) -> None:
    corpus, records, _, _ = fetched
    assert len(corpus.records) == len(FETCHED_PATHS)
    assert set(records) == set(FETCHED_PATHS)
    assert len(corpus) == sum(r.documents for r in corpus.records)


def test_urls_article_main_text(fetched: Fetched) -> None:
    _, records, docs, _ = fetched
    assert records["/article"].status == "kept"
    doc = docs["/article"]
    assert doc.title == "The keeper of Varnholm"
    for sentence in ARTICLE_SENTENCES:
        assert sentence in doc.text
    for marker in CHROME_MARKERS:
        assert marker not in doc.text, marker
    assert records["/article"].chars == len(doc.text)


def test_urls_redirect_followed(fetched: Fetched) -> None:
    _, records, docs, _ = fetched
    assert records["/redirect"].status == "kept"
    assert "Redirect target reached." in docs["/redirect"].text
    assert "/target" in records["/redirect"].reason


def test_urls_404_fails_with_status(fetched: Fetched) -> None:
    _, records, _, _ = fetched
    assert records["/missing"].status == "failed"
    assert "404" in records["/missing"].reason


def test_urls_500_retried_until_success(fetched: Fetched, server: Server) -> None:
    _, records, docs, _ = fetched
    hits = server.handler.hits
    assert records["/flaky"].status == "kept"
    assert "Flaky server recovered." in docs["/flaky"].text
    assert hits["/flaky"] == 2


def test_urls_500_gives_up_after_retries(fetched: Fetched, server: Server) -> None:
    _, records, _, _ = fetched
    hits = server.handler.hits
    assert records["/always500"].status == "failed"
    assert "500" in records["/always500"].reason
    assert hits["/always500"] == 3  # the first try and retries=2


def test_urls_429_honours_retry_after(fetched: Fetched, server: Server) -> None:
    _, records, docs, elapsed = fetched
    hits = server.handler.hits
    assert records["/ratelimited"].status == "kept"
    assert "Rate limit lifted." in docs["/ratelimited"].text
    assert hits["/ratelimited"] == 2
    assert elapsed >= 0.95  # waited for Retry-After: 1


def test_urls_pdf_skipped_by_content_type(fetched: Fetched) -> None:
    _, records, _, _ = fetched
    assert records["/doc.pdf"].status == "skipped"
    assert "application/pdf" in records["/doc.pdf"].reason


def test_urls_gzip_encoding_decoded(fetched: Fetched) -> None:
    _, records, docs, _ = fetched
    assert records["/gzip"].status == "kept"
    assert "Compressed page decoded." in docs["/gzip"].text


def test_urls_charsets(fetched: Fetched) -> None:
    _, _, docs, _ = fetched
    assert "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e na\u00efve." in docs["/latin1"].text  # header charset
    assert "Gr\u00fc\u00dfe aus K\u00f6ln." in docs["/metacharset"].text  # <meta charset>


def test_urls_plain_text(fetched: Fetched) -> None:
    _, _, docs, _ = fetched
    assert docs["/plain"].text == "Plain text file.\n\nSecond paragraph."


def test_urls_no_text_skipped(fetched: Fetched) -> None:
    _, records, _, _ = fetched
    assert records["/empty"].status == "skipped"
    assert records["/empty"].reason == "no text"


def test_urls_timeout_fails(server: Server) -> None:
    base = server.base
    start = time.perf_counter()
    corpus = Corpus.from_urls([base + "/slow", base + "/gzip"], timeout=0.5, retries=0)
    assert time.perf_counter() - start < 1.9  # did not wait for the slow server
    slow = corpus.records[0]
    assert slow.status == "failed" and "timeout" in slow.reason.lower()
    assert corpus.records[1].status == "kept"


def test_urls_max_bytes_skipped(server: Server) -> None:
    base = server.base
    corpus = Corpus.from_urls([base + "/big", base + "/gzip"], max_bytes=1000)
    assert corpus.records[0].status == "skipped"
    assert "max_bytes" in corpus.records[0].reason


def test_urls_min_chars_and_invalid_and_duplicate(server: Server) -> None:
    base = server.base
    urls = [base + "/gzip", "not a url", "ftp://example.org/x", base + "/gzip", base + "/article"]
    corpus = Corpus.from_urls(urls, min_chars=300)  # the gzip page has ~200 characters
    statuses = [r.status for r in corpus.records]
    assert statuses == ["skipped", "failed", "failed", "skipped", "kept"]
    assert "min_chars" in corpus.records[0].reason
    assert "invalid URL" in corpus.records[1].reason and "invalid URL" in corpus.records[2].reason
    assert "duplicate" in corpus.records[3].reason


def test_urls_unreachable_recorded(server: Server) -> None:
    base = server.base
    dead = f"http://127.0.0.1:{closed_port()}/page"
    corpus = Corpus.from_urls([dead, base + "/gzip"], retries=1)
    rec = corpus.records[0]
    assert rec.source == dead and rec.status == "failed"
    assert "connect" in rec.reason.lower()


def test_urls_dns_failure_recorded(server: Server) -> None:
    bad = "http://no-such-host.invalid/page"  # .invalid never resolves (RFC 2606)
    corpus = Corpus.from_urls([bad, server.base + "/gzip"], retries=0, timeout=5)
    assert corpus.records[0].status == "failed"
    assert "DNS lookup failed for no-such-host.invalid" in corpus.records[0].reason


def test_urls_only_unreachable_raises() -> None:
    dead = f"http://127.0.0.1:{closed_port()}/page"
    with pytest.raises(CorpusError) as err:
        Corpus.from_urls([dead], retries=0)
    assert dead in str(err.value) and "failed" in str(err.value)


def test_urls_from_thread_and_running_loop(server: Server) -> None:
    base = server.base
    out: dict[str, Corpus] = {}
    t = threading.Thread(target=lambda: out.setdefault("c", Corpus.from_urls([base + "/gzip"])))
    t.start()
    t.join(30)
    assert len(out["c"]) == 1

    async def inside_loop() -> Corpus:
        return Corpus.from_urls([base + "/target"])

    assert len(asyncio.run(inside_loop())) == 1


def test_urls_concurrency_limits_respected(server: Server) -> None:
    base = server.base
    urls = [base + f"/concurrent?n={i}" for i in range(25)]  # > 20: the progress-bar path too
    corpus = Corpus.from_urls(urls, concurrency=3, per_host=2, dedup=False)  # the pages are identical
    assert len(corpus) == 25
    assert [r.source for r in corpus.records] == urls  # input order kept
    assert 1 < server.handler.in_flight[1] <= 2  # per_host=2 bounds one host below concurrency=3


# ---------------------------------------------------------------------------
# from_paths
# ---------------------------------------------------------------------------


def test_paths_all_formats(tmp_path: Path) -> None:
    (tmp_path / "a.html").write_text(ARTICLE_HTML, encoding="utf-8")
    (tmp_path / "b.txt").write_text("Plain   notes.\n\n\n\nMore notes.", encoding="utf-8")
    (tmp_path / "c.md").write_text("# Title\n\nMarkdown body.", encoding="utf-8")
    rows = [{"text": "First row."}, {"text": "Second row.", "title": "T2", "source": "src-2"}, {"no": "text"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    json_list = [{"text": "Json one."}, {"text": "Json two."}]
    (tmp_path / "e.json").write_text(json.dumps(json_list), encoding="utf-8")
    (tmp_path / "f.json").write_text(json.dumps({"text": "Single object."}), encoding="utf-8")
    (tmp_path / "g.txt.gz").write_bytes(gzip.compress(b"Gzipped text."))
    (tmp_path / "h.jsonl.gz").write_bytes(gzip.compress(b'{"text": "Gzipped row."}\n'))
    (tmp_path / "i.html.gz").write_bytes(gzip.compress(page("Gzipped html.").encode()))
    (tmp_path / "j.png").write_bytes(b"\x89PNG")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "k.txt").write_text("Nested file.", encoding="utf-8")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.txt").write_text("Hidden.", encoding="utf-8")

    corpus = Corpus.from_paths([tmp_path])
    texts = [d.text for d in corpus]
    by_source = {r.source: r for r in corpus.records}
    assert ARTICLE_SENTENCES[0] in texts[0] and "NAV-TEXT" not in texts[0]
    assert corpus.documents[0].title == "The keeper of Varnholm"
    assert "Plain notes.\n\nMore notes." in texts
    assert "# Title\n\nMarkdown body." in texts
    assert {"First row.", "Second row.", "Json one.", "Json two.", "Single object.", "Gzipped text.",
            "Gzipped row.", "Nested file."} <= set(texts)  # fmt: skip
    assert any("Gzipped html." in t for t in texts)
    assert "Hidden." not in texts
    second = next(d for d in corpus if d.text == "Second row.")
    assert (second.title, second.source) == ("T2", "src-2")
    jsonl = by_source[str(tmp_path / "d.jsonl")]
    assert jsonl.status == "kept" and jsonl.documents == 2 and "line 3" in jsonl.reason
    png = by_source[str(tmp_path / "j.png")]
    assert png.status == "skipped" and ".png" in png.reason
    # sorted, recursive, one record per file
    assert [r.source for r in corpus.records] == sorted(r.source for r in corpus.records)
    assert str(sub / "k.txt") in by_source


def test_paths_single_files_and_missing(tmp_path: Path) -> None:
    f = tmp_path / "one.txt"
    f.write_text("One file.", encoding="utf-8")
    assert [d.text for d in Corpus.from_paths([str(f)])] == ["One file."]
    missing = tmp_path / "nope.txt"
    with pytest.raises(CorpusError, match="no such file or directory: .*nope.txt"):
        Corpus.from_paths([f, missing])


def test_paths_bad_files_recorded(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "bad.txt.gz").write_bytes(b"not gzip at all")
    (tmp_path / "ok.txt").write_text("Fine.", encoding="utf-8")
    corpus = Corpus.from_paths([tmp_path])
    by_name = {Path(r.source).name: r for r in corpus.records}
    assert by_name["bad.json"].status == "failed" and "invalid JSON" in by_name["bad.json"].reason
    assert by_name["bad.txt.gz"].status == "failed"
    assert by_name["ok.txt"].status == "kept"


# ---------------------------------------------------------------------------
# from_texts, from_documents, +, dataset, report, errors
# ---------------------------------------------------------------------------


def test_texts_sources_and_empty() -> None:
    corpus = Corpus.from_texts(["Alpha  beta.\n\n\n\ngamma", "", "   ", "Delta."])
    assert [d.source for d in corpus] == ["text:0", "text:3"]
    assert corpus.documents[0].text == "Alpha beta.\n\ngamma"
    assert [r.status for r in corpus.records] == ["kept", "skipped", "skipped", "kept"]
    assert corpus.records[1].reason == "no text"
    named = Corpus.from_texts(["x"], sources=["mine"])
    assert named.documents[0].source == "mine"
    with pytest.raises(CorpusError, match="2 texts but 1 sources"):
        Corpus.from_texts(["a", "b"], sources=["only-one"])


def test_documents_add_len_iter() -> None:
    a = Corpus.from_documents([Document("First.", "s1", "T1"), Document("", "s-empty")])
    b = Corpus.from_texts(["Second."])
    both = a + b
    assert len(both) == 2
    assert [d.text for d in both] == ["First.", "Second."]
    assert [r.source for r in both.records] == ["s1", "s-empty", "text:0"]
    assert both.records[1].status == "skipped"
    assert both[0].title == "T1"


def test_to_dataset_columns() -> None:
    corpus = Corpus.from_documents([Document("One.", "s1", "Title one"), Document("Two.", "s2")])
    ds = corpus.to_dataset()
    assert ds.column_names == ["text", "source", "title", "fetched_at"]
    assert ds["text"] == ["One.", "Two."]
    assert ds["title"] == ["Title one", ""]


def test_report_lines_and_totals() -> None:
    corpus = Corpus.from_texts(["x" * 400, ""], sources=["good-source", "empty-source"])
    report = corpus.report()
    lines = report.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("kept") and "good-source" in lines[0] and "400 chars" in lines[0]
    assert lines[1].startswith("skipped") and "empty-source" in lines[1] and "no text" in lines[1]
    assert "2 sources" in lines[2] and "1 documents" in lines[2] and "400 characters" in lines[2]
    assert "~100 tokens" in lines[2]


def test_empty_corpus_error_names_every_source(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as err:
        Corpus.from_texts(["", "  "], sources=["first-empty", "second-empty"])
    msg = str(err.value)
    assert "first-empty" in msg and "second-empty" in msg and "no text" in msg

    (tmp_path / "x.png").write_bytes(b"png")
    (tmp_path / "y.txt").write_text("   ", encoding="utf-8")
    with pytest.raises(CorpusError) as err:
        Corpus.from_paths([tmp_path])
    msg = str(err.value)
    assert "x.png" in msg and "y.txt" in msg

    with pytest.raises(CorpusError, match="no source"):
        Corpus.from_texts([])


# ---------------------------------------------------------------------------
# Bad input: each case ends as a per-source record
# ---------------------------------------------------------------------------

BAD_PATHS = ["/loop/a", "/binary", "/badutf8", "/undeclared1252", "/malformed", "/emptybody", "/hugestream"]


@pytest.fixture(scope="module")
def bad(server: Server) -> dict[str, SourceRecord]:
    """One fetch of every bad-input route, plus a TLS handshake against the plain-HTTP server."""
    base = server.base
    tls = base.replace("http://", "https://") + "/article"
    urls = [base + p for p in BAD_PATHS] + [tls, base + "/article"]
    corpus = Corpus.from_urls(urls, retries=0, timeout=5, max_bytes=5000)
    records = {r.source.replace(base, "").replace("https://127.0.0.1:", "tls:"): r for r in corpus.records}
    assert len(records) == len(urls)
    return {("/tls" if k.startswith("tls:") else k): v for k, v in records.items()}


def test_bad_redirect_loop_fails_naming_the_chain(bad: dict[str, SourceRecord]) -> None:
    rec = bad["/loop/a"]
    assert rec.status == "failed"
    assert rec.reason.startswith("redirect loop:") and "/loop/b" in rec.reason and rec.reason.endswith("/loop/a")


def test_bad_binary_served_as_html_skipped(bad: dict[str, SourceRecord]) -> None:
    rec = bad["/binary"]
    assert rec.status == "skipped"
    assert "binary content served as text/html" in rec.reason and "NUL" in rec.reason


def test_bad_invalid_utf8_kept_with_note(bad: dict[str, SourceRecord], server: Server) -> None:
    rec = bad["/badutf8"]
    assert rec.status == "kept" and "invalid UTF-8" in rec.reason and "6 bad byte" in rec.reason  # 2 bytes x 3 paragraphs
    rec = bad["/undeclared1252"]
    assert rec.status == "kept" and "windows-1252" in rec.reason


def test_bad_malformed_html_still_extracted(bad: dict[str, SourceRecord]) -> None:
    rec = bad["/malformed"]
    assert rec.status == "kept" and rec.chars > 150 and rec.reason == ""


def test_bad_empty_and_huge_bodies_skipped(bad: dict[str, SourceRecord]) -> None:
    assert bad["/emptybody"].status == "skipped" and bad["/emptybody"].reason == "empty response body"
    huge = bad["/hugestream"]  # no Content-Length: caught while streaming
    assert huge.status == "skipped" and "max_bytes=5000" in huge.reason


def test_bad_tls_failure_recorded(bad: dict[str, SourceRecord]) -> None:
    rec = bad["/tls"]
    assert rec.status == "failed"
    assert "TLS/SSL" in rec.reason
    assert bad["/article"].status == "kept"


def test_bad_texts_decoded(server: Server) -> None:
    base = server.base
    corpus = Corpus.from_urls([base + "/badutf8", base + "/undeclared1252", base + "/malformed"])
    texts = {d.source[len(base) :]: d.text for d in corpus}
    assert "Broken \ufffd\ufffd bytes" in texts["/badutf8"]
    assert "Caf\u00e9 \u201cquoted\u201d." in texts["/undeclared1252"]
    malformed = texts["/malformed"]
    assert "Unclosed paragraph" in malformed and "crossed nesting" in malformed and "Third paragraph" in malformed
    assert all(d.fetched_at.endswith("+00:00") for d in corpus)  # ISO 8601, UTC


# ---------------------------------------------------------------------------
# Sources: URL files, sitemaps, datasets
# ---------------------------------------------------------------------------


def test_url_file(server: Server, tmp_path: Path) -> None:
    base = server.base
    url_file = tmp_path / "urls.txt"
    url_file.write_text(f"# pages to learn\n{base}/article\n\n   {base}/gzip  \n# {base}/missing\n", encoding="utf-8")
    corpus = Corpus.from_url_file(url_file, retries=0)
    assert [r.source for r in corpus.records] == [base + "/article", base + "/gzip"]
    assert all(r.status == "kept" for r in corpus.records)
    (tmp_path / "none.txt").write_text("# only a comment\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="lists no URL"):
        Corpus.from_url_file(tmp_path / "none.txt")
    with pytest.raises(CorpusError, match="no such URL file"):
        Corpus.from_url_file(tmp_path / "absent.txt")


def test_sitemap_nested_gzip_loop_and_missing(server: Server) -> None:
    base = server.base
    corpus = Corpus.from_sitemap(base + "/sitemap.xml", retries=0)
    records: dict[str, SourceRecord] = {}
    for r in corpus.records:  # the first record of each source (the index is listed twice)
        records.setdefault(r.source[len(base) :], r)
    assert records["/sitemap.xml"].status == "kept" and "5 sitemaps" in records["/sitemap.xml"].reason
    assert records["/sitemaps/pages.xml"].reason == "sitemap: 2 page URLs"
    assert records["/sitemaps/more.xml.gz"].reason == "sitemap: 2 page URLs"  # gzipped file
    assert records["/sitemaps/nested-index.xml"].reason == "sitemap index: 1 sitemaps"
    assert records["/sitemaps/deep.xml"].reason == "sitemap: 1 page URLs"  # two levels down
    assert records["/sitemaps/missing.xml"].status == "failed" and "404" in records["/sitemaps/missing.xml"].reason
    # the index lists itself: read once, the second mention recorded
    assert sum(1 for r in corpus.records if r.source == base + "/sitemap.xml") == 2
    assert any(r.status == "skipped" and "already read" in r.reason for r in corpus.records)
    # pages in sitemap order, /sm/1 (listed twice) fetched once, &amp; decoded
    pages = [r.source[len(base) :] for r in corpus.records if "/sm/" in r.source]
    assert pages == ["/sm/1", "/sm/2?a=1&b=2", "/sm/3", "/sm/4"]
    assert len(corpus) == 4 and all("Sitemap page" in d.text for d in corpus)
    limited = Corpus.from_sitemap(base + "/sitemaps/pages.xml", limit=1)
    assert [d.source for d in limited] == [base + "/sm/1"]


def test_sitemap_invalid_recorded(server: Server) -> None:
    with pytest.raises(CorpusError) as err:
        Corpus.from_sitemap(server.base + "/article", retries=0)  # HTML, not a sitemap
    assert "invalid sitemap: an HTML page, not a sitemap" in str(err.value)


def test_from_dataset_and_round_trip() -> None:
    import datasets

    ds = datasets.Dataset.from_dict(
        {"text": ["First  row.", "", None, "Fourth row."], "title": ["T1", "", "", "T4"], "lang": ["en"] * 4}
    )
    corpus = Corpus.from_dataset(ds)
    assert [d.text for d in corpus] == ["First row.", "Fourth row."]
    assert [d.source for d in corpus] == ["dataset:0", "dataset:3"]
    assert corpus[0].title == "T1"
    assert [r.status for r in corpus.records] == ["kept", "skipped", "skipped", "kept"]
    assert corpus.records[2].reason == "not a string (NoneType)"
    again = Corpus.from_dataset(corpus.to_dataset())  # source/title/fetched_at columns come back
    assert [(d.text, d.source, d.title) for d in again] == [(d.text, d.source, d.title) for d in corpus]
    other = datasets.Dataset.from_dict({"body": ["x"]})
    with pytest.raises(CorpusError, match="no column 'text'"):
        Corpus.from_dataset(other)
    assert Corpus.from_dataset(other, text_column="body")[0].text == "x"


# ---------------------------------------------------------------------------
# robots.txt and the response cache
# ---------------------------------------------------------------------------


def test_robots_txt_respected_once_per_host(server: Server) -> None:
    base = server.base
    before = server.handler.hits["/robots.txt"]
    urls = [base + "/private/a", base + "/private/b", base + "/gzip", base + "/target"]
    corpus = Corpus.from_urls(urls, respect_robots=True)
    statuses = [(r.status, r.reason) for r in corpus.records]
    assert statuses[:2] == [("skipped", "disallowed by robots.txt")] * 2
    assert [s for s, _ in statuses[2:]] == ["kept", "kept"]  # the kinfuse group allows the rest
    assert server.handler.hits["/robots.txt"] - before == 1
    assert server.handler.hits["/private/a"] == 0
    # off by default: robots.txt is not even read
    Corpus.from_urls([base + "/private/a"])
    assert server.handler.hits["/robots.txt"] - before == 1


def test_robots_txt_5xx_disallows_all(server: Server) -> None:
    server.handler.robots_mode[0] = "503"
    try:
        with pytest.raises(CorpusError) as err:
            Corpus.from_urls([server.base + "/gzip"], respect_robots=True, retries=0)
    finally:
        server.handler.robots_mode[0] = "ok"
    assert "disallowed by robots.txt (robots.txt answered HTTP 503)" in str(err.value)


def test_cache_revalidates_with_etag_and_last_modified(server: Server, tmp_path: Path) -> None:
    base = server.base
    urls = [base + "/etag", base + "/lastmod"]
    cache = tmp_path / "cache"
    first = Corpus.from_urls(urls, cache_dir=cache)
    assert [r.from_cache for r in first.records] == [False, False]
    assert len(list(cache.glob("*.body"))) == 2 and len(list(cache.glob("*.json"))) == 2
    assert server.handler.conditional["/etag"] == 0

    second = Corpus.from_urls(urls, cache_dir=cache)
    assert [r.status for r in second.records] == ["kept", "kept"]
    assert [r.from_cache for r in second.records] == [True, True]
    assert server.handler.conditional["/etag"] == 1 and server.handler.conditional["/lastmod"] == 1
    assert [d.text for d in second] == [d.text for d in first]
    assert "[from cache]" in second.report()
    # without cache_dir nothing is conditional
    Corpus.from_urls(urls)
    assert server.handler.conditional["/etag"] == 1


# ---------------------------------------------------------------------------
# Cleaning, save/load
# ---------------------------------------------------------------------------

SITE = ["/site/a", "/site/a-copy", "/site/a-near", "/site/p1", "/site/p2", "/site/p3"]


def test_cleaning_counts_and_records(server: Server) -> None:
    base = server.base
    corpus = Corpus.from_urls([base + p for p in SITE])
    records = {r.source[len(base) :]: r for r in corpus.records}
    assert records["/site/a-copy"].status == "skipped"
    assert records["/site/a-copy"].reason == f"duplicate of {base}/site/a"
    assert records["/site/a-near"].status == "skipped"
    assert records["/site/a-near"].reason == f"near-duplicate of {base}/site/a"
    assert corpus.cleaning["exact_duplicates"] == 1 and corpus.cleaning["near_duplicates"] == 1
    assert corpus.cleaning["boilerplate_lines"] == 1 and corpus.cleaning["boilerplate_lines_removed"] == 3
    assert len(corpus) == 4
    assert not any("editorial team" in d.text for d in corpus)
    assert records["/site/p1"].chars == len(corpus.documents[1].text)  # counts follow the cleaned text
    assert "cleaning: 1 exact duplicate(s), 1 near-duplicate(s), 1 boilerplate line(s)" in corpus.report()

    raw = Corpus.from_urls([base + p for p in SITE], dedup=False)
    assert len(raw) == 6 and raw.cleaning["exact_duplicates"] == 0
    assert sum("editorial team" in d.text for d in raw) == 3
    assert len(raw.clean()) == 4  # the explicit method does the same
    assert len(raw.clean(near_dup_threshold=None)) == 5


def test_clean_min_chars_and_multi_document_sources(tmp_path: Path) -> None:
    rows = [{"text": "Same row text."}, {"text": "same   ROW text."}, {"text": "Another row, long enough."}]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    (tmp_path / "short.txt").write_text("Tiny.", encoding="utf-8")
    corpus = Corpus.from_paths([tmp_path], min_chars=10)
    by_name = {Path(r.source).name: r for r in corpus.records}
    rows_rec = by_name["rows.jsonl"]
    assert rows_rec.status == "kept" and rows_rec.documents == 2  # one of three rows removed
    assert f"duplicate of {tmp_path / 'rows.jsonl'}:1" in rows_rec.reason
    assert by_name["short.txt"].status == "skipped"
    assert by_name["short.txt"].reason.startswith("shorter than 10 characters")
    assert corpus.cleaning["too_short"] == 1 and corpus.cleaning["exact_duplicates"] == 1


def test_save_load_round_trip(fetched: Fetched, tmp_path: Path) -> None:
    corpus = fetched[0] + Corpus.from_texts(["Extra text."])
    folder = corpus.save(tmp_path / "saved")
    assert sorted(p.name for p in folder.iterdir()) == ["cleaning.json", "documents.jsonl", "records.jsonl"]
    loaded = Corpus.load(folder)
    assert loaded.documents == corpus.documents
    assert loaded.records == corpus.records
    assert loaded.cleaning == corpus.cleaning
    assert loaded.report() == corpus.report()
    # the document -> record link survives: cleaning after load still updates the right record
    twice = (loaded + loaded).clean().records[len(corpus.records)]
    assert (twice.status, twice.reason) == ("skipped", f"duplicate of {corpus.records[0].source}")
    with pytest.raises(CorpusError, match="not a saved corpus"):
        Corpus.load(tmp_path / "nothing-here")


def test_report_lists_every_source_and_totals(fetched: Fetched) -> None:
    corpus = fetched[0]
    report = corpus.report().splitlines()
    assert len(report) == len(corpus.records) + 2  # sources, totals, cleaning
    for line, r in zip(report, corpus.records):
        assert line.startswith(r.status) and r.source in line and r.reason in line
    chars = sum(len(d.text) for d in corpus)
    assert f"{len(corpus)} documents, {chars} characters, ~{chars // 4} tokens" in report[-2]
    assert report[-1].startswith("cleaning: ")
