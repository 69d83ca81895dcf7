"""Tests for kinfuse.corpus.fetch (the client): Corpus.from_urls and from_url_file against a real
HTTP server on 127.0.0.1 (no mocks of httpx), so redirects, retries, compression, charsets and
timeouts go through the same code paths as on the web.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest
from corpus_site import ARTICLE_SENTENCES, CHROME_MARKERS, FETCHED_PATHS, Fetched
from local_http import LocalServer

from kinfuse.corpus import Corpus, SourceRecord
from kinfuse.errors import CorpusError


def closed_port() -> int:
    """A local port with nothing listening: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def test_urls_500_retried_until_success(fetched: Fetched, http_server: LocalServer) -> None:
    _, records, docs, _ = fetched
    hits = http_server.handler.hits
    assert records["/flaky"].status == "kept"
    assert "Flaky server recovered." in docs["/flaky"].text
    assert hits["/flaky"] == 2


def test_urls_500_gives_up_after_retries(fetched: Fetched, http_server: LocalServer) -> None:
    _, records, _, _ = fetched
    hits = http_server.handler.hits
    assert records["/always500"].status == "failed"
    assert "500" in records["/always500"].reason
    assert hits["/always500"] == 3  # the first try and retries=2


def test_urls_429_honours_retry_after(fetched: Fetched, http_server: LocalServer) -> None:
    _, records, docs, elapsed = fetched
    hits = http_server.handler.hits
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


def test_urls_timeout_fails(http_server: LocalServer) -> None:
    base = http_server.base
    start = time.perf_counter()
    corpus = Corpus.from_urls([base + "/slow", base + "/gzip"], timeout=0.5, retries=0, allow_private=True)
    assert time.perf_counter() - start < 1.9  # did not wait for the slow server
    slow = corpus.records[0]
    assert slow.status == "failed" and "timeout" in slow.reason.lower()
    assert corpus.records[1].status == "kept"


def test_urls_max_bytes_skipped(http_server: LocalServer) -> None:
    base = http_server.base
    corpus = Corpus.from_urls([base + "/big", base + "/gzip"], max_bytes=1000, allow_private=True)
    assert corpus.records[0].status == "skipped"
    assert "max_bytes" in corpus.records[0].reason


def test_urls_min_chars_and_invalid_and_duplicate(http_server: LocalServer) -> None:
    base = http_server.base
    urls = [base + "/gzip", "not a url", "ftp://example.org/x", base + "/gzip", base + "/article"]
    corpus = Corpus.from_urls(urls, min_chars=300, allow_private=True)  # the gzip page has ~200 characters
    statuses = [r.status for r in corpus.records]
    assert statuses == ["skipped", "failed", "failed", "skipped", "kept"]
    assert "min_chars" in corpus.records[0].reason
    assert "invalid URL" in corpus.records[1].reason and "invalid URL" in corpus.records[2].reason
    assert "duplicate" in corpus.records[3].reason


def test_urls_unreachable_recorded(http_server: LocalServer) -> None:
    base = http_server.base
    dead = f"http://127.0.0.1:{closed_port()}/page"
    corpus = Corpus.from_urls([dead, base + "/gzip"], retries=1, allow_private=True)
    rec = corpus.records[0]
    assert rec.source == dead and rec.status == "failed"
    assert "connect" in rec.reason.lower()


def test_urls_dns_failure_recorded(http_server: LocalServer) -> None:
    bad = "http://no-such-host.invalid/page"  # .invalid never resolves (RFC 2606)
    corpus = Corpus.from_urls([bad, http_server.base + "/gzip"], retries=0, timeout=5, allow_private=True)
    assert corpus.records[0].status == "failed"
    assert "DNS lookup failed for no-such-host.invalid" in corpus.records[0].reason


def test_urls_only_unreachable_raises() -> None:
    dead = f"http://127.0.0.1:{closed_port()}/page"
    with pytest.raises(CorpusError) as err:
        Corpus.from_urls([dead], retries=0, allow_private=True)
    assert dead in str(err.value) and "failed" in str(err.value)


def test_urls_deadline_stops_a_trickled_body(http_server: LocalServer) -> None:
    # Each 8-byte read arrives well within timeout=1, so only a deadline on the whole fetch stops it.
    base = http_server.base
    corpus = Corpus.from_urls([base + "/trickle", base + "/gzip"], timeout=1, deadline=1.5, retries=0,
                              allow_private=True)  # fmt: skip
    rec = corpus.records[0]
    assert rec.status == "failed" and "deadline exceeded after 1.5 s" in rec.reason
    assert base + "/trickle" in rec.reason and "deadline=" in rec.reason  # the URL and the fix
    assert corpus.records[1].status == "kept"
    with pytest.raises(ValueError, match="deadline > 0"):
        Corpus.from_urls([base + "/gzip"], deadline=0)


def test_urls_invalid_port_recorded_by_url(http_server: LocalServer) -> None:
    base = http_server.base
    urls = ["http://127.0.0.1:99999/page", "http://127.0.0.1:http/page", base + "/badport", base + "/gzip"]
    corpus = Corpus.from_urls(urls, retries=0, allow_private=True)
    for rec in corpus.records[:3]:
        assert rec.status == "failed" and "invalid URL" in rec.reason, rec
        assert "ExceptionGroup" not in rec.reason and "TaskGroup" not in rec.reason
    assert "'http://127.0.0.1:99999/page'" in corpus.records[0].reason and "65535" in corpus.records[0].reason
    assert "'http://127.0.0.1:http/page'" in corpus.records[1].reason
    assert "redirected to an unusable URL" in corpus.records[2].reason and "99999" in corpus.records[2].reason
    assert corpus.records[3].status == "kept"


def test_urls_from_thread_and_running_loop(http_server: LocalServer) -> None:
    base = http_server.base
    out: dict[str, Corpus] = {}
    t = threading.Thread(target=lambda: out.setdefault("c", Corpus.from_urls([base + "/gzip"], allow_private=True)))
    t.start()
    t.join(30)
    assert len(out["c"]) == 1

    async def inside_loop() -> Corpus:
        return Corpus.from_urls([base + "/target"], allow_private=True)

    assert len(asyncio.run(inside_loop())) == 1


def test_urls_concurrency_limits_respected(http_server: LocalServer) -> None:
    base = http_server.base
    urls = [base + f"/concurrent?n={i}" for i in range(25)]  # > 20: the progress-bar path too
    # the pages are identical
    corpus = Corpus.from_urls(urls, concurrency=3, per_host=2, dedup=False, allow_private=True)
    assert len(corpus) == 25
    assert [r.source for r in corpus.records] == urls  # input order kept
    assert 1 < http_server.handler.in_flight[1] <= 2  # per_host=2 bounds one host below concurrency=3


# ---------------------------------------------------------------------------
# Bad input: each case ends as a per-source record
# ---------------------------------------------------------------------------


BAD_PATHS = ["/loop/a", "/binary", "/badutf8", "/undeclared1252", "/malformed", "/emptybody", "/hugestream"]


@pytest.fixture(scope="module")
def bad(http_server: LocalServer) -> dict[str, SourceRecord]:
    """One fetch of every bad-input route, plus a TLS handshake against the plain-HTTP http_server."""
    base = http_server.base
    tls = base.replace("http://", "https://") + "/article"
    urls = [base + p for p in BAD_PATHS] + [tls, base + "/article"]
    corpus = Corpus.from_urls(urls, retries=0, timeout=5, max_bytes=5000, allow_private=True)
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


def test_bad_invalid_utf8_kept_with_note(bad: dict[str, SourceRecord], http_server: LocalServer) -> None:
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


def test_bad_texts_decoded(http_server: LocalServer) -> None:
    base = http_server.base
    corpus = Corpus.from_urls([base + "/badutf8", base + "/undeclared1252", base + "/malformed"], allow_private=True)
    texts = {d.source[len(base) :]: d.text for d in corpus}
    assert "Broken \ufffd\ufffd bytes" in texts["/badutf8"]
    assert "Caf\u00e9 \u201cquoted\u201d." in texts["/undeclared1252"]
    malformed = texts["/malformed"]
    assert "Unclosed paragraph" in malformed and "crossed nesting" in malformed and "Third paragraph" in malformed
    assert all(d.fetched_at.endswith("+00:00") for d in corpus)  # ISO 8601, UTC


# ---------------------------------------------------------------------------
# URL files
# ---------------------------------------------------------------------------


def test_url_file(http_server: LocalServer, tmp_path: Path) -> None:
    base = http_server.base
    url_file = tmp_path / "urls.txt"
    url_file.write_text(f"# pages to learn\n{base}/article\n\n   {base}/gzip  \n# {base}/missing\n", encoding="utf-8")
    corpus = Corpus.from_url_file(url_file, retries=0, allow_private=True)
    assert [r.source for r in corpus.records] == [base + "/article", base + "/gzip"]
    assert all(r.status == "kept" for r in corpus.records)
    (tmp_path / "none.txt").write_text("# only a comment\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="lists no URL"):
        Corpus.from_url_file(tmp_path / "none.txt")
    with pytest.raises(CorpusError, match="no such URL file"):
        Corpus.from_url_file(tmp_path / "absent.txt")
