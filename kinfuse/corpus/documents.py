"""What every loader produces: documents, and one record per input source.

Nothing is lost silently: every input source (a URL, a file, a sitemap, a
string, a dataset row) gets exactly one :class:`SourceRecord` saying whether
it was kept, skipped or failed and why, next to the :class:`Document` objects
it gave.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Document:
    """One text to train on, and where it came from."""

    text: str
    source: str
    title: str = ""
    fetched_at: str = ""  # ISO 8601 (UTC) time of the HTTP response; "" for files and strings


# The columns of a corpus as a datasets.Dataset (Corpus.to_dataset, CorpusStore.to_dataset).
DATASET_COLUMNS = ("text", "source", "title", "fetched_at")


@dataclass
class SourceRecord:
    """What happened to one input source: "kept", "skipped" or "failed", and why."""

    source: str
    status: str
    reason: str = ""
    documents: int = 0
    chars: int = 0
    from_cache: bool = False  # the body was reused from cache_dir after a 304 Not Modified


def kept_record(source: str, docs: list[Document], reason: str = "") -> SourceRecord:
    """The "kept" record of a source that gave ``docs``, with their count and characters."""
    return SourceRecord(source, "kept", reason, len(docs), sum(len(d.text) for d in docs))


def texts_with_sources(corpus: Any) -> list[tuple[str, str]]:
    """(text, source) for each non-empty document of a Corpus, a list of Documents, dicts or strings:
    the one reading of "documents" that probes, augmentation and rule-written questions share."""
    docs = []
    for i, d in enumerate(corpus):
        if isinstance(d, str):
            docs.append((d, f"document {i + 1}"))
        elif isinstance(d, dict):
            docs.append((d.get("text", ""), str(d.get("source") or f"document {i + 1}")))
        else:
            docs.append((getattr(d, "text", ""), str(getattr(d, "source", "") or f"document {i + 1}")))
    return [(t, s) for t, s in docs if t and t.strip()]
