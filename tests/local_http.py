"""The request handler behind the `http_server` fixture (tests/conftest.py): a real HTTP server
on 127.0.0.1, so that fetching goes through the same code paths as on the web (no mocks)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class PageHandler(BaseHTTPRequestHandler):
    """Answers GET from `pages` (path -> HTML), counting requests per path in `hits`.

    Subclass and override `route` for other answers, and `fresh_state` for more counters:
    the fixture gives each server a subclass holding its own copy of them."""

    pages: dict[str, str] = {}
    hits: Counter = Counter()  # shared by all handler instances of one server

    @classmethod
    def fresh_state(cls) -> dict[str, Any]:
        """Class attributes one server must not share with another."""
        return {"hits": Counter()}

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8", **headers: str) -> None:
        """One whole response; `Retry_After="1"` sends the header Retry-After: 1."""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?")[0]
        self.hits[path] += 1
        try:
            self.route(path, self.hits[path])
        except (BrokenPipeError, ConnectionResetError):  # a client that gave up (timeouts)
            pass

    def route(self, path: str, n: int) -> None:
        """Answer the `n`th request for `path`."""
        if path in self.pages:
            self.send(200, self.pages[path].encode())
        else:
            self.send(404, b"unknown")


@dataclass
class LocalServer:
    base: str  # http://127.0.0.1:PORT
    handler: type[PageHandler]  # its counters (hits, and those of the subclass)


@contextmanager
def serve(handler: type[PageHandler], host: str = "127.0.0.1", *, scheme: str = "http",
          wrap: Callable[[Any], Any] | None = None) -> Iterator[LocalServer]:
    """`handler` served on `host` (a free port) in a thread for the block; `wrap` may replace the
    listening socket (TLS). Raises OSError when `host` cannot be listened on."""
    httpd = ThreadingHTTPServer((host, 0), handler)
    if wrap is not None:
        httpd.socket = wrap(httpd.socket)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield LocalServer(f"{scheme}://{host}:{httpd.server_address[1]}", handler)
    finally:
        httpd.shutdown()
        httpd.server_close()
