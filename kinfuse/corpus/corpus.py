"""The :class:`Corpus`: documents plus one record per source, built by the loaders and cleaned.

The loaders themselves live beside it (:mod:`.files` for local files,
:mod:`.fetch` for web pages and sitemaps); here they are combined into one
object that keeps, for every document, the record of the source it came from,
so that cleaning (:mod:`.clean`) can say per source what it removed and why.
A corpus without any document raises :class:`~kinfuse.errors.CorpusError`
listing every source and the reason it was dropped.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from ..config import FETCH_DEADLINE, MAX_SOURCE_BYTES
from ..errors import CorpusError
from ..io import read_jsonl, write_json, write_jsonl
from .clean import CLEANING_LABELS, normalize_text, plan_cleaning
from .documents import DATASET_COLUMNS, Document, SourceRecord, kept_record
from . import fetch
from .fetch import crawl, fetch_options
from .files import SUPPORTED_SUFFIXES, load_file, scan_paths
from .ingest import ingest_urls, no_url_error, url_file_lines
from .store import CorpusStore, is_store

if TYPE_CHECKING:  # datasets is heavy to import; only to_dataset() needs it
    import datasets


class Corpus:
    """Documents plus one :class:`SourceRecord` per input source.

    Build one with :meth:`from_urls`, :meth:`from_url_file`, :meth:`from_sitemap`, :meth:`from_paths`,
    :meth:`from_texts`, :meth:`from_documents`, :meth:`from_dataset` or :meth:`load` (a crawl too big
    for memory: :meth:`ingest`), and combine them with ``+``. A corpus always holds at least one
    document: otherwise the constructor raises :class:`CorpusError` listing every source and why.

    ``cleaning`` holds the counts of the last :meth:`clean` passes (summed over
    ``+``); it is empty when the corpus was never cleaned. ``owners`` gives,
    per document, the index of the record it came from (-1: none); without
    it, a document belongs to the record of its source.
    """

    def __init__(
        self,
        documents: Iterable[Document],
        records: Iterable[SourceRecord],
        cleaning: Mapping[str, int] | None = None,
        *,
        owners: Iterable[int] | None = None,
    ) -> None:
        self.documents: list[Document] = list(documents)
        self.records: list[SourceRecord] = list(records)
        self.cleaning: dict[str, int] = dict(cleaning or {})
        if not self.documents:
            raise CorpusError(_empty_message(self.records))
        # Which record each document came from (an index into records, -1 for
        # none), so that cleaning can update the right record. Loaders give it
        # exactly (owners); for documents and records given by hand, a document
        # belongs to the record of the same source, or of its "<source>:<line>"
        # prefix (JSONL/JSON rows).
        if owners is None:
            by_source: dict[str, int] = {}
            for i, r in enumerate(self.records):
                by_source.setdefault(r.source, i)
            owners = (
                by_source.get(d.source, by_source.get(d.source.rsplit(":", 1)[0], -1)) for d in self.documents
            )
        self._owner: list[int] = list(owners)

    @classmethod
    def _make(
        cls,
        results: Iterable[tuple[list[Document], SourceRecord]],
        cleaning: Mapping[str, int] | None = None,
    ) -> Corpus:
        """A corpus from (documents, record) pairs, each document owned by its pair's record."""
        docs: list[Document] = []
        records: list[SourceRecord] = []
        owners: list[int] = []
        for doc_list, record in results:
            owners.extend([len(records)] * len(doc_list))
            docs.extend(doc_list)
            records.append(record)
        return cls(docs, records, cleaning, owners=owners)

    # -- constructors ------------------------------------------------------

    @classmethod
    def from_texts(cls, texts: Iterable[str], sources: Iterable[str] | None = None) -> Corpus:
        """One document per non-empty string; ``sources`` default to "text:<index>"."""
        _require_list(texts, "from_texts", "texts")
        if sources is not None:
            _require_list(sources, "from_texts", "sources")
        texts = list(texts)
        names = [f"text:{i}" for i in range(len(texts))] if sources is None else [str(s) for s in sources]
        if len(names) != len(texts):
            raise CorpusError(
                f"from_texts got {len(texts)} texts but {len(names)} sources; give one source per text"
            )
        return cls._make(_text_result(text, source) for text, source in zip(texts, names))

    @classmethod
    def from_documents(cls, documents: Iterable[Document]) -> Corpus:
        """Wrap ready-made documents (their text is normalised; empty ones are skipped)."""
        return cls._make(
            _text_result(d.text, d.source, d.title, d.fetched_at) for d in documents
        )

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        text_column: str = "text",
        *,
        source_column: str = "source",
        title_column: str = "title",
        dedup: bool = False,
    ) -> Corpus:
        """One document per row of a ``datasets.Dataset`` (or any iterable of dict rows).

        ``source_column``, ``title_column`` and a ``fetched_at`` column are used
        when present (so ``Corpus.from_dataset(corpus.to_dataset())`` round-trips);
        sources otherwise default to "dataset:<row>". Rows whose text is missing,
        not a string or empty get a "skipped" record. ``dedup=True`` runs
        :meth:`clean` (off by default: a dataset is usually curated already).
        """
        columns = getattr(dataset, "column_names", None)
        if isinstance(columns, dict):  # a DatasetDict: the caller must pick a split
            raise CorpusError(f"from_dataset needs one split, not a DatasetDict (splits: {sorted(columns)})")
        if isinstance(columns, list) and text_column not in columns:
            raise CorpusError(f"dataset has no column {text_column!r}; its columns are {columns}")
        results = []
        for i, row in enumerate(dataset):
            source = str(row.get(source_column) or f"dataset:{i}")
            text = row.get(text_column)
            results.append(
                _text_result(text, source, str(row.get(title_column) or ""), str(row.get("fetched_at") or ""))
            )
        corpus = cls._make(results)
        return corpus.clean() if dedup else corpus

    @classmethod
    def from_paths(
        cls,
        paths: Iterable[str | Path],
        *,
        dedup: bool = True,
        min_chars: int = 1,
        max_bytes: int = MAX_SOURCE_BYTES,
    ) -> Corpus:
        """Load files and directories (recursively, in sorted order).

        .html/.htm → :func:`extract_text`; .txt/.md → the text; .jsonl → one
        document per line's "text"; .json → a list of objects with "text" (or
        one such object); any of these may be gzipped (.gz). Other suffixes
        get a "skipped" record. A missing path raises :class:`CorpusError`;
        so does a single path given instead of a list.
        Hidden files and directories (".git", ".DS_Store") inside a
        directory are not corpus material and are passed over. A symlink
        inside a directory that points out of it, or nowhere, is not read and
        gets a "skipped" record naming its target (pass the target itself to
        include it); an unreadable subdirectory gets a "failed" one, and a
        directory without a supported file a "skipped" one.

        ``max_bytes`` caps each file as :meth:`from_urls` caps a response
        body (same default), after decompression for .gz files, which are
        inflated as a stream and never past the cap: a larger file is refused
        whole with a "skipped" record saying so (not cut, which would end it
        mid-sentence or mid-JSON); pass a larger ``max_bytes`` to read it.

        ``dedup`` (on by default) runs :meth:`clean`: exact and near-duplicate
        documents and boilerplate lines of web sources are removed;
        ``min_chars`` drops shorter documents either way.
        """
        if max_bytes < 1:
            raise ValueError(f"from_paths needs max_bytes >= 1, got {max_bytes}")
        _require_list(paths, "from_paths", "paths")
        corpus = cls._make(
            load_file(f, max_bytes) if isinstance(f, Path) else ([], f) for f in scan_paths(paths)
        )
        return corpus.clean(dedup=dedup, boilerplate=dedup, min_chars=min_chars)

    @classmethod
    def from_urls(
        cls,
        urls: Iterable[str],
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
    ) -> Corpus:
        """Fetch web pages concurrently and keep their main text.

        At most ``concurrency`` requests run at once, at most ``per_host`` per
        host. Redirects are followed (up to 10; a loop fails naming the
        chain). Connection errors, 429 and 5xx are retried ``retries`` times
        with exponential backoff and jitter (a Retry-After is honoured,
        capped). Bodies over ``max_bytes`` are skipped; so are content types
        other than HTML, XHTML and plain text, binary bodies served as text,
        and pages whose text is shorter than ``min_chars``. Errors (HTTP
        status, timeout, DNS, TLS, refused connection, invalid URL) give a
        "failed" record naming them.

        ``respect_robots``: read each host's /robots.txt once and skip the
        URLs it disallows for ``user_agent`` ("disallowed by robots.txt").
        ``cache_dir``: keep every response body and its headers there; a
        rerun revalidates with If-None-Match / If-Modified-Since and reuses
        the stored body on 304 (the record's ``from_cache`` says so).
        ``dedup`` (on by default) runs :meth:`clean` on the result.
        ``deadline``: the most seconds one URL's fetch may take, redirects
        and retries included (``timeout`` bounds each wait for the server, so
        a body trickled slowly could otherwise take ``timeout`` per read);
        past it the record says "deadline exceeded after N s".

        ``allow_private``: by default a host that is or resolves to a loopback,
        link-local (cloud metadata), private, multicast or reserved address is
        refused with a record naming it, on every redirect hop, robots.txt and
        sitemap entry too (SECURITY.md). ``True`` fetches them all; a list of
        addresses or networks (``["10.1.2.3", "192.168.0.0/16"]``) only those.

        Runs its own event loop; it works from any thread, and from inside a
        running loop (e.g. a notebook) by fetching on a helper thread.
        """
        _require_list(urls, "from_urls", "URLs")
        options = fetch_options(
            timeout=timeout, concurrency=concurrency, per_host=per_host, retries=retries,
            user_agent=user_agent, max_bytes=max_bytes, respect_robots=respect_robots, cache_dir=cache_dir,
            deadline=deadline, allow_private=allow_private,
        )  # fmt: skip
        results = crawl(options, urls=[str(u).strip() for u in urls])
        return cls._make(results).clean(dedup=dedup, boilerplate=dedup, min_chars=min_chars)

    @classmethod
    def from_url_file(cls, path: str | Path, **options: Any) -> Corpus:
        """:meth:`from_urls` on a text file with one URL per line.

        Blank lines and lines starting with "#" are ignored. ``options`` are
        the keyword options of :meth:`from_urls`.
        """
        urls = list(url_file_lines(path))  # read as Corpus.ingest reads one, with the same errors
        if not urls:
            raise no_url_error(path)
        return cls.from_urls(urls, **options)

    @classmethod
    def from_sitemap(cls, url: str, *, limit: int | None = None, **options: Any) -> Corpus:
        """Fetch every page listed in a sitemap.xml (gzipped or not), following sitemap indexes.

        Nested indexes are followed up to 5 levels; a sitemap listed twice is
        read once. Each sitemap gets its own record ("kept" with the number
        of URLs it listed, or "failed"/"skipped" with the reason), then each
        page one as in :meth:`from_urls`. A page listed in several sitemaps is
        fetched once. ``limit`` caps the number of pages (in sitemap order).
        ``options`` are the keyword options of :meth:`from_urls`.
        """
        min_chars = options.pop("min_chars", 1)
        dedup = options.pop("dedup", True)
        if limit is not None and limit < 0:
            raise ValueError("from_sitemap needs limit >= 0")
        opts = fetch_options(**options)
        results = crawl(opts, sitemap=str(url).strip(), limit=limit)
        return cls._make(results).clean(dedup=dedup, boilerplate=dedup, min_chars=min_chars)

    # Corpus.ingest(urls, store, ...): many pages streamed into a store on disk, resumable (ingest.py)
    ingest = staticmethod(ingest_urls)

    @classmethod
    def load(cls, path: str | Path) -> Corpus:
        """Read a corpus written by :meth:`save`, or a store :meth:`ingest` wrote (all in memory)."""
        folder = Path(path)
        if is_store(folder):  # one source at a time from its shards into the lists
            return cls._make(CorpusStore(folder).sources())
        docs_file, records_file = folder / "documents.jsonl", folder / "records.jsonl"
        if not docs_file.is_file() or not records_file.is_file():
            raise CorpusError(f"{folder} is not a saved corpus (want documents.jsonl and records.jsonl)")
        try:
            records = [SourceRecord(**row) for row in read_jsonl(records_file, error=CorpusError)]
            docs: list[Document] = []
            owners: list[int] = []
            for row in read_jsonl(docs_file, error=CorpusError):
                owner = row.pop("record", -1)
                docs.append(Document(**row))
                owners.append(owner if isinstance(owner, int) and 0 <= owner < len(records) else -1)
        except TypeError as exc:  # fields this version does not know
            raise CorpusError(f"{folder} is not a corpus saved by this version of kinfuse: {exc}") from exc
        cleaning_file = folder / "cleaning.json"
        try:
            cleaning = json.loads(cleaning_file.read_text(encoding="utf-8")) if cleaning_file.is_file() else None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorpusError(f"{cleaning_file}: not JSON ({exc}); save the corpus again") from exc
        return cls(docs, records, cleaning, owners=owners)

    # -- cleaning ------------------------------------------------------------

    def clean(
        self,
        *,
        dedup: bool = True,
        near_dup_threshold: float | None = 0.9,
        boilerplate: bool = True,
        min_chars: int = 0,
    ) -> Corpus:
        """A cleaned copy: duplicates, near-duplicates, boilerplate lines and short texts removed.

        In order: exact duplicates (same text up to case and spacing) and then
        near-duplicates (Jaccard similarity of word 5-gram sets >=
        ``near_dup_threshold``) go, the first occurrence staying (``dedup``);
        lines repeated on at least half, and at least 3, of the pages of one
        site with 3 or more pages are deleted from them (``boilerplate``;
        http(s) sources only), after which pages that became identical go too;
        documents shorter than ``min_chars`` go last. Duplicates are removed
        before counting boilerplate so that copies of one page do not make its
        whole text look like boilerplate.

        Every removed document's record becomes "skipped" with the reason
        ("duplicate of <source>", "near-duplicate of <source>", "shorter than
        N characters"), or, when its source still has other documents, says
        how many were removed. The counts go to :attr:`cleaning` and
        :meth:`report`. Raises :class:`CorpusError` if nothing is left.
        """
        if near_dup_threshold is not None and not 0 < near_dup_threshold <= 1:
            raise ValueError("near_dup_threshold must be in (0, 1], or None to skip near-duplicates")
        texts, removed, stats = plan_cleaning(
            [d.text for d in self.documents],
            [d.source for d in self.documents],
            dedup=dedup,
            near_dup_threshold=near_dup_threshold,
            boilerplate=boilerplate,
            min_chars=min_chars,
        )

        docs: list[Document] = []
        owners: list[int] = []
        records = [replace(r) for r in self.records]
        extra: list[SourceRecord] = []  # removed documents that had no record of their own
        lost: dict[int, list[str]] = defaultdict(list)  # record -> reasons of its removed documents
        for i, doc in enumerate(self.documents):
            owner = self._owner[i]
            if i in removed:
                if owner >= 0:
                    lost[owner].append(removed[i])
                else:
                    extra.append(SourceRecord(doc.source, "skipped", removed[i]))
                continue
            docs.append(doc if texts[i] == doc.text else replace(doc, text=texts[i]))
            owners.append(owner)
        # Documents and characters of every record that owns documents, after cleaning.
        counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for doc, owner in zip(docs, owners):
            if owner >= 0:
                counts[owner][0] += 1
                counts[owner][1] += len(doc.text)
        for idx in set(counts) | set(lost):
            r = records[idx]
            r.documents, r.chars = counts[idx] if idx in counts else (0, 0)
            reasons = lost.get(idx)
            if not reasons:
                continue
            if r.documents == 0 and len(reasons) == 1:
                r.status, r.reason = "skipped", reasons[0]
            else:
                shown = "; ".join(reasons[:3]) + ("; ..." if len(reasons) > 3 else "")
                note = f"{len(reasons)} document(s) removed by cleaning: {shown}"
                if r.documents == 0:
                    r.status, r.reason = "skipped", note
                else:
                    r.reason = f"{r.reason}; {note}" if r.reason else note
        merged = Counter(self.cleaning)
        merged.update(stats)
        return Corpus(docs, records + extra, dict(merged), owners=owners)

    # -- container protocol ------------------------------------------------

    def __len__(self) -> int:
        return len(self.documents)

    def __iter__(self) -> Iterator[Document]:
        return iter(self.documents)

    def __getitem__(self, index: int) -> Document:
        return self.documents[index]

    def __add__(self, other: Corpus) -> Corpus:
        if not isinstance(other, Corpus):
            return NotImplemented
        cleaning = Counter(self.cleaning)
        cleaning.update(other.cleaning)
        shift = len(self.records)
        owners = self._owner + [o + shift if o >= 0 else -1 for o in other._owner]
        return Corpus(
            self.documents + other.documents, self.records + other.records, dict(cleaning), owners=owners
        )

    def __repr__(self) -> str:
        chars = sum(len(d.text) for d in self.documents)
        return f"Corpus({len(self.documents)} documents from {len(self.records)} sources, {chars} characters)"

    # -- outputs -----------------------------------------------------------

    def to_dataset(self) -> datasets.Dataset:
        """A ``datasets.Dataset`` with columns ``text``, ``source``, ``title`` and ``fetched_at``."""
        import datasets  # heavy import, deferred until a dataset is wanted

        return datasets.Dataset.from_dict({n: [getattr(d, n) for d in self.documents] for n in DATASET_COLUMNS})

    def save(self, path: str | Path) -> Path:
        """Write the corpus to a folder: documents.jsonl, records.jsonl (and cleaning.json).

        :meth:`load` reads it back with the same documents, records and counts.
        """
        folder = Path(path)  # kinfuse.io makes the folder
        rows = ({**asdict(d), "record": owner} for d, owner in zip(self.documents, self._owner))
        write_jsonl(folder / "documents.jsonl", rows)
        write_jsonl(folder / "records.jsonl", (asdict(r) for r in self.records))
        cleaning_file = folder / "cleaning.json"
        if self.cleaning:
            write_json(cleaning_file, self.cleaning)
        elif cleaning_file.exists():  # a stale file from an earlier save would mislead load()
            cleaning_file.unlink()
        return folder

    def report(self) -> str:
        """One line per source (status, documents, characters, reason), then totals and cleaning counts."""
        lines = []
        width = max((len(r.status) for r in self.records), default=7)
        for r in self.records:
            line = f"{r.status:<{width}}  {r.source}"
            if r.status == "kept" and r.documents:
                line += f"  ({r.documents} doc{'s' if r.documents != 1 else ''}, {r.chars} chars)"
            if r.from_cache:
                line += "  [from cache]"
            if r.reason:
                line += f"  {r.reason}"
            lines.append(line)
        counts = {s: sum(1 for r in self.records if r.status == s) for s in ("kept", "skipped", "failed")}
        chars = sum(len(d.text) for d in self.documents)
        lines.append(
            f"total: {len(self.records)} sources ({counts['kept']} kept, {counts['skipped']} skipped, "
            f"{counts['failed']} failed), {len(self.documents)} documents, {chars} characters, "
            f"~{chars // 4} tokens (chars/4)"
        )
        if self.cleaning:
            parts = [f"{self.cleaning.get(k, 0)} {label}" for k, label in CLEANING_LABELS.items()]
            lines.append("cleaning: " + ", ".join(parts))
        return "\n".join(lines)


def _text_result(text: Any, source: str, title: str = "", fetched_at: str = "") -> tuple[list[Document], SourceRecord]:
    if not isinstance(text, str):
        return [], SourceRecord(source, "skipped", f"not a string ({type(text).__name__})")
    text = normalize_text(text)
    if not text:
        return [], SourceRecord(source, "skipped", "no text")
    docs = [Document(text, source, title, fetched_at)]
    return docs, kept_record(source, docs)


def _require_list(value: Any, method: str, what: str) -> None:
    """A bare string would be iterated character by character: refuse it, saying what to pass."""
    if isinstance(value, (str, bytes, os.PathLike)):
        text = os.fsdecode(value)
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise CorpusError(f"{method} needs a list of {what}, got the single string {shown!r}: pass [{shown!r}]")


def _empty_message(records: list[SourceRecord]) -> str:
    if not records:
        return (
            "empty corpus: no source was given (the list was empty); give at least one URL, path or text"
            f" (files: {SUPPORTED_SUFFIXES})"
        )
    lines = [f"empty corpus: no document could be loaded from {len(records)} source(s):"]
    for r in records:
        why = r.reason or ("no text" if r.status == "kept" else r.status)
        lines.append(f"  - {r.source}: {r.status} ({why})")
    return "\n".join(lines)

