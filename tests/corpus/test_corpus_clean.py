"""Tests for kinfuse.corpus.clean through Corpus.clean: duplicates, near-duplicates, boilerplate
lines and short documents, with their counts and records.
"""

from __future__ import annotations

import json
from pathlib import Path

from local_http import LocalServer

from kinfuse.corpus import Corpus


SITE = ["/site/a", "/site/a-copy", "/site/a-near", "/site/p1", "/site/p2", "/site/p3"]


def test_cleaning_counts_and_records(http_server: LocalServer) -> None:
    base = http_server.base
    corpus = Corpus.from_urls([base + p for p in SITE], allow_private=True)
    records = {r.source[len(base) :]: r for r in corpus.records}
    assert records["/site/a-copy"].status == "skipped"
    assert records["/site/a-copy"].reason == f"duplicate of {base}/site/a"
    assert records["/site/a-near"].status == "skipped"
    assert records["/site/a-near"].reason == f"near-duplicate of {base}/site/a"
    assert corpus.cleaning["exact_duplicates"] == 1 and corpus.cleaning["near_duplicates"] == 1
    assert corpus.cleaning["boilerplate_lines"] == 1 and corpus.cleaning["boilerplate_lines_removed"] == 3
    assert len(corpus) == 4
    assert not any("editorial team" in d.text for d in corpus)
    assert records["/site/p1"].chars == len(corpus.documents[1].text)  # counts follow the cleaned text
    assert "cleaning: 1 exact duplicate(s), 1 near-duplicate(s), 1 boilerplate line(s)" in corpus.report()

    raw = Corpus.from_urls([base + p for p in SITE], dedup=False, allow_private=True)
    assert len(raw) == 6 and raw.cleaning["exact_duplicates"] == 0
    assert sum("editorial team" in d.text for d in raw) == 3
    assert len(raw.clean()) == 4  # the explicit method does the same
    assert len(raw.clean(near_dup_threshold=None)) == 5


def test_clean_min_chars_and_multi_document_sources(tmp_path: Path) -> None:
    rows = [{"text": "Same row text."}, {"text": "same   ROW text."}, {"text": "Another row, long enough."}]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    (tmp_path / "short.txt").write_text("Tiny.", encoding="utf-8")
    corpus = Corpus.from_paths([tmp_path], min_chars=10)
    by_name = {Path(r.source).name: r for r in corpus.records}
    rows_rec = by_name["rows.jsonl"]
    assert rows_rec.status == "kept" and rows_rec.documents == 2  # one of three rows removed
    assert f"duplicate of {tmp_path / 'rows.jsonl'}:1" in rows_rec.reason
    assert by_name["short.txt"].status == "skipped"
    assert by_name["short.txt"].reason.startswith("shorter than 10 characters")
    assert corpus.cleaning["too_short"] == 1 and corpus.cleaning["exact_duplicates"] == 1
