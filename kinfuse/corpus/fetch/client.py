"""The async fetcher: concurrency limits, retries with backoff, redirects, responses to documents.

:func:`crawl` fetches the given pages (or those a sitemap lists) with one
``httpx.AsyncClient`` and shared limits, and returns each source's documents
and :class:`SourceRecord`, in input order; :func:`open_fetcher` gives the same
:class:`Fetcher` to a caller that feeds it URLs as it goes (corpus/ingest.py). Every
failure (HTTP status, timeout, DNS, TLS, refused connection, redirect loop,
binary body, wrong content type, size, deadline, a refused private address)
ends as that source's record, never as an exception that would lose the other
sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.utils
import functools
import random
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Coroutine, Iterable, NamedTuple, TypeVar
from urllib.parse import urljoin, urlsplit

from ...config import FETCH_DEADLINE, MAX_SOURCE_BYTES
from ..documents import Document, SourceRecord
from .cache import Cache, cacheable_headers
from .guard import AddressPolicy, AddressRefused, address_policy, check_host, guarded_transport, proxied
from .page import documents_from_response
from .response import Outcome, Response, url_problem
from .robots import Robots
from .sitemap import read_sitemap

if TYPE_CHECKING:
    import httpx

_KEPT_TYPES = frozenset({"text/html", "application/xhtml+xml", "text/plain"})
_MAX_REDIRECTS = 10
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_BACKOFF_BASE = 0.5  # seconds before the first retry; doubles each time, plus jitter
_RETRY_AFTER_CAP = 30.0  # never wait longer than this for one Retry-After

T = TypeVar("T")


@dataclass
class FetchOptions:
    """The checked keyword options of :meth:`Corpus.from_urls` (all but min_chars and dedup)."""

    timeout: float
    concurrency: int
    per_host: int
    retries: int
    user_agent: str
    max_bytes: int
    respect_robots: bool
    cache_dir: Path | None
    deadline: float
    policy: AddressPolicy


# Defaults of Corpus.from_urls' options, stated once for it and for from_sitemap/from_url_file.
TIMEOUT = 20.0  # seconds to wait for the server at each step (connect, each read)
CONCURRENCY = 8
PER_HOST = 4
RETRIES = 2
USER_AGENT = "kinfuse/0.1 (+https://github.com/kinfuse)"


def fetch_options(
    *,
    timeout: float = TIMEOUT,
    concurrency: int = CONCURRENCY,
    per_host: int = PER_HOST,
    retries: int = RETRIES,
    user_agent: str = USER_AGENT,
    max_bytes: int = MAX_SOURCE_BYTES,
    respect_robots: bool = False,
    cache_dir: str | Path | None = None,
    deadline: float = FETCH_DEADLINE,
    allow_private: bool | Iterable[str] = False,
) -> FetchOptions:
    """Checked fetch options (the keyword options of Corpus.from_urls but min_chars and dedup)."""
    if concurrency < 1 or per_host < 1 or retries < 0 or timeout <= 0 or max_bytes < 1 or not deadline > 0:
        raise ValueError(
            "from_urls needs concurrency >= 1, per_host >= 1, retries >= 0, timeout > 0, max_bytes >= 1, "
            "deadline > 0"
        )
    cache = Path(cache_dir) if cache_dir is not None else None
    policy = address_policy(allow_private)
    return FetchOptions(
        timeout, concurrency, per_host, retries, user_agent, max_bytes, respect_robots, cache, float(deadline), policy
    )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A loop already runs in this thread (a notebook, an async app):
    # asyncio.run would refuse, so the fetch gets a loop on its own thread.
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="kinfuse-fetch")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), _RETRY_AFTER_CAP)


def _backoff(attempt: int) -> float:
    # Full jitter keeps many clients that failed together from retrying together.
    return _BACKOFF_BASE * (2**attempt) * (0.5 + random.random())


def _root_cause(exc: BaseException) -> str | None:
    """"tls" or "dns" when an httpx transport error comes from ssl or the resolver."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 10:
        if isinstance(cur, (ssl.SSLError, ssl.CertificateError)):
            return "tls"
        if isinstance(cur, socket.gaierror):
            return "dns"
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return "tls" if "[SSL" in str(exc) else None


def _http_reason(status: int, phrase: str) -> str:
    return f"HTTP {status} {phrase}".strip()


class _Retryable(NamedTuple):
    """A failed exchange worth retrying: its reason, HTTP status (0: none) and the server's Retry-After."""

    failure: str
    status: int
    wait: float | None


class AddressRefusedOutcome(Outcome):
    """The guard refused a hop's address: a "skipped" record."""

    def __init__(self, reason: str) -> None:
        super().__init__("skipped", reason)


class _Deadline:
    """The time one URL's fetch may take (``FetchOptions.deadline``), counted from its first request.

    Time spent queued for a concurrency slot before that does not count, so a
    long list of URLs does not use up the deadline of those fetched last.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started: float | None = None

    def left(self) -> float:
        now = time.monotonic()
        if self.started is None:
            self.started = now
        return self.started + self.seconds - now

    def exceeded(self, doing: str) -> Outcome:
        return Outcome(
            "failed",
            f"deadline exceeded after {self.seconds:g} s ({doing}); the whole fetch of one URL, redirects and "
            f"retries included, may take at most deadline={self.seconds:g} s: raise deadline= for slow servers",
        )


class Fetcher:
    """One crawl's shared state: client, concurrency limits, robots.txt rules and cache."""

    def __init__(self, client: httpx.AsyncClient, opt: FetchOptions, *, check_hosts: bool = False) -> None:
        self.client = client
        self.opt = opt
        # Through a proxy the guarded transport cannot see the target's address,
        # so each hop's host is resolved and checked before its request.
        self.check_hosts = check_hosts
        self.total = asyncio.Semaphore(opt.concurrency)
        self.hosts: dict[str, asyncio.Semaphore] = {}
        self.robots = Robots(opt.user_agent, functools.partial(self.get, robots=False))
        self.cache = Cache(opt.cache_dir) if opt.cache_dir is not None else None

    # -- one URL ---------------------------------------------------------------

    async def get(
        self, url: str, *, max_bytes: int, accept: frozenset[str] | None, robots: bool = True
    ) -> Response:
        """GET a URL, following redirects by hand; raises Outcome when there is no usable body.

        Redirects are followed here rather than by httpx so that a loop can be
        reported as one, robots.txt and the address guard are checked for
        every hop, and each hop's response is cached under its own URL. One
        deadline covers all hops and retries.
        """
        chain = [url]
        current = url
        deadline = _Deadline(self.opt.deadline)
        while True:
            if robots and self.opt.respect_robots:
                blocked = await self.robots.block(current)
                if blocked:
                    raise Outcome("skipped", blocked)
            try:
                if self.check_hosts:
                    await self._check_host(current)
                got = await self._request(current, max_bytes, accept, deadline)
            except AddressRefusedOutcome as refused:
                if len(chain) > 1:  # say which page led there
                    refused.reason += "; reached by redirects: " + " -> ".join(chain)
                raise
            if isinstance(got, Response):
                return got
            target = urljoin(current, got).split("#", 1)[0]
            problem = url_problem(target)
            if problem:
                raise Outcome("failed", f"redirected to an unusable URL: {problem}")
            if target in chain:
                raise Outcome("failed", "redirect loop: " + " -> ".join(chain + [target]))
            if len(chain) > _MAX_REDIRECTS:
                raise Outcome("failed", f"too many redirects (more than {_MAX_REDIRECTS}), last to {target}")
            chain.append(target)
            current = target

    async def _check_host(self, url: str) -> None:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        try:
            await check_host(parts.hostname or "", port, self.opt.policy, self.opt.timeout)
        except AddressRefused as exc:
            raise AddressRefusedOutcome(str(exc)) from None
        except (OSError, TimeoutError, asyncio.TimeoutError):
            pass  # the request itself reports a name that does not resolve

    async def _request(
        self, url: str, max_bytes: int, accept: frozenset[str] | None, deadline: _Deadline
    ) -> Response | str:
        """One request (with retries): a response, or the Location of a redirect."""
        import httpx

        cached = self.cache.load(url) if self.cache is not None else None
        conditional: dict[str, str] = {}
        if cached is not None:
            if "etag" in cached[0]:
                conditional["If-None-Match"] = cached[0]["etag"]
            if "last-modified" in cached[0]:
                conditional["If-Modified-Since"] = cached[0]["last-modified"]
        host = (urlsplit(url).hostname or "").lower()
        host_sem = self.hosts.setdefault(host, asyncio.Semaphore(self.opt.per_host))
        attempt = 0
        while True:
            # The host slot is taken first so that requests queued for a busy
            # host do not hold global slots other hosts could use.
            async with host_sem, self.total:
                left = deadline.left()
                if left <= 0:
                    raise deadline.exceeded(f"before requesting {url}")
                try:
                    exchange = self._exchange(url, conditional, cached, max_bytes, accept)
                    got = await asyncio.wait_for(exchange, left)
                    if not isinstance(got, _Retryable):
                        return got
                    failure, status, wait = got
                except asyncio.TimeoutError:
                    if deadline.left() > 0:  # not the deadline: some other timeout
                        raise
                    raise deadline.exceeded(f"fetching {url}") from None
                except AddressRefused as exc:
                    raise AddressRefusedOutcome(str(exc)) from None
                except httpx.TimeoutException as exc:
                    # A server too slow once is usually too slow again: no retry.
                    reason = f"timeout after {self.opt.timeout:g}s ({type(exc).__name__})"
                    raise Outcome("failed", reason) from None
                except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
                    raise Outcome("failed", f"invalid URL {url!r}: {exc}") from None
                except httpx.TransportError as exc:
                    cause = _root_cause(exc)
                    if cause == "tls":  # a certificate or protocol mismatch does not heal on retry
                        raise Outcome("failed", f"TLS/SSL error: {exc}") from None
                    if cause == "dns":
                        failure = f"DNS lookup failed for {host}: {exc}"
                    else:  # refused connections, resets: maybe transient
                        failure = f"{type(exc).__name__}: {exc or 'connection failed'}"
                    status, wait = 0, None
            if attempt >= self.opt.retries:
                tries = f" (after {attempt + 1} attempts)" if attempt else ""
                raise Outcome("failed", failure + tries, status)
            pause = wait if wait is not None else _backoff(attempt)
            if pause >= deadline.left():
                note = f" (after {attempt + 1} attempts; no time for another within deadline={deadline.seconds:g} s)"
                raise Outcome("failed", failure + note, status)
            await asyncio.sleep(pause)
            attempt += 1

    async def _exchange(
        self,
        url: str,
        conditional: dict[str, str],
        cached: tuple[dict[str, str], bytes] | None,
        max_bytes: int,
        accept: frozenset[str] | None,
    ) -> Response | str | _Retryable:
        """One GET: a response, the Location of a redirect, or a failure worth retrying."""
        async with self.client.stream("GET", url, headers=conditional) as resp:
            code = resp.status_code
            if code == 304 and cached is not None:
                # Not modified: the stored body is current. The 304's
                # validators replace the stored ones.
                headers = {**cached[0], **cacheable_headers(resp.headers)}
                got = Response(url, headers, cached[1], _now(), from_cache=True)
                if self.cache is not None:
                    self.cache.store(url, headers, cached[1], got.fetched_at)
                return got
            if code in _REDIRECT_CODES and resp.headers.get("location"):
                return resp.headers["location"].strip()
            if code == 429 or code >= 500:
                wait = _retry_after(resp.headers.get("retry-after"))
                return _Retryable(_http_reason(code, resp.reason_phrase), code, wait)
            if code >= 300:  # 4xx, and 3xx that cannot be followed (or a stray 304)
                raise Outcome("failed", _http_reason(code, resp.reason_phrase), code)
            body = await _read_body(resp, max_bytes, accept)
            got = Response(url, cacheable_headers(resp.headers), body, _now())
            if self.cache is not None:
                self.cache.store(url, got.headers, body, got.fetched_at)
            return got

    # -- pages -------------------------------------------------------------------

    async def page(self, url: str) -> tuple[list[Document], SourceRecord]:
        """One URL's documents and record; never raises (a bug or an odd server must not lose the others)."""
        try:
            got = await self.get(url, max_bytes=self.opt.max_bytes, accept=_KEPT_TYPES)
            return documents_from_response(url, got)
        except Outcome as outcome:
            return [], SourceRecord(url, outcome.status, outcome.reason)
        except Exception as exc:
            return [], SourceRecord(url, "failed", f"{_describe(exc)} (fetching {url})")

    async def pages(self, urls: list[str]) -> list[tuple[list[Document], SourceRecord]]:
        """Every URL's documents and record, in input order."""
        results: list[tuple[list[Document], SourceRecord] | None] = [None] * len(urls)
        seen: dict[str, int] = {}
        todo: list[int] = []
        for i, url in enumerate(urls):
            problem = url_problem(url)
            if problem:
                results[i] = ([], SourceRecord(url, "failed", problem))
            elif url in seen:
                results[i] = ([], SourceRecord(url, "skipped", f"duplicate of source #{seen[url]}"))
            else:
                seen[url] = i
                todo.append(i)

        from tqdm.auto import tqdm

        bar = tqdm(total=len(urls), desc="fetching", unit="url", disable=None if len(urls) > 20 else True)
        bar.update(len(urls) - len(todo))

        async def one(i: int) -> None:
            results[i] = await self.page(urls[i])
            bar.update(1)

        await asyncio.gather(*(one(i) for i in todo))
        bar.close()
        return [r for r in results if r is not None]


def crawl(
    opt: FetchOptions, *, urls: list[str] | None = None, sitemap: str | None = None, limit: int | None = None
) -> list[tuple[list[Document], SourceRecord]]:
    """Fetch pages (given, or listed by a sitemap, at most ``limit``): each source's documents and record.

    Runs its own event loop; it works from any thread, and from inside a
    running loop (e.g. a notebook) by fetching on a helper thread.
    """
    return run_sync(_crawl(opt, urls=urls, sitemap=sitemap, limit=limit))


async def _crawl(
    opt: FetchOptions, *, urls: list[str] | None = None, sitemap: str | None = None, limit: int | None = None
) -> list[tuple[list[Document], SourceRecord]]:
    """Fetch pages (given, or listed by a sitemap) with one client and shared limits."""
    async with open_fetcher(opt) as fetcher:
        results: list[tuple[list[Document], SourceRecord]] = []
        if sitemap is not None:
            records, listed = await read_sitemap(fetcher.get, sitemap, 0, set())
            results.extend(([], r) for r in records)
            # A page listed by several sitemaps is one source, not a duplicate.
            urls = list(dict.fromkeys(listed))
            if limit is not None:
                urls = urls[:limit]
        results.extend(await fetcher.pages(urls or []))
    return results


@contextlib.asynccontextmanager
async def open_fetcher(opt: FetchOptions) -> AsyncIterator[Fetcher]:
    """A :class:`Fetcher` with its own client for the block: every fetch of one crawl shares its limits."""
    import httpx  # deferred: only URL loading needs it

    limits = httpx.Limits(max_connections=opt.concurrency, max_keepalive_connections=opt.concurrency)
    # The guard goes into the transport (each connection to a checked address)
    # unless a proxy from the environment does the connecting: a transport given
    # to httpx replaces its proxies, so then each hop is checked before its request.
    through_proxy = opt.policy.guarded and proxied()
    transport = guarded_transport(opt.policy, limits) if opt.policy.guarded and not through_proxy else None
    async with httpx.AsyncClient(
        follow_redirects=False,  # Fetcher.get follows them itself
        timeout=httpx.Timeout(opt.timeout),
        headers={"User-Agent": opt.user_agent},
        limits=limits,
        transport=transport,
    ) as client:
        yield Fetcher(client, opt, check_hosts=through_proxy)


def _describe(exc: BaseException) -> str:
    """An unexpected exception as "Type: message", looking inside exception groups (anyio's task
    groups raise them) for the errors that caused them."""
    subs = getattr(exc, "exceptions", None)  # an ExceptionGroup (or the backport's, before Python 3.11)
    if isinstance(subs, tuple) and subs and all(isinstance(sub, BaseException) for sub in subs):
        return "; ".join(_describe(sub) for sub in subs)
    return f"{type(exc).__name__}: {exc}"


async def _read_body(resp: httpx.Response, max_bytes: int, accept: frozenset[str] | None) -> bytes:
    """Check the content type (when ``accept`` is given) and size, then read the (decompressed) body."""
    media = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if accept is not None and media and media not in accept:
        raise Outcome("skipped", f"unsupported content type {media}")
    length = resp.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise Outcome("skipped", f"too large: {int(length)} bytes > max_bytes={max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:  # also catches compressed bodies that inflate, and no Content-Length
            raise Outcome("skipped", f"too large: more than max_bytes={max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
