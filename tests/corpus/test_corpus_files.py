"""Tests for kinfuse.corpus.files: Corpus.from_paths on every supported file kind, and bad files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from corpus_site import ARTICLE_HTML, ARTICLE_SENTENCES, page

from kinfuse.corpus import Corpus
from kinfuse.errors import CorpusError


def test_paths_all_formats(tmp_path: Path) -> None:
    (tmp_path / "a.html").write_text(ARTICLE_HTML, encoding="utf-8")
    (tmp_path / "b.txt").write_text("Plain   notes.\n\n\n\nMore notes.", encoding="utf-8")
    (tmp_path / "c.md").write_text("# Title\n\nMarkdown body.", encoding="utf-8")
    rows = [{"text": "First row."}, {"text": "Second row.", "title": "T2", "source": "src-2"}, {"no": "text"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    json_list = [{"text": "Json one."}, {"text": "Json two."}]
    (tmp_path / "e.json").write_text(json.dumps(json_list), encoding="utf-8")
    (tmp_path / "f.json").write_text(json.dumps({"text": "Single object."}), encoding="utf-8")
    (tmp_path / "g.txt.gz").write_bytes(gzip.compress(b"Gzipped text."))
    (tmp_path / "h.jsonl.gz").write_bytes(gzip.compress(b'{"text": "Gzipped row."}\n'))
    (tmp_path / "i.html.gz").write_bytes(gzip.compress(page("Gzipped html.").encode()))
    (tmp_path / "j.png").write_bytes(b"\x89PNG")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "k.txt").write_text("Nested file.", encoding="utf-8")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.txt").write_text("Hidden.", encoding="utf-8")

    corpus = Corpus.from_paths([tmp_path])
    texts = [d.text for d in corpus]
    by_source = {r.source: r for r in corpus.records}
    assert ARTICLE_SENTENCES[0] in texts[0] and "NAV-TEXT" not in texts[0]
    assert corpus.documents[0].title == "The keeper of Varnholm"
    assert "Plain notes.\n\nMore notes." in texts
    assert "# Title\n\nMarkdown body." in texts
    assert {"First row.", "Second row.", "Json one.", "Json two.", "Single object.", "Gzipped text.",
            "Gzipped row.", "Nested file."} <= set(texts)  # fmt: skip
    assert any("Gzipped html." in t for t in texts)
    assert "Hidden." not in texts
    second = next(d for d in corpus if d.text == "Second row.")
    assert (second.title, second.source) == ("T2", "src-2")
    jsonl = by_source[str(tmp_path / "d.jsonl")]
    assert jsonl.status == "kept" and jsonl.documents == 2 and "line 3" in jsonl.reason
    png = by_source[str(tmp_path / "j.png")]
    assert png.status == "skipped" and ".png" in png.reason
    # sorted, recursive, one record per file
    assert [r.source for r in corpus.records] == sorted(r.source for r in corpus.records)
    assert str(sub / "k.txt") in by_source


def test_paths_single_files_and_missing(tmp_path: Path) -> None:
    f = tmp_path / "one.txt"
    f.write_text("One file.", encoding="utf-8")
    assert [d.text for d in Corpus.from_paths([str(f)])] == ["One file."]
    missing = tmp_path / "nope.txt"
    with pytest.raises(CorpusError, match="no such file or directory: .*nope.txt"):
        Corpus.from_paths([f, missing])


def test_paths_bad_files_recorded(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "bad.txt.gz").write_bytes(b"not gzip at all")
    (tmp_path / "ok.txt").write_text("Fine.", encoding="utf-8")
    corpus = Corpus.from_paths([tmp_path])
    by_name = {Path(r.source).name: r for r in corpus.records}
    assert by_name["bad.json"].status == "failed" and "invalid JSON" in by_name["bad.json"].reason
    assert by_name["bad.txt.gz"].status == "failed"
    assert by_name["ok.txt"].status == "kept"
