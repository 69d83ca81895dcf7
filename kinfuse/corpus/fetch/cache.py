"""The on-disk HTTP cache (``cache_dir``): raw responses kept for revalidation on a rerun.

A rerun sends the stored ETag / Last-Modified back (If-None-Match /
If-Modified-Since) and reuses the stored body on 304 Not Modified, so an
unchanged site costs no bodies the second time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ...io import write_bytes, write_text

if TYPE_CHECKING:
    import httpx

# Response headers worth keeping in the cache; the body is stored decoded, so
# Content-Encoding and Content-Length would no longer describe it.
_CACHED_HEADERS = frozenset({"content-type", "etag", "last-modified", "date", "cache-control", "expires"})


def cacheable_headers(headers: httpx.Headers) -> dict[str, str]:
    """The headers of a response that the cache keeps, with lower-case names."""
    return {k.lower(): v for k, v in headers.items() if k.lower() in _CACHED_HEADERS}


class Cache:
    """Raw responses on disk: <sha256(url)>.body and .json (URL, headers, fetch time).

    The body is written before its metadata and each through a rename, so a
    crash leaves either a whole entry or one that load() ignores.
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder

    def _paths(self, url: str) -> tuple[Path, Path]:
        key = hashlib.sha256(url.encode("utf-8")).hexdigest()
        return self.folder / f"{key}.json", self.folder / f"{key}.body"

    def load(self, url: str) -> tuple[dict[str, str], bytes] | None:
        """The stored headers and body of ``url``, or None when there is no whole entry."""
        meta_path, body_path = self._paths(url)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            body = body_path.read_bytes()
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("url") != url or meta.get("size") != len(body):
            return None  # torn or foreign entry: fetch afresh
        headers = meta.get("headers")
        return (headers, body) if isinstance(headers, dict) else None

    def store(self, url: str, headers: dict[str, str], body: bytes, fetched_at: str) -> None:
        meta_path, body_path = self._paths(url)
        meta = {"url": url, "headers": headers, "size": len(body), "fetched_at": fetched_at}
        try:
            write_bytes(body_path, body)
            write_text(meta_path, json.dumps(meta))
        except OSError:
            pass  # a cache that cannot be written only costs a refetch next time
