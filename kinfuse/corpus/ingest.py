"""Ingestion that scales: a crawl of any number of URLs streamed into a :class:`CorpusStore` on disk.

:meth:`Corpus.from_urls` holds every document in memory and starts over when
killed; that is right for a few hundred pages, not for fifty thousand. Here
URLs are read lazily (a list, any iterable, or a file with one per line),
at most ``window`` fetches are pending at a time (the fetcher's own limits,
``concurrency`` and ``per_host``, bound the requests among them), and every
finished source goes to the store at once (:mod:`.store`). What grows with
the number of URLs is the set of URLs already seen and one exact-duplicate key
per document; each document is dropped from memory once written.

A rerun of the same call resumes: URLs the store already holds (kept,
skipped or failed) are not requested again, and those in flight when the run
died are fetched afresh.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..config import FETCH_DEADLINE, MAX_SOURCE_BYTES
from ..errors import CorpusError
from . import fetch
from .documents import SourceRecord
from .fetch import FetchOptions, fetch_options, open_fetcher, run_sync, url_problem
from .store import CorpusStore, StoreWriter

_SHOWN_PROBLEMS = 5  # bad lines of a URL file listed in its error


def url_file_lines(path: str | os.PathLike) -> Iterator[str]:
    """The URLs of a file, one per line (blank lines and "#" comments skipped), read lazily."""
    for lineno, line in _url_lines(path):
        if isinstance(line, UnicodeDecodeError):
            raise CorpusError(f"cannot read URL file {path}: line {lineno}: {_not_utf8(line)}")
        yield line


def check_url_file(path: str | os.PathLike) -> int:
    """The number of URLs in a URL file, after checking every line (one pass, nothing kept).

    A line that is not one http(s) URL raises :class:`CorpusError` naming the
    file, the line number and the problem, before anything is fetched: a typo
    at line 15,000 should not surface hours into a crawl.
    """
    problems: list[str] = []
    count = 0
    for lineno, line in _url_lines(path):
        if isinstance(line, UnicodeDecodeError):
            problem: str | None = _not_utf8(line)
        else:
            problem = "several words on one line" if len(line.split()) > 1 else url_problem(line)
            count += 1
        if problem:
            problems.append(f"line {lineno}: {problem}")
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:_SHOWN_PROBLEMS])
        more = f"\n  ... and {len(problems) - _SHOWN_PROBLEMS} more" if len(problems) > _SHOWN_PROBLEMS else ""
        raise CorpusError(
            f"URL file {path}: {len(problems)} bad line(s):\n{shown}{more}\n"
            "give one http(s) URL per line ('#' starts a comment); fix or remove these lines"
        )
    if not count:
        raise no_url_error(path)
    return count


def no_url_error(path: str | os.PathLike) -> CorpusError:
    """The error for a URL file with no URL in it."""
    return CorpusError(f"empty corpus: {path} lists no URL (one per line; '#' starts a comment)")


def _url_lines(path: str | os.PathLike) -> Iterator[tuple[int, str | UnicodeDecodeError]]:
    """(line number, the line stripped) per line of a URL file that is not blank or a "#" comment,
    read lazily; a line that is not UTF-8 comes as its decoding error."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").strip()
                except UnicodeDecodeError as exc:
                    yield lineno, exc
                    continue
                if line and not line.startswith("#"):
                    yield lineno, line
    except FileNotFoundError:
        raise CorpusError(f"no such URL file: {path}") from None
    except OSError as exc:
        raise CorpusError(f"cannot read URL file {path}: {exc}") from exc


def _not_utf8(exc: UnicodeDecodeError) -> str:
    return f"not UTF-8 text ({exc.reason} at byte {exc.start})"


def ingest_urls(
    urls: Iterable[str] | str | os.PathLike,
    store: str | os.PathLike,
    *,
    timeout: float = fetch.TIMEOUT,
    concurrency: int = fetch.CONCURRENCY,
    per_host: int = fetch.PER_HOST,
    retries: int = fetch.RETRIES,
    user_agent: str = fetch.USER_AGENT,
    max_bytes: int = MAX_SOURCE_BYTES,
    min_chars: int = 1,
    respect_robots: bool = False,
    cache_dir: str | Path | None = None,
    dedup: bool = True,
    deadline: float = FETCH_DEADLINE,
    allow_private: bool | Iterable[str] = False,
    window: int | None = None,
) -> CorpusStore:
    """Fetch many pages into a corpus folder on disk, each as it arrives; rerun to resume.

    ``urls``: a list or any iterable of URLs (read lazily), or the path of a
    file with one URL per line (every line is checked before the first fetch;
    a bad one raises naming the line). ``store``: the folder to write, new,
    empty, or one an earlier ingest wrote, which it then continues: sources
    already stored are not requested again, so a crawl killed at any point
    (even by SIGKILL) resumes where it stopped, with no document twice or cut.

    Each source gets one record in the store (kept, skipped or failed and
    why); its document, if any, is stored with it. Documents shorter than
    ``min_chars`` are skipped, and with ``dedup`` (on by default) so are exact
    duplicates (same text up to case and spacing) of a stored document.
    Near-duplicates and boilerplate lines need every text at once: for them
    run ``Corpus.load(store).clean()``.

    At most ``window`` (default ``4 * concurrency``) fetches are pending at a
    time, at most ``concurrency`` requesting (``per_host`` per host), so memory
    stays flat however many URLs come. The other options are those of
    :meth:`Corpus.from_urls`. Returns the :class:`CorpusStore`, whose
    ``stats`` count what this call did; ``Corpus.load(store)`` reads it whole.
    """
    if window is not None and window < 1:
        raise ValueError(f"ingest needs window >= 1, got {window}")
    options = fetch_options(
        timeout=timeout, concurrency=concurrency, per_host=per_host, retries=retries, user_agent=user_agent,
        max_bytes=max_bytes, respect_robots=respect_robots, cache_dir=cache_dir, deadline=deadline,
        allow_private=allow_private,
    )  # fmt: skip
    total: int | None
    if isinstance(urls, (str, bytes, os.PathLike)):
        text = os.fsdecode(urls)
        if "://" in text:
            raise CorpusError(f"ingest needs a list of URLs or a URL file, got the single URL {text!r}: pass [{text!r}]")
        total, lines = check_url_file(text), url_file_lines(text)
    else:
        total, lines = (len(urls) if hasattr(urls, "__len__") else None), iter(urls)
    writer = StoreWriter(store, min_chars=min_chars, dedup=dedup)
    stats: Counter[str] = Counter()
    try:
        run_sync(_crawl(options, lines, writer, window or 4 * concurrency, total, stats))
    finally:
        writer.close()
    result = CorpusStore(writer.path)
    result.stats = dict(stats)
    return result


async def _crawl(
    opt: FetchOptions, urls: Iterator[Any], writer: StoreWriter, window: int, total: int | None, stats: Counter[str]
) -> None:
    """Feed the fetcher at most ``window`` URLs at a time; store each source as its fetch ends."""
    from tqdm.auto import tqdm

    # No bar for a crawl of 1 to 20 URLs; otherwise (an unknown length included) tqdm's own rule
    # (disable=None: shown on a terminal).
    few = total is not None and 0 < total <= 20
    bar = tqdm(total=total, desc="ingesting", unit="url", disable=True if few else None)
    pending: set[asyncio.Task[Any]] = set()
    fetching: set[str] = set()  # URLs taken but not stored yet (at most window of them)

    def store(docs: list[Any], record: SourceRecord) -> None:
        stats[writer.add(docs, record).status] += 1
        fetching.discard(record.source)
        bar.update(1)

    async def wait(until_all: bool) -> None:
        nonlocal pending
        done, pending = await asyncio.wait(
            pending, return_when=asyncio.ALL_COMPLETED if until_all else asyncio.FIRST_COMPLETED
        )
        for task in done:
            store(*task.result())

    async with open_fetcher(opt) as fetcher:
        try:
            for url in urls:
                url = str(url).strip()
                if url in writer.seen or url in fetching:  # stored by an earlier run, or given twice
                    stats["already stored" if url in writer.seen else "duplicate"] += 1
                    bar.update(1)
                    continue
                fetching.add(url)
                problem = url_problem(url)
                if problem:
                    store([], SourceRecord(url, "failed", problem))
                    continue
                if len(pending) >= window:
                    await wait(until_all=False)
                pending.add(asyncio.create_task(fetcher.page(url)))
            if pending:
                await wait(until_all=True)
        finally:
            for task in pending:  # an error while storing: stop the fetches still running
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)  # and let them end before the client closes
            bar.close()
