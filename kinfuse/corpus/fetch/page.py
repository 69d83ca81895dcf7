"""A fetched page as documents: the body sniffed, decoded and its main text extracted."""

from __future__ import annotations

from ..clean import normalize_text
from ..documents import Document, SourceRecord, kept_record
from ..decoding import binary_reason, decode, mostly_undecodable
from ..extract import extract
from .response import Response


def documents_from_response(url: str, got: Response) -> tuple[list[Document], SourceRecord]:
    """The documents of a fetched page (its main text) and its record: kept, or skipped saying why."""
    media = got.media
    raw = got.body
    if not raw.strip():
        return [], SourceRecord(url, "skipped", "empty response body", from_cache=got.from_cache)
    if not media:  # no header: sniff, since servers of static files forget it
        media = "text/html" if raw.lstrip()[:1] == b"<" else "text/plain"
    binary = binary_reason(raw)
    if binary:
        reason = f"binary content served as {media} ({binary})"
        return [], SourceRecord(url, "skipped", reason, from_cache=got.from_cache)
    decoded, note = decode(raw, got.charset, html=media != "text/plain")
    if mostly_undecodable(decoded):
        reason = f"binary content served as {media} (mostly bytes that are not text in {got.charset or 'any charset tried'})"
        return [], SourceRecord(url, "skipped", reason, from_cache=got.from_cache)
    if media == "text/plain":
        text, title = normalize_text(decoded), ""
    else:
        text, title = extract(decoded, url)
    notes = [f"redirected to {got.url}"] if got.url != url else []
    if note:
        notes.append(note)
    if not text:
        return [], SourceRecord(url, "skipped", "no text", from_cache=got.from_cache)
    docs = [Document(text, url, title, got.fetched_at)]
    record = kept_record(url, docs, "; ".join(notes))
    record.from_cache = got.from_cache
    return docs, record
