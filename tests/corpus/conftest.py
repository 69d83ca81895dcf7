"""Fixtures of the corpus tests: the shared `http_server` (tests/conftest.py) runs the corpus
test site (corpus_site.py) here, and one concurrent fetch of its routes serves many tests."""

from __future__ import annotations

import time

import pytest
from corpus_site import FETCHED_PATHS, CorpusHandler, Fetched

from kinfuse.corpus import Corpus


@pytest.fixture(scope="module")
def http_handler() -> type[CorpusHandler]:
    return CorpusHandler


@pytest.fixture(scope="module")
def fetched(http_server) -> Fetched:
    """One concurrent fetch of every test route (keeps the suite fast)."""
    base = http_server.base
    start = time.perf_counter()
    corpus = Corpus.from_urls([base + p for p in FETCHED_PATHS], timeout=5, retries=2, allow_private=True)
    elapsed = time.perf_counter() - start
    records = {r.source[len(base) :]: r for r in corpus.records}
    docs = {d.source[len(base) :]: d for d in corpus.documents}
    return corpus, records, docs, elapsed
