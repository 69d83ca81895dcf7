"""Sitemaps: the page URLs a sitemap.xml lists, following nested sitemap indexes.

Sitemaps come as XML (``<urlset>`` or ``<sitemapindex>``), gzipped XML, or a
plain list of URLs; each one read gets its own :class:`SourceRecord`, so a
missing or malformed sitemap is reported like any other source.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from urllib.parse import urljoin
from xml.etree import ElementTree

from ..documents import SourceRecord
from .response import Get, Outcome, url_problem

_SITEMAP_MAX_BYTES = 52_428_800  # the sitemaps.org limit for one uncompressed sitemap
_SITEMAP_MAX_DEPTH = 5  # index -> index -> ... : deeper is a loop or a mistake
_DOCTYPE = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.I)
_HTML_START = re.compile(rb"(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)", re.I | re.S)

async def read_sitemap(get: Get, url: str, depth: int, seen: set[str]) -> tuple[list[SourceRecord], list[str]]:
    """Records of this sitemap and those it nests, and the page URLs they list, in order."""
    if url in seen:
        return [SourceRecord(url, "skipped", "sitemap already read (listed twice, or a loop)")], []
    seen.add(url)  # before the first await: sibling tasks see it at once
    problem = url_problem(url)
    if problem:
        return [SourceRecord(url, "failed", problem)], []
    try:
        got = await get(url, max_bytes=_SITEMAP_MAX_BYTES, accept=None)
        kind, locs = parse_sitemap(got.body)
    except Outcome as outcome:
        return [SourceRecord(url, outcome.status, outcome.reason)], []
    except ValueError as exc:
        return [SourceRecord(url, "failed", f"invalid sitemap: {exc}")], []
    locs = [urljoin(url, loc) for loc in locs]
    cached = got.from_cache
    if kind == "urlset":
        return [SourceRecord(url, "kept", f"sitemap: {len(locs)} page URLs", from_cache=cached)], locs
    if depth >= _SITEMAP_MAX_DEPTH:
        reason = f"sitemap index nested more than {_SITEMAP_MAX_DEPTH} deep: not followed"
        return [SourceRecord(url, "skipped", reason)], []
    record = SourceRecord(url, "kept", f"sitemap index: {len(locs)} sitemaps", from_cache=cached)
    nested = await asyncio.gather(*(read_sitemap(get, loc, depth + 1, seen) for loc in locs))
    records, pages = [record], []
    for child_records, child_pages in nested:
        records.extend(child_records)
        pages.extend(child_pages)
    return records, pages


def parse_sitemap(body: bytes) -> tuple[str, list[str]]:
    """("urlset" or "index", the <loc> URLs) of a sitemap; gzip and plain-text lists too.

    Raises Outcome or ValueError saying what is wrong.
    """
    if body[:2] == b"\x1f\x8b":  # a .xml.gz served as a file, not as Content-Encoding
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, _SITEMAP_MAX_BYTES)
        except zlib.error as exc:
            raise ValueError(f"corrupt gzip ({exc})") from None
        if inflater.unconsumed_tail:
            raise Outcome("skipped", f"too large: more than {_SITEMAP_MAX_BYTES} bytes uncompressed")
    stripped = body.lstrip(b"\xef\xbb\xbf \t\r\n")
    if _HTML_START.match(stripped):
        raise ValueError("an HTML page, not a sitemap")
    if not stripped.startswith(b"<"):
        # sitemaps.org also allows a plain text file with one URL per line.
        lines = [line.strip() for line in stripped.decode("utf-8", "replace").splitlines() if line.strip()]
        if lines and all(url_problem(line) is None for line in lines):
            return "urlset", lines
        raise ValueError("neither XML nor a list of URLs")
    # No sitemap needs a DTD; refusing one rules out entity-expansion bombs.
    if _DOCTYPE.search(body):
        raise ValueError("DOCTYPE or ENTITY declarations are not allowed")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise ValueError(f"malformed XML ({exc})") from None

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]  # ignore the namespace

    kind = local(root.tag)
    if kind not in ("urlset", "sitemapindex"):
        raise ValueError(f"root element <{kind}> is neither <urlset> nor <sitemapindex>")
    entry = "url" if kind == "urlset" else "sitemap"
    locs = [
        sub.text.strip()
        for el in root
        if local(el.tag) == entry
        for sub in el
        if local(sub.tag) == "loc" and sub.text and sub.text.strip()
    ]
    return ("urlset" if kind == "urlset" else "index"), locs
