"""Tests for kinfuse.corpus.fetch.robots: respect_robots against the local test site's robots.txt."""

from __future__ import annotations

import pytest
from local_http import LocalServer

from kinfuse.corpus import Corpus
from kinfuse.errors import CorpusError


def test_robots_txt_respected_once_per_host(http_server: LocalServer) -> None:
    base = http_server.base
    before = http_server.handler.hits["/robots.txt"]
    urls = [base + "/private/a", base + "/private/b", base + "/gzip", base + "/target"]
    corpus = Corpus.from_urls(urls, respect_robots=True, allow_private=True)
    statuses = [(r.status, r.reason) for r in corpus.records]
    assert statuses[:2] == [("skipped", "disallowed by robots.txt")] * 2
    assert [s for s, _ in statuses[2:]] == ["kept", "kept"]  # the kinfuse group allows the rest
    assert http_server.handler.hits["/robots.txt"] - before == 1
    assert http_server.handler.hits["/private/a"] == 0
    # off by default: robots.txt is not even read
    Corpus.from_urls([base + "/private/a"], allow_private=True)
    assert http_server.handler.hits["/robots.txt"] - before == 1


def test_robots_txt_5xx_disallows_all(http_server: LocalServer) -> None:
    http_server.handler.robots_mode[0] = "503"
    try:
        with pytest.raises(CorpusError) as err:
            Corpus.from_urls([http_server.base + "/gzip"], respect_robots=True, retries=0, allow_private=True)
    finally:
        http_server.handler.robots_mode[0] = "ok"
    assert "disallowed by robots.txt (robots.txt answered HTTP 503)" in str(err.value)
