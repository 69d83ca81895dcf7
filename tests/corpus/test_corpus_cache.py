"""Tests for kinfuse.corpus.fetch.cache: cache_dir keeps responses and revalidates them on a rerun."""

from __future__ import annotations

from pathlib import Path

from local_http import LocalServer

from kinfuse.corpus import Corpus


def test_cache_revalidates_with_etag_and_last_modified(http_server: LocalServer, tmp_path: Path) -> None:
    base = http_server.base
    urls = [base + "/etag", base + "/lastmod"]
    cache = tmp_path / "cache"
    first = Corpus.from_urls(urls, cache_dir=cache, allow_private=True)
    assert [r.from_cache for r in first.records] == [False, False]
    assert len(list(cache.glob("*.body"))) == 2 and len(list(cache.glob("*.json"))) == 2
    assert http_server.handler.conditional["/etag"] == 0

    second = Corpus.from_urls(urls, cache_dir=cache, allow_private=True)
    assert [r.status for r in second.records] == ["kept", "kept"]
    assert [r.from_cache for r in second.records] == [True, True]
    assert http_server.handler.conditional["/etag"] == 1 and http_server.handler.conditional["/lastmod"] == 1
    assert [d.text for d in second] == [d.text for d in first]
    assert "[from cache]" in second.report()
    # without cache_dir nothing is conditional
    Corpus.from_urls(urls, allow_private=True)
    assert http_server.handler.conditional["/etag"] == 1
