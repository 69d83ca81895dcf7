"""What one fetch ends with: a usable :class:`Response`, or an :class:`Outcome` for the record.

Shared by the client and by the robots.txt and sitemap readers built on it,
together with :func:`url_problem`, the check every URL passes before it is
requested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import urlsplit

_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)


class Outcome(Exception):
    """Ends one fetch early: a "failed" or "skipped" record with its reason."""

    def __init__(self, status: str, reason: str, http_status: int = 0) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.http_status = http_status


@dataclass
class Response:
    """A 2xx response (or a cached body revalidated by a 304)."""

    url: str  # the URL that answered, after redirects
    headers: dict[str, str]  # lower-case names
    body: bytes  # already decoded from any Content-Encoding
    fetched_at: str
    from_cache: bool = False

    @property
    def media(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def charset(self) -> str | None:
        m = _HEADER_CHARSET.search(self.headers.get("content-type", ""))
        return m.group(1) if m else None


# How the robots.txt and sitemap readers fetch through the crawl's client:
# get(url, max_bytes=, accept=) -> Response, or raises Outcome.
Get = Callable[..., Awaitable[Response]]


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be fetched (not http(s), no host, a bad port, unparsable), or None."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"invalid URL {url!r}: {exc}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"invalid URL {url!r}: only http:// and https:// are supported"
    if not parts.hostname:
        return f"invalid URL {url!r}: no host"
    try:
        port = parts.port  # raises for a port that is not a number or not in 0-65535
    except ValueError as exc:
        return f"invalid URL {url!r}: {exc} (a port is a number from 1 to 65535)"
    if port == 0:
        return f"invalid URL {url!r}: port 0 (a port is a number from 1 to 65535)"
    return None
