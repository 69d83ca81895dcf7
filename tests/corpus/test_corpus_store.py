"""Tests for kinfuse.corpus.store: the on-disk store Corpus.ingest writes, put back to its last
committed source when reopened after a crash, read one document at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kinfuse.corpus import Corpus, Document, SourceRecord
from kinfuse.corpus.store import CorpusStore, StoreWriter
from kinfuse.errors import CorpusError


def doc(n: int) -> Document:
    return Document(f"Text of page {n}. " * 20, f"http://example.org/{n}", f"Page {n}", "2026-01-01T00:00:00+00:00")


def write(folder: Path, numbers: range, **kw) -> None:
    writer = StoreWriter(folder, **kw)
    try:
        for n in numbers:
            d = doc(n)
            writer.add([d], SourceRecord(d.source, "kept"))
    finally:
        writer.close()


def test_shards_roll_over_and_read_back_in_order(tmp_path: Path) -> None:
    write(tmp_path / "s", range(30), shard_bytes=2000)
    shards = sorted((tmp_path / "s" / "documents").glob("*.jsonl"))
    assert len(shards) > 3 and all(p.stat().st_size <= 2000 for p in shards)
    store = CorpusStore(tmp_path / "s")
    assert [d.source for d in store] == [doc(n).source for n in range(30)]
    assert list(store)[7] == doc(7)
    assert len(store) == 30 and store.counts()["chars"] == sum(len(doc(n).text) for n in range(30))
    write(tmp_path / "s", range(30, 35), shard_bytes=2000)  # reopened: appends after the last shard
    assert [d.source for d in CorpusStore(tmp_path / "s")][-1] == doc(34).source


def test_reopening_cuts_a_torn_status_line_and_uncommitted_document_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    write(folder, range(5))
    status, shard = folder / "status.jsonl", folder / "documents" / "00000.jsonl"
    good_status, good_shard = status.read_bytes(), shard.read_bytes()
    # A kill mid-source: the document written, its status line half written.
    with shard.open("ab") as f:
        f.write((json.dumps(doc(5).__dict__) + "\n").encode())
    with status.open("ab") as f:
        f.write(b'{"source": "http://example.org/5", "sta')
    assert [d.source for d in CorpusStore(folder)] == [doc(n).source for n in range(5)]  # readers skip the tail
    writer = StoreWriter(folder)
    assert writer.seen == {doc(n).source for n in range(5)}
    writer.close()
    assert status.read_bytes() == good_status and shard.read_bytes() == good_shard
    write(folder, range(5, 7))
    assert [d.source for d in Corpus.load(folder)] == [doc(n).source for n in range(7)]


def test_a_status_line_whose_document_never_reached_the_disk_is_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    write(folder, range(4))
    shard = folder / "documents" / "00000.jsonl"
    lines = shard.read_bytes().splitlines(keepends=True)
    shard.write_bytes(b"".join(lines[:2]) + lines[2][:10])  # a power cut: the shard lost its tail
    writer = StoreWriter(folder)
    assert writer.seen == {doc(0).source, doc(1).source}  # pages 2 and 3 will be fetched again
    writer.close()
    assert [d.source for d in CorpusStore(folder)] == [doc(0).source, doc(1).source]


def test_damage_in_the_middle_and_hand_edits_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    write(folder, range(3))
    status = folder / "status.jsonl"
    good = status.read_bytes()
    lines = good.splitlines(keepends=True)
    status.write_bytes(lines[0] + b"garbage\n" + b"".join(lines[1:]))
    with pytest.raises(CorpusError, match=r"status.jsonl:2: damaged status record"):
        StoreWriter(folder)
    status.write_bytes(good)
    shard = folder / "documents" / "00000.jsonl"
    shard.write_bytes(shard.read_bytes().replace(b"example.org/1", b"example.org/X"))
    with pytest.raises(CorpusError, match=r"00000.jsonl at byte \d+: not the document of http://example.org/1"):
        list(CorpusStore(folder))
    (folder / "store.json").write_text('{"format": "kinfuse-corpus-store", "version": 99}')
    with pytest.raises(CorpusError, match="store version 99"):
        CorpusStore(folder)


def test_documents_zeroed_by_a_power_cut_are_dropped_and_the_store_resumes(tmp_path: Path) -> None:
    # The status lines reached the disk and the shard kept its size, but not its last bytes.
    folder = tmp_path / "s"
    write(folder, range(5))
    shard = folder / "documents" / "00000.jsonl"
    lines = shard.read_bytes().splitlines(keepends=True)
    shard.write_bytes(b"".join(lines[:3]) + b"\0" * len(lines[3]) + lines[4][:5] + b"\0" * (len(lines[4]) - 5))
    writer = StoreWriter(folder)
    assert writer.seen == {doc(n).source for n in range(3)}  # pages 3 and 4 will be fetched again
    writer.close()
    assert [d.source for d in CorpusStore(folder)] == [doc(n).source for n in range(3)]
    assert shard.read_bytes() == b"".join(lines[:3])
    write(folder, range(3, 6))
    assert list(CorpusStore(folder)) == [doc(n) for n in range(6)]


def test_close_closes_the_files_when_the_disk_fails(tmp_path: Path, monkeypatch) -> None:
    writer = StoreWriter(tmp_path / "s")
    writer.add([doc(0)], SourceRecord(doc(0).source, "kept"))

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("kinfuse.corpus.store.os.fsync", full)
    writer.close()
    assert writer.docs.closed and writer.status.closed
    monkeypatch.undo()
    write(tmp_path / "s", range(1, 2))  # the lock was released too
    assert [d.source for d in CorpusStore(tmp_path / "s")] == [doc(0).source, doc(1).source]
