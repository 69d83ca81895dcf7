"""Web pages as documents: an async crawler with retries, redirects, a cache, robots.txt, sitemaps
and a guard against private addresses.

* :mod:`.client`: :func:`crawl` and :func:`open_fetcher`, the fetcher (limits,
  retries, redirects, the deadline per URL);
* :mod:`.guard`: the private-address guard (loopback, link-local, private and
  reserved addresses refused after DNS unless ``allow_private``);
* :mod:`.page`: turning a fetched page into documents;
* :mod:`.response`: what one fetch ends with (a response, or the outcome for
  the record) and the URL check;
* :mod:`.cache`: responses on disk, revalidated on a rerun;
* :mod:`.robots`: each host's robots.txt rules;
* :mod:`.sitemap`: the pages a sitemap (or an index of sitemaps) lists.
"""

from .client import (
    CONCURRENCY, PER_HOST, RETRIES, TIMEOUT, USER_AGENT, Fetcher, FetchOptions, crawl, fetch_options, open_fetcher,
    run_sync,
)
from .response import url_problem

__all__ = [
    "CONCURRENCY", "PER_HOST", "RETRIES", "TIMEOUT", "USER_AGENT", "Fetcher", "FetchOptions", "crawl",
    "fetch_options", "open_fetcher", "run_sync", "url_problem",
]
