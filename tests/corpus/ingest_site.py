"""A site of generated articles for the ingestion tests (test_corpus_ingest.py) and benchmark
(benchmarks/bench_ingest.py): any number of distinct pages of a few KB of article-like HTML.

Routes: /a/N an article (N >= 0), /r/N a 301 redirect to /a/N, anything else 404. The handler
counts requests per path (`hits`), the requests being answered at once (`peak`), and waits
`delay` seconds before each answer so that concurrency shows.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

from local_http import PageHandler

_WORDS = (
    "river harbour council bridge archive engine village winter market ledger signal forest railway "
    "mill tower island canal museum school library festival copper granite weaver orchard pottery "
    "survey charter lantern quarry ferry beacon garrison meadow furnace observatory vineyard"
).split()
_VERBS = "built recorded repaired moved opened closed measured described restored named".split()


def article(n: int, paragraphs: int = 8) -> str:
    """Page n: a title, chrome (nav, footer) and `paragraphs` paragraphs of text unique to n."""
    rng = random.Random(n)
    title = f"The {rng.choice(_WORDS)} of site {n}"
    paras = []
    for p in range(paragraphs):
        sentences = []
        for s in range(5):
            words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 12)))
            year = 1800 + rng.randrange(220)
            sentences.append(f"In {year} the {words} was {rng.choice(_VERBS)} by crew {n}-{p}-{s}.")
        paras.append("<p>" + " ".join(sentences) + "</p>")
    return (
        f"<!doctype html><html><head><title>{title}</title></head><body>"
        '<nav class="main-nav"><a href="/">Home</a> <a href="/news">News</a> <a href="/about">About</a></nav>'
        f"<main><article><h1>{title}</h1>{''.join(paras)}</article></main>"
        '<footer class="site-footer"><p>Copyright 2024 Example Gazette. All rights reserved.</p></footer>'
        "</body></html>"
    )


class IngestHandler(PageHandler):
    delay: float = 0.0
    lock = threading.Lock()
    inflight = 0
    peak = 0

    @classmethod
    def fresh_state(cls) -> dict[str, Any]:
        return {"hits": Counter(), "lock": threading.Lock(), "inflight": 0, "peak": 0}

    def route(self, path: str, n: int) -> None:
        cls = type(self)
        with cls.lock:
            cls.inflight += 1
            cls.peak = max(cls.peak, cls.inflight)
        try:
            if self.delay:
                time.sleep(self.delay)
        finally:
            # Out of flight before the response is written: once the client has read it, it
            # may send its next request before this thread would run again (a loaded machine
            # counted 5 in flight at concurrency 4 when this came after the send).
            with cls.lock:
                cls.inflight -= 1
        kind, _, num = path.strip("/").partition("/")
        if kind == "a" and num.isdigit():
            self.send(200, article(int(num)).encode())
        elif kind == "r" and num.isdigit():
            self.send(301, b"moved", Location=f"/a/{num}")
        else:
            self.send(404, b"no such page")
