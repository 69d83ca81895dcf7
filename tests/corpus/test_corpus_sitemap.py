"""Tests for kinfuse.corpus.fetch.sitemap: Corpus.from_sitemap against the local test site."""

from __future__ import annotations

import pytest
from local_http import LocalServer

from kinfuse.corpus import Corpus, SourceRecord
from kinfuse.errors import CorpusError


def test_sitemap_nested_gzip_loop_and_missing(http_server: LocalServer) -> None:
    base = http_server.base
    corpus = Corpus.from_sitemap(base + "/sitemap.xml", retries=0, allow_private=True)
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
    limited = Corpus.from_sitemap(base + "/sitemaps/pages.xml", limit=1, allow_private=True)
    assert [d.source for d in limited] == [base + "/sm/1"]


def test_sitemap_invalid_recorded(http_server: LocalServer) -> None:
    with pytest.raises(CorpusError) as err:
        Corpus.from_sitemap(http_server.base + "/article", retries=0, allow_private=True)  # HTML, not a sitemap
    assert "invalid sitemap: an HTML page, not a sitemap" in str(err.value)
