"""Local files as documents: listing folders safely, reading files within a size cap.

:func:`scan_paths` lists the files of the given paths (folders recursively,
in sorted order) and gives a :class:`SourceRecord` for everything it will not
read: symlinks leading out of a folder, dangling symlinks, unreadable
folders, folders without a supported file. :func:`load_file` reads one file
of any supported kind (HTML, text, Markdown, JSON, JSONL, each maybe gzipped)
into documents and its record, refusing files over ``max_bytes`` after
decompression. Bad content never raises: it becomes the file's "skipped" or
"failed" record. Bytes become text in :mod:`.decoding`.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Any, Iterable

from ..config import MAX_SOURCE_BYTES
from ..errors import CorpusError
from .clean import normalize_text
from .decoding import binary_reason, decode, mostly_undecodable
from .documents import Document, SourceRecord, kept_record
from .extract import extract

__all__ = ["SUPPORTED_SUFFIXES", "load_file", "scan_paths"]


_HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
_TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
_SUPPORTED = sorted(_HTML_SUFFIXES | _TEXT_SUFFIXES | {".json", ".jsonl"})
SUPPORTED_SUFFIXES = ", ".join(_SUPPORTED) + " (each also gzipped, .gz)"


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return Path(name[:-3]).suffix if name.endswith(".gz") else path.suffix.lower()


def _link_record(link: Path, folder: Path, real_folder: Path) -> SourceRecord | None:
    """The record of a symlink inside ``folder`` that is not read, or None to read it."""
    target = os.readlink(link)
    real = link.resolve()
    if not real.exists():
        return SourceRecord(str(link), "skipped", f"dangling symlink to {target} (nothing there): fix or remove the link")
    if not real.is_relative_to(real_folder):
        return SourceRecord(
            str(link), "skipped",
            f"symlink to {real}, outside the folder {folder}: not followed, since a link could pull in any file "
            f"on this machine; to include it, pass its real path {real} itself",
        )  # fmt: skip
    if real.is_dir():
        return SourceRecord(str(link), "skipped", f"symlink to the folder {real}, inside {folder}: read there, not twice")
    return None


def _scan_folder(folder: Path) -> list[Path | SourceRecord]:
    real_folder = folder.resolve()
    found: list[Path | SourceRecord] = []
    hidden = 0

    def unreadable(exc: OSError) -> None:
        where = exc.filename or folder
        found.append(SourceRecord(
            str(where), "failed",
            f"cannot read folder: {exc.strerror or exc}; fix its permissions (e.g. chmod a+rx) or leave it out",
        ))  # fmt: skip

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable):
        here = Path(dirpath)
        hidden += sum(1 for n in filenames if n.startswith("."))
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for d in list(dirnames):  # symlinks to folders: os.walk lists them but never enters
            if (here / d).is_symlink():
                dirnames.remove(d)
                record = _link_record(here / d, folder, real_folder)
                if record:
                    found.append(record)
        for name in filenames:
            if name.startswith("."):
                continue
            path = here / name
            if path.is_symlink():
                record = _link_record(path, folder, real_folder)
                found.append(record if record else path)
            elif path.is_file():
                found.append(path)
            else:
                found.append(SourceRecord(str(path), "skipped", "not a regular file (a pipe, socket or device)"))
    if not any(isinstance(f, Path) and _suffix(f) in _SUPPORTED for f in found):
        files = sum(1 for f in found if isinstance(f, Path))
        if files or hidden:
            what = f"has no supported file ({files} other file(s), {hidden} hidden file(s) passed over)"
        else:
            what = "is empty"
        found.append(SourceRecord(
            str(folder), "skipped",
            f"the folder {folder} {what}: add files ending in {SUPPORTED_SUFFIXES}, or pass the files themselves",
        ))  # fmt: skip
    return found


def scan_paths(paths: Iterable[str | Path]) -> list[Path | SourceRecord]:
    """The files of ``paths`` to read, and a record for each thing in them that will not be read.

    Files are taken as given; folders are read recursively, in sorted order.
    Hidden files and folders (".git", ".DS_Store") inside a folder are not
    corpus material and are passed over. A symlink inside a folder is read
    only when it points to a file inside that folder: one leading out of it
    (``x.txt -> /etc/passwd``) could pull any file of the machine into the
    corpus, so it gets a "skipped" record naming its target (pass the target
    itself to include it); so do dangling symlinks, unreadable folders
    ("failed") and folders without a supported file. A missing path raises
    :class:`CorpusError` (all of them named).
    """
    paths = [Path(p) for p in paths]
    missing = []
    for p in paths:
        if p.is_symlink() and not p.exists():
            missing.append(f"{p} is a symlink to {os.readlink(p)}, which does not exist: fix the link or pass the file")
        elif not p.exists():
            missing.append(f"no such file or directory: {p}")
    if missing:
        raise CorpusError("; ".join(missing))
    found: list[Path | SourceRecord] = []
    for p in paths:
        if p.is_dir():
            found.extend(sorted(_scan_folder(p), key=lambda f: f if isinstance(f, Path) else Path(f.source)))
        else:
            found.append(p)
    return found


def _json_doc(obj: Any, source: str) -> Document | None:
    """A document from one JSON value: an object with "text", or a bare string."""
    if isinstance(obj, str):
        text, title, src, fetched = obj, "", source, ""
    elif isinstance(obj, dict) and isinstance(obj.get("text"), str):
        text = obj["text"]
        title = str(obj.get("title") or "")
        src = str(obj.get("source") or obj.get("url") or source)
        fetched = str(obj.get("fetched_at") or "")
    else:
        return None
    text = normalize_text(text)
    return Document(text, src, title, fetched) if text else None


class _TooLarge(Exception):
    pass


def _read(path: Path, compressed: bool, max_bytes: int) -> bytes:
    """The file's bytes, decompressed; raises _TooLarge past ``max_bytes`` without reading further."""
    if compressed:
        # Streamed: a small .gz can inflate to gigabytes, so never more than
        # max_bytes + 1 bytes are inflated.
        with gzip.open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise _TooLarge(f"decompresses to more than max_bytes={max_bytes} bytes")
        return raw
    size = path.stat().st_size
    if size > max_bytes:
        raise _TooLarge(f"{size} bytes > max_bytes={max_bytes}")
    with path.open("rb") as fh:
        raw = fh.read(max_bytes + 1)  # a file still growing is caught too
    if len(raw) > max_bytes:
        raise _TooLarge(f"more than max_bytes={max_bytes} bytes")
    return raw


def load_file(path: Path, max_bytes: int = MAX_SOURCE_BYTES) -> tuple[list[Document], SourceRecord]:
    """Documents of one file and its record; never raises for bad content.

    A file larger than ``max_bytes`` (after decompression, for .gz) is
    refused whole with a "skipped" record rather than cut: a cut would end
    the text mid-sentence, or a JSON file mid-value.
    """
    source = str(path)
    compressed = path.name.lower().endswith(".gz")
    suffix = _suffix(path)
    if suffix not in _SUPPORTED:
        return [], SourceRecord(
            source, "skipped", f"unsupported file type {suffix or '(no suffix)'!r} (supported: {SUPPORTED_SUFFIXES})"
        )
    try:
        raw = _read(path, compressed, max_bytes)
    except _TooLarge as exc:
        reason = f"too large: {exc}; split the file, or pass a larger max_bytes to Corpus.from_paths"
        return [], SourceRecord(source, "skipped", reason)
    except (OSError, EOFError, zlib.error) as exc:
        return [], SourceRecord(source, "failed", f"cannot read: {exc}")

    if suffix in _HTML_SUFFIXES | _TEXT_SUFFIXES:
        binary = binary_reason(raw)
        if binary:
            return [], SourceRecord(source, "skipped", f"binary content, not text ({binary})")
        decoded, note = decode(raw, html=suffix in _HTML_SUFFIXES)
        if mostly_undecodable(decoded):
            return [], SourceRecord(source, "skipped", "binary content, not text (mostly bytes that are not text)")
        if suffix in _HTML_SUFFIXES:
            text, title = extract(decoded)
        else:
            text, title = normalize_text(decoded), ""
        if not text:
            return [], SourceRecord(source, "skipped", "no text")
        docs = [Document(text, source, title)]
        return docs, kept_record(source, docs, note)
    content = raw.decode("utf-8", errors="replace").lstrip("\ufeff")

    docs = []
    problems: list[str] = []
    if suffix == ".jsonl":
        for lineno, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                doc = _json_doc(json.loads(line), f"{source}:{lineno}")
            except json.JSONDecodeError as exc:
                problems.append(f"line {lineno}: invalid JSON ({exc.msg})")
                continue
            if doc is None:
                problems.append(f"line {lineno}: no \"text\"")
            else:
                docs.append(doc)
    else:
        try:
            data = json.loads(content)
        except json.JSONDecodeError as exc:
            return [], SourceRecord(source, "failed", f"invalid JSON: {exc}")
        items = data if isinstance(data, list) else [data]
        for i, item in enumerate(items):
            doc = _json_doc(item, f"{source}:{i}")
            if doc is None:
                problems.append(f"item {i}: no \"text\"")
            else:
                docs.append(doc)
    reason = ""
    if problems:
        shown = "; ".join(problems[:3]) + (f"; ... ({len(problems)} in all)" if len(problems) > 3 else "")
        reason = f"{len(problems)} entr{'y' if len(problems) == 1 else 'ies'} without text: {shown}"
    if not docs:
        return [], SourceRecord(source, "skipped", reason or "no text")
    return docs, kept_record(source, docs, reason)
