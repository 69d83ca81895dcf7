"""kinfuse.io: atomic writes leave the old file or the whole new one, with ordinary permissions."""

import os
import stat

import pytest

from kinfuse import io
from kinfuse.errors import KinfuseError


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    io.write_json(path, {"a": 1})
    assert path.read_text() == '{\n "a": 1\n}'

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        io.write_json(path, {"a": 2})
    assert path.read_text() == '{\n "a": 1\n}'  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_files_and_folders_get_the_umask_permissions_not_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        path = io.write_text(tmp_path / "a.txt", "x")
        with io.staged_dir(tmp_path / "folder") as staging:
            (staging / "f").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755


def test_staged_dir_replaces_whole_or_keeps_the_old_folder(tmp_path):
    target = tmp_path / "adapter"
    with io.staged_dir(target) as staging:
        (staging / "one").write_text("1")
    with pytest.raises(RuntimeError):
        with io.staged_dir(target) as staging:
            (staging / "two").write_text("2")
            raise RuntimeError("interrupted while writing")
    assert [p.name for p in target.iterdir()] == ["one"]  # the failed write left no trace
    with io.staged_dir(target) as staging:
        (staging / "three").write_text("3")
    assert [p.name for p in target.iterdir()] == ["three"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_read_jsonl_names_the_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(KinfuseError, match=r"rows.jsonl:3: not a JSON object"):
        io.read_jsonl(path)
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(KinfuseError, match=r"rows.jsonl:2: invalid JSON"):
        io.read_jsonl(path)
    with pytest.raises(KinfuseError, match="no such file"):
        io.read_jsonl(tmp_path / "missing.jsonl")
    io.write_jsonl(path, [{"q": "é"}, {"q": 2}])
    assert io.read_jsonl(path) == [{"q": "é"}, {"q": 2}]
