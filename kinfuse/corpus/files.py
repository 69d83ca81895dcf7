"""Local files as documents, and turning bytes into text (charset sniffing, binary detection).

A file or an HTTP body is only bytes: :func:`decode` picks the charset the way
browsers do and says when bytes were invalid, :func:`binary_reason` refuses
bodies that are not text at all (an image served as HTML), and
:func:`load_file` reads one file of any supported kind (HTML, text, Markdown,
JSON, JSONL, each maybe gzipped) into documents and its record. Bad content
never raises: it becomes the file's "skipped" or "failed" record.
"""

from __future__ import annotations

import codecs
import gzip
import json
import re
from pathlib import Path
from typing import Any, Iterable

from ..errors import CorpusError
from .clean import normalize_text
from .documents import Document, SourceRecord, kept_record
from .extract import extract_text, extract_title

# ---------------------------------------------------------------------------
# Decoding bytes, and telling text from binary
# ---------------------------------------------------------------------------

_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)
# Bytes that never occur in text: C0 controls other than tab, LF, VT, FF, CR, ESC.
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 11, 12, 13, 27)) + b"\x7f"
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def binary_reason(raw: bytes) -> str | None:
    """Why a body that claims to be text is not (NUL bytes, control bytes), or None."""
    if raw.startswith(_UTF16_BOMS):  # UTF-16 text is full of NULs, legitimately
        return None
    sample = raw[:65536]
    if b"\x00" in sample:
        return "NUL bytes"
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    if sample and controls > 0.05 * len(sample):
        return f"{controls / len(sample):.0%} control bytes"
    return None


def _codec_ok(name: str | None) -> bool:
    if not name:
        return False
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def decode(raw: bytes, declared: str | None = None, html: bool = True) -> tuple[str, str]:
    """Text of a body and a note on decoding problems ("" when there were none).

    The charset comes from a byte-order mark, else the declared one (the
    Content-Type header), else a ``<meta charset>``, else UTF-8; a body that is
    not valid UTF-8 and declares nothing is decoded as windows-1252, the
    fallback browsers use for legacy Western pages. Invalid byte sequences in
    the chosen charset become U+FFFD, and the note says how many there were.
    """
    if raw.startswith(codecs.BOM_UTF8):
        name: str | None = "utf-8"
        raw = raw[3:]
    elif raw.startswith(_UTF16_BOMS):
        name = "utf-16"
    else:
        name = declared if _codec_ok(declared) else None
        if name is None and html:
            m = _META_CHARSET.search(raw[:4096])
            meta = m.group(1).decode("ascii", "replace") if m else None
            # A <meta charset=utf-16> in a page that reached us as bytes is a
            # mislabelled 8-bit page: browsers read it as UTF-8 too.
            if meta and meta.lower().startswith("utf-16"):
                meta = "utf-8"
            name = meta if _codec_ok(meta) else None
    if name is None:
        try:
            return raw.decode("utf-8"), ""
        except UnicodeDecodeError:
            text = raw.decode("windows-1252", errors="replace")
            return text, "not valid UTF-8 and no charset declared: decoded as windows-1252"
    try:
        return raw.decode(name), ""
    except UnicodeDecodeError:
        text = raw.decode(name, errors="replace")
        label = codecs.lookup(name).name.upper()
        return text, f"invalid {label}: {text.count(chr(0xFFFD))} bad byte sequence(s) replaced with U+FFFD"


def mostly_undecodable(text: str) -> bool:
    """True when over a tenth of a decoded body is U+FFFD: bytes in no charset we know."""
    sample = text[:65536]
    return bool(sample) and sample.count("\ufffd") > 0.1 * len(sample)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

_HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
_TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})


def list_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files of ``paths``: files as given, directories recursively in sorted order.

    Hidden files and directories (".git", ".DS_Store") inside a directory are
    not corpus material and are passed over. A missing path raises
    :class:`CorpusError` (all of them named).
    """
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CorpusError("; ".join(f"no such file or directory: {m}" for m in missing))
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(
                f
                for f in sorted(p.rglob("*"))
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
        else:
            files.append(p)
    return files


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


def load_file(path: Path) -> tuple[list[Document], SourceRecord]:
    """Documents of one file and its record; never raises for bad content."""
    source = str(path)
    name = path.name.lower()
    compressed = name.endswith(".gz")
    suffix = Path(name[:-3]).suffix if compressed else path.suffix.lower()
    if suffix not in _HTML_SUFFIXES | _TEXT_SUFFIXES | {".jsonl", ".json"}:
        return [], SourceRecord(source, "skipped", f"unsupported file type {suffix or '(no suffix)'!r}")
    try:
        raw = path.read_bytes()
        if compressed:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        return [], SourceRecord(source, "failed", f"cannot read: {exc}")

    if suffix in _HTML_SUFFIXES | _TEXT_SUFFIXES:
        binary = binary_reason(raw)
        if binary:
            return [], SourceRecord(source, "skipped", f"binary content, not text ({binary})")
    if suffix in _HTML_SUFFIXES:
        html = decode(raw)[0]
        text = extract_text(html)
        if not text:
            return [], SourceRecord(source, "skipped", "no text")
        docs = [Document(text, source, extract_title(html))]
        return docs, kept_record(source, docs)
    content = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
    if suffix in _TEXT_SUFFIXES:
        text = normalize_text(content)
        if not text:
            return [], SourceRecord(source, "skipped", "no text")
        docs = [Document(text, source)]
        return docs, kept_record(source, docs)

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
