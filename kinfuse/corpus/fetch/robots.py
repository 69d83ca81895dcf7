"""robots.txt (``respect_robots``): each host's rules read once, however many pages wait on them."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

from ..decoding import decode
from .response import Get, Outcome

_ROBOTS_MAX_BYTES = 512_000  # RFC 9309 asks parsers to read at least 500 KiB

class Robots:
    """The robots.txt rules of every host a crawl reaches, fetched with ``get`` (which must not
    itself check robots.txt)."""

    def __init__(self, user_agent: str, get: Get) -> None:
        self.user_agent = user_agent
        self._get = get
        self._rules: dict[str, asyncio.Task[tuple[RobotFileParser | None, str]]] = {}

    async def block(self, url: str) -> str | None:
        """The skip reason when robots.txt disallows ``url`` for our user agent, else None."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        task = self._rules.get(origin)
        if task is None:  # one fetch per host, however many pages wait on it
            task = self._rules[origin] = asyncio.ensure_future(self._load(origin))
        rules, note = await task
        if rules is None or rules.can_fetch(self.user_agent, url):
            return None
        return "disallowed by robots.txt" + note

    async def _load(self, origin: str) -> tuple[RobotFileParser | None, str]:
        """The parsed rules of one host (None: everything allowed), and a note on how.

        As urllib.robotparser.RobotFileParser.read(): 401/403 disallow
        everything, other 4xx allow everything; a 5xx (after retries)
        disallows everything too, as RFC 9309 asks. An unreachable host is
        let through: the page's own fetch will then record the real error.
        """
        robots_url = origin + "/robots.txt"
        try:
            got = await self._get(robots_url, max_bytes=_ROBOTS_MAX_BYTES, accept=None)
        except Outcome as outcome:
            code = outcome.http_status
            if code in (401, 403) or code >= 500:
                rules = RobotFileParser(robots_url)
                rules.disallow_all = True
                return rules, f" (robots.txt answered HTTP {code})"
            return None, ""
        rules = RobotFileParser(robots_url)
        rules.parse(decode(got.body, got.charset, html=False)[0].splitlines())
        return rules, ""
