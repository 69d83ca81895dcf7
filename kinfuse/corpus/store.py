"""A corpus on disk that grows one source at a time: what :meth:`Corpus.ingest` writes and reads back.

A crawl of tens of thousands of pages must not hold its documents in one list,
and one killed at page 15,000 must not start again. So every finished source
is appended to a folder as soon as it arrives:

* ``documents/00000.jsonl`` ... : one JSON document per line (text, source,
  title, fetched_at), a new shard past ``shard_bytes``;
* ``status.jsonl``: one record per source (a :class:`SourceRecord` plus where
  its documents lie: ``at`` = [[shard, byte offset, length]], and their ``keys``
  for exact deduplication);
* ``store.json``: what the folder is (format and version), written once.

The status line is the commit marker: a document counts only once the line
naming its bytes is whole (it is written after the document). Opening a store
to write truncates a torn last status line and any document bytes no status
line names, so a run killed at any instant (SIGKILL included) leaves a store
that resumes with no duplicate and no half-written document. Lines go to the
OS as each source finishes (a kill loses nothing written); ``fsync`` runs
every ``_SYNC_EVERY`` sources and at the end, and a status line whose document
did not reach the disk before a power cut (missing, or zeros where the shard
kept its size) is dropped on reopening with every later one (those sources
are fetched again).

JSONL rather than an Arrow file as the log: an Arrow IPC file is only whole
once closed, so one killed mid-shard would lose the shard, whereas a line is
whole or torn and a torn one is cut off. :meth:`CorpusStore.to_dataset` writes
the Arrow file (``dataset.arrow``, batch by batch) and memory-maps it.
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import asdict, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator

from ..errors import CorpusError
from ..io import write_json
from .clean import dedup_key
from .documents import DATASET_COLUMNS, Document, SourceRecord

if TYPE_CHECKING:
    import datasets

STORE_FILE = "store.json"
_FORMAT = "kinfuse-corpus-store"
_VERSION = 1
_STATUS = "status.jsonl"
_DOCS = "documents"
_SHARD_BYTES = 256 * 2**20  # a new shard past this many bytes, so no file grows without end
_SYNC_EVERY = 500  # sources between two fsyncs
_RECORD_FIELDS = frozenset(f.name for f in fields(SourceRecord))
_DOC_FIELDS = frozenset(f.name for f in fields(Document))


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder :meth:`Corpus.ingest` wrote."""
    return (Path(path) / STORE_FILE).is_file()


def _shard(folder: Path, index: int) -> Path:
    return folder / _DOCS / f"{index:05d}.jsonl"


def _status_rows(folder: Path) -> Iterator[tuple[dict[str, Any], int]]:
    """(row, byte offset after its line) per whole status line; a torn or unparsable last line
    ends the stream (a run killed while writing it), one in the middle raises naming the line."""
    path = folder / _STATUS
    if not path.is_file():
        return
    size = path.stat().st_size
    end = 0
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            end += len(line)
            try:
                row = json.loads(line) if line.endswith(b"\n") else None
            except ValueError:
                row = None
            if not isinstance(row, dict) or not isinstance(row.get("source"), str):
                if end >= size:  # the torn tail of a killed run: not committed
                    return
                raise CorpusError(
                    f"{path}:{lineno}: damaged status record in the middle of the store; "
                    "a store is written by Corpus.ingest only: start a new store folder"
                )
            yield row, end


def _record(row: dict[str, Any]) -> SourceRecord:
    return SourceRecord(**{k: v for k, v in row.items() if k in _RECORD_FIELDS})


class CorpusStore:
    """A corpus folder written by :meth:`Corpus.ingest`, read one document at a time.

    Iterating gives the documents in the order they were stored (the order
    their fetches finished), never more than one in memory; :meth:`records`
    does the same for the per-source records. ``Corpus.load(path)`` reads the
    whole store into a :class:`Corpus` instead (cleaning needs all texts).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.stats: dict[str, int] = {}  # what the ingest call that returned this store did, by outcome
        meta_file = self.path / STORE_FILE
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CorpusError(f"{self.path} is not a corpus store (no {STORE_FILE}); Corpus.ingest writes one") from None
        except (OSError, ValueError) as exc:
            raise CorpusError(f"{meta_file}: cannot read it ({exc}); ingest into a new store folder") from exc
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise CorpusError(f"{meta_file} does not describe a corpus store; ingest into a new store folder")
        if meta.get("version") != _VERSION:
            raise CorpusError(
                f"{self.path}: store version {meta.get('version')!r}, this kinfuse reads version {_VERSION}; "
                "ingest again into a new folder"
            )

    def records(self) -> Iterator[SourceRecord]:
        """One record per source, in the order they were stored."""
        for row, _ in _status_rows(self.path):
            yield _record(row)

    def sources(self) -> Iterator[tuple[list[Document], SourceRecord]]:
        """Each source's documents (read from its shard) and record, in the order they were stored."""
        handles: dict[int, IO[bytes]] = {}
        try:
            for row, _ in _status_rows(self.path):
                docs = []
                for shard, offset, length in row.get("at") or []:
                    if shard not in handles:
                        try:
                            handles[shard] = _shard(self.path, shard).open("rb")
                        except OSError as exc:
                            raise CorpusError(f"cannot read {_shard(self.path, shard)} of the store: {exc}") from exc
                    f = handles[shard]
                    if f.tell() != offset:  # shards are read in order, so this rarely seeks
                        f.seek(offset)
                    docs.append(self._document(f.read(length), shard, offset, row["source"]))
                yield docs, _record(row)
        finally:
            for f in handles.values():
                f.close()

    def _document(self, raw: bytes, shard: int, offset: int, source: str) -> Document:
        try:
            row = json.loads(raw)
            doc = Document(**{k: v for k, v in row.items() if k in _DOC_FIELDS})
        except (ValueError, TypeError, AttributeError):
            doc = None
        if doc is None or doc.source != source:
            raise CorpusError(
                f"{_shard(self.path, shard)} at byte {offset}: not the document of {source} that status.jsonl "
                "names; the store was changed by hand: ingest again into a new folder"
            )
        return doc

    def __iter__(self) -> Iterator[Document]:
        for docs, _ in self.sources():
            yield from docs

    def counts(self) -> dict[str, int]:
        """Sources by status, and the documents and characters stored (one pass over status.jsonl)."""
        out = {"sources": 0, "kept": 0, "skipped": 0, "failed": 0, "documents": 0, "chars": 0}
        for r in self.records():
            out["sources"] += 1
            out[r.status] = out.get(r.status, 0) + 1
            out["documents"] += r.documents
            out["chars"] += r.chars
        return out

    def __len__(self) -> int:
        return self.counts()["documents"]

    def __repr__(self) -> str:
        c = self.counts()
        return (
            f"CorpusStore({str(self.path)!r}: {c['documents']} documents from {c['sources']} sources "
            f"({c['kept']} kept, {c['skipped']} skipped, {c['failed']} failed), {c['chars']} characters)"
        )

    def to_dataset(self, batch: int = 1000) -> datasets.Dataset:
        """The documents as a ``datasets.Dataset`` (text, source, title, fetched_at), memory-mapped.

        Written to ``dataset.arrow`` in the store ``batch`` documents at a time, so it never holds
        more than one batch; rewritten on each call (the store may have grown since).
        """
        import datasets  # heavy imports, deferred until a dataset is wanted
        import pyarrow as pa

        names = list(DATASET_COLUMNS)
        schema = pa.schema([(n, pa.string()) for n in names])
        target = self.path / "dataset.arrow"
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
                rows: list[Document] = []
                for doc in self:
                    rows.append(doc)
                    if len(rows) >= batch:
                        writer.write_batch(_batch(pa, schema, names, rows))
                        rows = []
                if rows:
                    writer.write_batch(_batch(pa, schema, names, rows))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return datasets.Dataset.from_file(str(target))


def _batch(pa: Any, schema: Any, names: list[str], rows: list[Document]) -> Any:
    return pa.record_batch([pa.array([getattr(d, n) for d in rows], pa.string()) for n in names], schema=schema)


class StoreWriter:
    """Appends sources to a store, after putting it back to its last committed state.

    ``seen`` holds every source already stored (a rerun skips them) and
    ``keys`` the exact-duplicate key of every stored document with its source,
    so that the same text reached under two URLs is stored once. Both grow
    with the number of sources, like the URL list itself; nothing else does.
    """

    def __init__(self, path: str | os.PathLike, *, min_chars: int = 1, dedup: bool = True,
                 shard_bytes: int = _SHARD_BYTES) -> None:
        self.path = Path(path)
        self.min_chars, self.dedup, self.shard_bytes = min_chars, dedup, shard_bytes
        self._lock = None
        try:
            self._open()
        except BaseException as exc:
            self.close()
            if not isinstance(exc, OSError):
                raise
            raise CorpusError(
                f"cannot write the corpus store {self.path}: {exc}; pass a writable folder (new, empty, or a store "
                "an earlier ingest wrote)"
            ) from exc

    def _open(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise CorpusError(f"corpus store {self.path} is a file, not a folder; pass a folder to write the store to")
        if self.path.is_dir() and not is_store(self.path) and any(self.path.iterdir()):
            raise CorpusError(
                f"{self.path} holds other files and is not a corpus store (no {STORE_FILE}); "
                "pass a new or empty folder"
            )
        # store.json first: a run killed right after it leaves a store, never a folder it would refuse.
        self.path.mkdir(parents=True, exist_ok=True)
        if not is_store(self.path):
            write_json(self.path / STORE_FILE, {"format": _FORMAT, "version": _VERSION})
        CorpusStore(self.path)  # checks format and version
        (self.path / _DOCS).mkdir(exist_ok=True)
        self._lock = _lock(self.path)
        ends, committed, recent = self._replay()
        # The rows written since the last fsync: after a power cut a shard can have its size but
        # zeros where their documents were. The first such row and all later ones go.
        lost = _first_unwritten(self.path, recent)
        if lost is not None:
            ends, committed, _ = self._replay(stop=lost)
        status = self.path / _STATUS
        if status.is_file() and status.stat().st_size > committed:
            os.truncate(status, committed)
        shards = sorted(int(p.stem) for p in (self.path / _DOCS).glob("*.jsonl") if p.stem.isdigit())
        for index in shards:  # document bytes no status line names: a source killed mid-write
            if _shard(self.path, index).stat().st_size > ends.get(index, 0):
                os.truncate(_shard(self.path, index), ends.get(index, 0))
        self.shard = max(shards + list(ends), default=0)
        self.docs = _shard(self.path, self.shard).open("ab")
        self.status = status.open("ab")
        self.unsynced = 0

    def _replay(self, stop: int | None = None) -> tuple[dict[int, int], int, deque[tuple[int, list[Any]]]]:
        """Read the committed status rows (the first ``stop`` of them, if given) into ``seen`` and
        ``keys``. Returns the committed bytes per shard, the committed bytes of status.jsonl, and
        (row index, ``at``) of the last ``_SYNC_EVERY`` rows."""
        self.seen: set[str] = set()
        self.keys: dict[str, str] = {}
        ends: dict[int, int] = {}  # committed bytes per shard
        committed = 0  # bytes of status.jsonl that stay
        sizes: dict[int, int] = {}
        recent: deque[tuple[int, list[Any]]] = deque(maxlen=_SYNC_EVERY)
        for index, (row, end) in enumerate(_status_rows(self.path)):
            if index == stop:
                break
            at = row.get("at") or []
            for shard, offset, length in at:
                if shard not in sizes:
                    p = _shard(self.path, shard)
                    sizes[shard] = p.stat().st_size if p.is_file() else 0
            if any(offset + length > sizes[shard] for shard, offset, length in at):
                break  # its document never reached the disk (a power cut): this and later lines go
            for shard, offset, length in at:
                ends[shard] = max(ends.get(shard, 0), offset + length)
            for key in row.get("keys") or []:
                self.keys.setdefault(key, row["source"])
            self.seen.add(row["source"])
            recent.append((index, at))
            committed = end
        return ends, committed, recent

    def add(self, docs: list[Document], record: SourceRecord) -> SourceRecord:
        """Store one source: its documents (short ones and exact duplicates dropped), then its record."""
        try:
            return self._add(docs, record)
        except OSError as exc:  # a full disk: what is committed stays, a rerun resumes from it
            raise CorpusError(
                f"cannot write to the corpus store {self.path}: {exc}; free space (or pass another folder), "
                "then run the same ingest again to resume"
            ) from exc

    def _add(self, docs: list[Document], record: SourceRecord) -> SourceRecord:
        keys: list[str] = []
        kept: list[Document] = []
        reasons: list[str] = []
        for doc in docs:
            key = dedup_key(doc.text)
            if len(doc.text) < self.min_chars:
                reasons.append(f"shorter than {self.min_chars} characters ({len(doc.text)}; min_chars={self.min_chars})")
            elif self.dedup and key in self.keys:
                reasons.append(f"duplicate of {self.keys[key]}")
            else:
                self.keys.setdefault(key, doc.source)
                keys.append(key)
                kept.append(doc)
        if reasons:
            if kept:
                record.reason = "; ".join(filter(None, [record.reason, f"{len(reasons)} removed: " + "; ".join(reasons)]))
            else:
                record.status, record.reason = "skipped", "; ".join(reasons)
        record.documents, record.chars = len(kept), sum(len(d.text) for d in kept)
        at = []
        for doc in kept:
            line = (json.dumps(asdict(doc), ensure_ascii=False) + "\n").encode("utf-8")
            if self.docs.tell() and self.docs.tell() + len(line) > self.shard_bytes:
                self._next_shard()
            at.append([self.shard, self.docs.tell(), len(line)])
            self.docs.write(line)
        self.docs.flush()  # the document before the status line that commits it
        row = {**asdict(record), "at": at, "keys": keys}
        self.status.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        self.status.flush()
        self.seen.add(record.source)
        self.unsynced += 1
        if self.unsynced >= _SYNC_EVERY:
            self.sync()
        return record

    def _next_shard(self) -> None:
        os.fsync(self.docs.fileno())
        self.docs.close()
        self.shard += 1
        self.docs = _shard(self.path, self.shard).open("ab")

    def sync(self) -> None:
        """Documents to the disk first, then the status lines that commit them."""
        os.fsync(self.docs.fileno())
        os.fsync(self.status.fileno())
        self.unsynced = 0

    def close(self) -> None:
        for name in ("docs", "status"):
            f = getattr(self, name, None)
            if f is not None and not f.closed:
                try:
                    try:
                        f.flush()
                        os.fsync(f.fileno())
                    finally:
                        f.close()
                except OSError:  # a full disk: what did not reach it was not committed
                    pass
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None


def _first_unwritten(folder: Path, rows: Iterable[tuple[int, list[Any]]]) -> int | None:
    """The index of the first of ``rows`` (row index, ``at``) whose document bytes are not a
    document line (first byte "{", last byte a newline), or None."""
    handles: dict[int, IO[bytes]] = {}
    try:
        for index, at in rows:
            for shard, offset, length in at:
                if shard not in handles:
                    handles[shard] = _shard(folder, shard).open("rb")
                f = handles[shard]
                f.seek(offset)
                first = f.read(1)
                f.seek(offset + length - 1)
                if first != b"{" or f.read(1) != b"\n":
                    return index
        return None
    finally:
        for f in handles.values():
            f.close()


def _lock(folder: Path) -> IO[bytes] | None:
    """An exclusive lock on the store for this process (released when it ends, however it ends)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, one ingest per store is then the caller's care
        return None
    f = (folder / ".lock").open("ab")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise CorpusError(f"corpus store {folder} is being written by another ingest; wait for it to end") from None
    return f
