"""Tests for kinfuse.corpus.ingest: Corpus.ingest streams a crawl into a store on disk, with a bounded
number of fetches pending, and a rerun (after a SIGKILL too) resumes without refetching what is stored.
Against a real HTTP server on 127.0.0.1 (ingest_site.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ingest_site import IngestHandler, article
from local_http import LocalServer

from kinfuse.corpus import Corpus, extract_text
from kinfuse.corpus.store import CorpusStore
from kinfuse.errors import CorpusError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def http_handler() -> type[IngestHandler]:
    return IngestHandler


@pytest.fixture
def site(http_server: LocalServer):
    """The server with its counters zeroed and no delay, for one test."""
    h = http_server.handler
    h.hits.clear()
    h.peak = h.inflight = 0
    h.delay = 0.0
    yield http_server
    h.delay = 0.0


def mixed_urls(base: str, n: int) -> list[str]:
    """n URLs: mostly articles, every 10th a redirect, every 25th a 404."""
    urls = []
    for i in range(n):
        if i % 25 == 7:
            urls.append(f"{base}/missing/{i}")
        elif i % 10 == 3:
            urls.append(f"{base}/r/{i}")
        else:
            urls.append(f"{base}/a/{i}")
    return urls


def status_rows(store: Path) -> list[dict]:
    return [json.loads(line) for line in (store / "status.jsonl").read_text().splitlines()]


def test_a_few_hundred_urls_stream_to_disk_with_bounded_fetches(site: LocalServer, tmp_path: Path) -> None:
    site.handler.delay = 0.01
    urls = mixed_urls(site.base, 300)
    store = tmp_path / "store"
    pending: list[int] = []

    def lazily():  # a generator: ingest must not need the whole list, and takes at most window ahead
        for i, url in enumerate(urls):
            stored = len(status_rows(store)) if (store / "status.jsonl").is_file() else 0
            pending.append(i - stored)
            yield url

    result = Corpus.ingest(lazily(), store, concurrency=4, per_host=4, window=8, allow_private=True)
    assert 2 <= site.handler.peak <= 4  # concurrent, and never more requests than concurrency
    assert max(pending) <= 8  # taken but not yet stored: at most window
    rows = status_rows(store)
    assert sorted(r["source"] for r in rows) == sorted(urls)  # one record per URL
    missing = [u for u in urls if "/missing/" in u]
    counts = result.counts()
    assert counts == {
        "sources": 300, "kept": 300 - len(missing), "skipped": 0, "failed": len(missing),
        "documents": 300 - len(missing), "chars": counts["chars"],
    }
    assert result.stats == {"kept": 300 - len(missing), "failed": len(missing)}
    by_source = {r["source"]: r for r in rows}
    assert all(by_source[u]["reason"] == "HTTP 404 Not Found" for u in missing)
    assert by_source[f"{site.base}/r/3"]["reason"] == f"redirected to {site.base}/a/3"
    docs = {d.source: d for d in result}  # iterating the store: one document at a time from its shard
    assert len(docs) == 300 - len(missing)
    assert docs[f"{site.base}/a/0"].text == extract_text(article(0))
    assert docs[f"{site.base}/r/13"].text == extract_text(article(13))
    assert sum(len(d.text) for d in docs.values()) == counts["chars"]

    corpus = Corpus.load(store)  # the whole store as a Corpus, records owning their documents
    assert len(corpus) == len(docs) and len(corpus.records) == 300
    assert corpus.records[[r.source for r in corpus.records].index(f"{site.base}/a/0")].documents == 1
    dataset = result.to_dataset(batch=64)
    assert dataset.num_rows == len(docs) and set(dataset["source"]) == set(docs)
    assert (store / "dataset.arrow").is_file()


def test_rerun_skips_everything_stored(site: LocalServer, tmp_path: Path) -> None:
    urls = mixed_urls(site.base, 40)
    first = Corpus.ingest(urls, tmp_path / "s", allow_private=True)
    hits = sum(site.handler.hits.values())
    assert hits == 40 + 4  # every URL once, and each redirect's target
    again = Corpus.ingest(urls + [urls[0]], tmp_path / "s", allow_private=True)
    assert sum(site.handler.hits.values()) == hits  # nothing requested again, failures included
    assert again.stats == {"already stored": 41}
    assert again.counts() == first.counts()


def test_exact_duplicates_short_pages_and_bad_urls_get_records(site: LocalServer, tmp_path: Path) -> None:
    base = site.base
    urls = [f"{base}/a/1", f"{base}/a/1?copy", "ftp://example.org/x", f"{base}/a/2", f"{base}/a/2"]
    store = Corpus.ingest(urls, tmp_path / "s", allow_private=True)
    rows = {r["source"]: r for r in status_rows(tmp_path / "s")}
    assert len(rows) == 4 and store.stats.get("duplicate", 0) + store.stats.get("already stored", 0) == 1
    # The same page under two URLs: whichever fetch ended first is kept, the other names it.
    pair = sorted((rows[u]["status"], rows[u]["reason"], u) for u in (f"{base}/a/1", f"{base}/a/1?copy"))
    assert [p[0] for p in pair] == ["kept", "skipped"] and pair[1][1] == f"duplicate of {pair[0][2]}"
    assert rows["ftp://example.org/x"]["status"] == "failed" and "only http" in rows["ftp://example.org/x"]["reason"]
    assert len(store) == 2
    long_only = Corpus.ingest([f"{base}/a/3"], tmp_path / "t", min_chars=10**6, allow_private=True)
    assert next(long_only.records()).reason.startswith("shorter than 1000000 characters")
    with pytest.raises(CorpusError, match="empty corpus"):
        Corpus.load(tmp_path / "t")


def test_killed_ingestion_resumes_without_refetching_what_is_stored(site: LocalServer, tmp_path: Path) -> None:
    site.handler.delay = 0.02
    urls = mixed_urls(site.base, 300)
    url_file = tmp_path / "urls.txt"
    url_file.write_text("# the crawl\n" + "\n".join(urls) + "\n")
    store = tmp_path / "store"
    script = (
        "import sys; from kinfuse.corpus import Corpus; "
        "Corpus.ingest(sys.argv[1], sys.argv[2], concurrency=4, allow_private=True)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", script, str(url_file), str(store)], env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            status = store / "status.jsonl"
            if status.is_file() and status.read_bytes().count(b"\n") >= 60:
                break
            time.sleep(0.005)
        assert child.poll() is None, "the ingestion ended before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    # What a killed run left: whole status lines only count (a torn last one is cut on reopening).
    lines = (store / "status.jsonl").read_bytes().split(b"\n")
    stored = [json.loads(line)["source"] for line in lines[:-1]]
    assert 60 <= len(stored) < 300
    hits_before = dict(site.handler.hits)

    site.handler.delay = 0.0
    result = Corpus.ingest(url_file, store, concurrency=4, allow_private=True)
    hits = site.handler.hits
    refetched = [u for u in stored if hits[u[len(site.base):]] != hits_before.get(u[len(site.base):], 0)]
    assert refetched == []  # not one stored URL was requested again
    assert result.stats["already stored"] == len(stored)
    rows = status_rows(store)
    assert sorted(r["source"] for r in rows) == sorted(urls)  # every URL once: no duplicate record
    docs = list(result)
    assert len(docs) == len({d.source for d in docs}) == sum(1 for u in urls if "/missing/" not in u)
    for d in docs:  # no half-written document: each is the whole text of its page
        n = int(d.source.rsplit("/", 1)[1])
        assert d.text == extract_text(article(n))


def test_a_second_ingest_into_a_store_in_use_is_refused(site: LocalServer, tmp_path: Path) -> None:
    from kinfuse.corpus.store import StoreWriter

    writer = StoreWriter(tmp_path / "s")
    try:
        with pytest.raises(CorpusError, match="being written by another ingest"):
            Corpus.ingest([f"{site.base}/a/1"], tmp_path / "s", allow_private=True)
    finally:
        writer.close()
    assert len(Corpus.ingest([f"{site.base}/a/1"], tmp_path / "s", allow_private=True)) == 1


def test_bad_store_folders_are_named(tmp_path: Path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(CorpusError, match=f"corpus store {a_file} is a file"):
        Corpus.ingest(["http://127.0.0.1:9/a"], a_file)
    with pytest.raises(CorpusError, match=f"cannot write the corpus store {a_file / 'store'}.*writable folder"):
        Corpus.ingest(["http://127.0.0.1:9/a"], a_file / "store")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.md").write_text("mine")
    with pytest.raises(CorpusError, match=f"{other} holds other files and is not a corpus store"):
        Corpus.ingest(["http://127.0.0.1:9/a"], other)
    assert sorted(p.name for p in other.iterdir()) == ["notes.md"]  # untouched
    with pytest.raises(CorpusError, match="is not a corpus store"):
        CorpusStore(other)


def test_url_file_bad_lines_named_before_any_fetch(site: LocalServer, tmp_path: Path) -> None:
    url_file = tmp_path / "urls.txt"
    url_file.write_bytes(
        f"{site.base}/a/1\n# comment\n\nwww.example.org/page\n{site.base}/a/2 {site.base}/a/3\n".encode()
        + b"http://example.org/\xff\n"
    )
    with pytest.raises(CorpusError) as err:
        Corpus.ingest(url_file, tmp_path / "s", allow_private=True)
    message = str(err.value)
    assert f"URL file {url_file}: 3 bad line(s)" in message
    assert "line 4: invalid URL 'www.example.org/page'" in message
    assert "line 5: several words on one line" in message
    assert "line 6: not UTF-8 text" in message
    assert "one http(s) URL per line" in message
    assert sum(site.handler.hits.values()) == 0 and not (tmp_path / "s").exists()
    with pytest.raises(CorpusError, match="no such URL file"):
        Corpus.ingest(tmp_path / "absent.txt", tmp_path / "s")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(CorpusError, match="lists no URL"):
        Corpus.ingest(tmp_path / "empty.txt", tmp_path / "s")
    with pytest.raises(CorpusError, match=r"got the single URL .*pass \["):
        Corpus.ingest(f"{site.base}/a/1", tmp_path / "s")
    with pytest.raises(ValueError, match="window >= 1"):
        Corpus.ingest([f"{site.base}/a/1"], tmp_path / "s", window=0)


def test_a_write_that_fails_midway_is_named_and_the_rerun_completes(site: LocalServer, tmp_path: Path) -> None:
    """A real failing write (the file-size limit of the ingesting process, as a full disk would):
    a clear error naming the store, and the rerun resumes with no cut or doubled document."""
    urls = [f"{site.base}/a/{i}" for i in range(60)]
    store = tmp_path / "store"
    script = (
        "import resource, signal, sys; from kinfuse.corpus import Corpus\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (60000, 60000))\n"
        "Corpus.ingest(sys.argv[2:], sys.argv[1], allow_private=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script, str(store), *urls], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    assert f"CorpusError: cannot write to the corpus store {store}" in out.stderr
    assert "run the same ingest again to resume" in out.stderr
    assert 0 < len(status_rows(store)) < 60  # some sources committed before the write failed
    result = Corpus.ingest(urls, store, allow_private=True)
    docs = list(result)
    assert sorted(d.source for d in docs) == sorted(urls)
    assert all(d.text == extract_text(article(int(d.source.rsplit("/", 1)[1]))) for d in docs)
