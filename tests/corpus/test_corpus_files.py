"""Tests for kinfuse.corpus.files: Corpus.from_paths on every supported file kind, and bad files."""

from __future__ import annotations

import gzip
import os
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


# ---------------------------------------------------------------------------
# Hostile folders and files (issue 21): links out, dangling links, empty and
# unreadable folders, files over the size cap, decompression bombs
# ---------------------------------------------------------------------------


def test_symlink_out_of_folder_refused_with_record(tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "passwd.txt"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0 SECRET-LINE", encoding="utf-8")
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "real.txt").write_text("A real note inside the folder.", encoding="utf-8")
    (folder / "x.txt").symlink_to(secret)
    (folder / "inside.txt").symlink_to(folder / "real.txt")  # a link within the folder stays allowed

    corpus = Corpus.from_paths([folder], dedup=False)
    assert not any("SECRET-LINE" in d.text for d in corpus)
    rec = {r.source: r for r in corpus.records}
    link = rec[str(folder / "x.txt")]
    assert link.status == "skipped" and str(secret) in link.reason and "outside the folder" in link.reason
    assert "pass its real path" in link.reason
    assert rec[str(folder / "inside.txt")].status == "kept"
    # Given by its real path, the file is read.
    assert "SECRET-LINE" in Corpus.from_paths([secret])[0].text


def test_dangling_symlink_empty_and_unsupported_folders_recorded(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("Kept note.", encoding="utf-8")
    (folder / "gone.txt").symlink_to(tmp_path / "missing.txt")
    corpus = Corpus.from_paths([folder])
    rec = {r.source: r for r in corpus.records}
    gone = rec[str(folder / "gone.txt")]
    assert gone.status == "skipped" and "dangling symlink" in gone.reason and "missing.txt" in gone.reason

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CorpusError) as err:
        Corpus.from_paths([empty])
    msg = str(err.value)
    assert "no source was given" not in msg
    assert str(empty) in msg and "is empty" in msg and ".txt" in msg and ".html" in msg

    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"\x89PNG")
    with pytest.raises(CorpusError) as err:
        Corpus.from_paths([images])
    assert "has no supported file" in str(err.value) and str(images) in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their permissions")
def test_unreadable_subfolder_recorded(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Kept note.", encoding="utf-8")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "b.txt").write_text("Unreachable.", encoding="utf-8")
    locked.chmod(0)
    try:
        corpus = Corpus.from_paths([tmp_path])
    finally:
        locked.chmod(0o755)
    rec = {r.source: r for r in corpus.records}
    assert rec[str(locked)].status == "failed" and "cannot read folder" in rec[str(locked)].reason


def test_file_over_max_bytes_refused_whole(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"One long line of notes that goes on. " * 60_000)  # 2.2 MB
    (tmp_path / "small.txt").write_text("A small note.", encoding="utf-8")
    corpus = Corpus.from_paths([tmp_path], max_bytes=1_000_000)
    rec = {r.source: r for r in corpus.records}
    assert rec[str(big)].status == "skipped"
    assert "too large" in rec[str(big)].reason and "max_bytes=1000000" in rec[str(big)].reason
    assert [d.text for d in corpus] == ["A small note."]
    assert Corpus.from_paths([big], max_bytes=3_000_000)[0].text.startswith("One long line")


def test_gzip_bomb_refused_at_default_cap(tmp_path: Path) -> None:
    # 64 MiB of text in a ~100 kB .gz: over the default cap (that of HTTP bodies) once inflated.
    bomb = tmp_path / "bomb.txt.gz"
    with gzip.open(bomb, "wb", compresslevel=6) as fh:
        chunk = b"all work and no play. " * 47_662  # ~1 MiB
        for _ in range(64):
            fh.write(chunk)
    assert bomb.stat().st_size < 2_000_000
    (tmp_path / "ok.txt").write_text("A small note.", encoding="utf-8")
    corpus = Corpus.from_paths([tmp_path])
    rec = {r.source: r for r in corpus.records}
    assert rec[str(bomb)].status == "skipped"
    assert "decompresses to more than max_bytes=20000000" in rec[str(bomb)].reason


def test_text_file_charset_detected_and_noted(tmp_path: Path) -> None:
    ja = "日本語のテキストです。これは文字コードの検出を確かめるための文章で、ひらがなとカタカナを含みます。"
    (tmp_path / "sjis.txt").write_bytes(ja.encode("shift_jis"))
    (tmp_path / "latin.txt").write_bytes("Caf\u00e9 cr\u00e8me, d\u00e9j\u00e0 vu, \u00e9t\u00e9 na\u00efve.".encode("cp1252"))
    corpus = Corpus.from_paths([tmp_path], dedup=False)
    texts = {Path(d.source).name: d.text for d in corpus}
    rec = {Path(r.source).name: r for r in corpus.records}
    assert texts["sjis.txt"] == ja and "Shift_JIS" in rec["sjis.txt"].reason
    assert texts["latin.txt"] == "Caf\u00e9 cr\u00e8me, d\u00e9j\u00e0 vu, \u00e9t\u00e9 na\u00efve."
    assert "windows-1252" in rec["latin.txt"].reason
