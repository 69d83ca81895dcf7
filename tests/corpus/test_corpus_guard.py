"""Tests for kinfuse.corpus.fetch.guard: URL ingestion refuses loopback, link-local, private and
reserved addresses unless `allow_private` opts in, after DNS, on every redirect hop, for robots.txt
and for sitemap entries.

Every server a test can start is itself private, so the refused cases use the default and the
allowed ones opt in; a redirect or sitemap that leaves the first server is tested by allowing only
the first server's address (127.0.0.1) and sending the hop to a second server on 127.0.0.2.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from urllib.parse import parse_qs, urlsplit

import pytest
from corpus_site import CorpusHandler, page
from local_http import LocalServer, PageHandler, serve

from kinfuse.config import CorpusConfig, InfuseConfig
from kinfuse.corpus import Corpus
from kinfuse.corpus.fetch.guard import address_policy, non_public_kind, refusal
from kinfuse.errors import CorpusError

OTHER_PAGE = page("The second server's page, reached on 127.0.0.2.")


class GuardHandler(CorpusHandler):
    """The corpus test site plus a redirect to any URL and a sitemap naming another host."""

    def route(self, path: str, n: int) -> None:
        query = parse_qs(urlsplit(self.path).query)
        if path == "/bounce":  # /bounce?to=URL: 302 to URL
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/mixed.xml":  # /mixed.xml?other=BASE: a page here and one on BASE
            base = f"http://{self.headers['Host']}"
            locs = f"<url><loc>{base}/sm/here</loc></url><url><loc>{query['other'][0]}/page</loc></url>"
            body = f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</urlset>'
            self.send(200, body.encode(), ctype="application/xml")
        else:
            super().route(path, n)


@pytest.fixture(scope="module")
def http_handler() -> type[GuardHandler]:
    return GuardHandler


@pytest.fixture(scope="module")
def other_server():
    """A second real server, on 127.0.0.2 (Linux routes all of 127.0.0.0/8 to loopback)."""
    handler = type("OtherHandler", (PageHandler,), {**PageHandler.fresh_state(), "pages": {"/page": OTHER_PAGE}})
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(serve(handler, "127.0.0.2"))
        except OSError as exc:
            pytest.skip(f"cannot listen on 127.0.0.2 here: {exc}")
        yield server


def only_record(urls: list[str], **options) -> str:
    """The error of a fetch that loads nothing (every source dropped)."""
    with pytest.raises(CorpusError) as err:
        Corpus.from_urls(urls, retries=0, timeout=5, **options)
    return str(err.value)


def assert_refusal(reason: str, address: str) -> None:
    assert "refused" in reason and address in reason, reason
    assert "allow_private=True" in reason and "allow_private = true" in reason  # the opt-in, both ways


# ---------------------------------------------------------------------------
# the default refuses; allow_private opts in
# ---------------------------------------------------------------------------


def test_loopback_url_refused_by_default(http_server: LocalServer) -> None:
    before = http_server.handler.hits["/article"]
    message = only_record([http_server.base + "/article"])
    assert_refusal(message, "127.0.0.1")
    assert "loopback" in message and "skipped" in message
    assert http_server.handler.hits["/article"] == before  # no request reached the server


def test_name_resolving_to_loopback_refused_after_dns(http_server: LocalServer) -> None:
    port = urlsplit(http_server.base).port
    message = only_record([f"http://localhost:{port}/article"])
    assert "localhost resolves to" in message and "loopback" in message
    assert "refused" in message and "allow_private" in message


def test_allow_private_fetches_local_servers(http_server: LocalServer) -> None:
    port = urlsplit(http_server.base).port
    corpus = Corpus.from_urls([http_server.base + "/article", f"http://localhost:{port}/gzip"], allow_private=True)
    assert [r.status for r in corpus.records] == ["kept", "kept"]


def test_allow_private_list_allows_only_those_addresses(http_server: LocalServer) -> None:
    corpus = Corpus.from_urls([http_server.base + "/article"], allow_private=["127.0.0.1"])
    assert corpus.records[0].status == "kept"
    message = only_record([http_server.base + "/article"], allow_private=["10.0.0.0/8"])
    assert_refusal(message, "127.0.0.1")
    with pytest.raises(ValueError, match="'not-an-address'"):
        Corpus.from_urls([http_server.base + "/article"], allow_private=["not-an-address"])


# ---------------------------------------------------------------------------
# every hop: redirects, robots.txt, sitemap entries, proxies
# ---------------------------------------------------------------------------


def test_redirect_to_private_address_refused(http_server: LocalServer, other_server: LocalServer) -> None:
    target = other_server.base + "/page"
    before = other_server.handler.hits["/page"]
    start = f"{http_server.base}/bounce?to={target}"
    message = only_record([start], allow_private=["127.0.0.1"])  # the first hop's host alone
    assert_refusal(message, "127.0.0.2")
    assert f"reached by redirects: {start} -> {target}" in message
    assert other_server.handler.hits["/page"] == before  # refused before connecting
    # Allowing the target's network lets the same redirect through.
    corpus = Corpus.from_urls([start], allow_private=["127.0.0.0/8"])
    assert corpus.records[0].status == "kept" and other_server.handler.hits["/page"] == before + 1


def test_robots_txt_not_fetched_from_refused_host(http_server: LocalServer) -> None:
    before = http_server.handler.hits["/robots.txt"]
    message = only_record([http_server.base + "/private/a"], respect_robots=True)
    assert_refusal(message, "127.0.0.1")
    assert http_server.handler.hits["/robots.txt"] == before


def test_sitemap_entries_checked(http_server: LocalServer, other_server: LocalServer) -> None:
    sitemap = f"{http_server.base}/mixed.xml?other={other_server.base}"
    before = other_server.handler.hits["/page"]
    corpus = Corpus.from_sitemap(sitemap, retries=0, allow_private=["127.0.0.1"])
    by_source = {r.source: r for r in corpus.records}
    assert by_source[sitemap].status == "kept"
    assert by_source[http_server.base + "/sm/here"].status == "kept"
    refused = by_source[other_server.base + "/page"]
    assert refused.status == "skipped"
    assert_refusal(refused.reason, "127.0.0.2")
    assert other_server.handler.hits["/page"] == before
    # The sitemap itself is refused by default.
    with pytest.raises(CorpusError, match="refused: 127.0.0.1"):
        Corpus.from_sitemap(sitemap, retries=0)


def test_refused_through_a_proxy_too(http_server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # With a proxy in the environment the proxy connects, so the host is checked before the request:
    # the record is the refusal, not the (dead) proxy's connection error.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{s.getsockname()[1]}"
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", dead_proxy)
    monkeypatch.setenv("http_proxy", dead_proxy)
    port = urlsplit(http_server.base).port
    message = only_record([f"http://localhost:{port}/article"])
    assert "localhost resolves to" in message and "refused" in message


# ---------------------------------------------------------------------------
# which addresses, and the config field
# ---------------------------------------------------------------------------

REFUSED = {
    "127.0.0.1": "loopback", "127.5.6.7": "loopback", "::1": "loopback",
    "169.254.169.254": "link-local", "fe80::1": "link-local",
    "10.1.2.3": "private", "172.16.0.1": "private", "172.31.255.255": "private", "192.168.1.1": "private",
    "fc00::1": "private", "fd12:3456::1": "private",
    "0.0.0.0": "unspecified", "::": "unspecified",
    "224.0.0.1": "multicast", "ff02::1": "multicast",
    "240.0.0.1": "reserved", "100.64.0.1": "non-public",
    "::ffff:127.0.0.1": "loopback (as 127.0.0.1)", "2002:a9fe:a9fe::1": "link-local (as 169.254.169.254)",
}  # fmt: skip
PUBLIC = ["93.184.216.34", "8.8.8.8", "172.32.0.1", "2606:4700:4700::1111"]


@pytest.mark.parametrize("address", sorted(REFUSED))
def test_non_public_addresses_refused(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert non_public_kind(ip) == REFUSED[address]
    reason = refusal(ip, address, address_policy(False))
    assert reason is not None and address in reason
    assert refusal(ip, address, address_policy(True)) is None


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_allowed(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert non_public_kind(ip) is None and refusal(ip, "example.org", address_policy(False)) is None


def test_config_field_off_by_default_and_plumbed(http_server: LocalServer, tmp_path) -> None:
    from kinfuse.pipeline import build_corpus

    assert CorpusConfig().allow_private is False
    assert CorpusConfig(urls=["x"], allow_private="yes").problems()  # type: ignore[arg-type]
    urls = [http_server.base + "/article"]
    with pytest.raises(CorpusError, match="refused: 127.0.0.1"):
        build_corpus(InfuseConfig(out_dir=str(tmp_path), corpus=CorpusConfig(urls=urls)))
    corpus = build_corpus(InfuseConfig(out_dir=str(tmp_path), corpus=CorpusConfig(urls=urls, allow_private=True)))
    assert corpus.records[0].status == "kept"


def test_https_through_the_guard_verifies_the_host_name(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The guard connects to the checked address, not the name; TLS must still verify the
    # certificate against the name (here "localhost", trusted through SSL_CERT_FILE).
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    handler = type("TLSHandler", (PageHandler,), {**PageHandler.fresh_state(), "pages": {"/page": OTHER_PAGE}})
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with serve(handler, wrap=lambda sock: context.wrap_socket(sock, server_side=True)) as server:
        port = server.base.rsplit(":", 1)[1]
        allowed = ["127.0.0.1", "::1"]  # a list keeps the guarded transport in place
        corpus = Corpus.from_urls([f"https://localhost:{port}/page"], allow_private=allowed, retries=0, timeout=5)
        assert corpus.records[0].status == "kept"
        # The same server by address: the certificate does not name 127.0.0.1, so TLS refuses it.
        message = only_record([f"https://127.0.0.1:{port}/page"], allow_private=allowed)
        assert "TLS/SSL error" in message
