"""export() itself (kinfuse.export.exporter): bad input refused before anything is written, a
full disk leaving no export (and an old one whole), and the templates it ships."""

from __future__ import annotations

import ast
import errno
import shutil
from dataclasses import replace
from importlib import resources

import pytest

import kinfuse
from kinfuse import ModelError
from kinfuse.cli import main as cli
from kinfuse.export import merge
from kinfuse.export.errors import ExportError
from kinfuse.run import RunRecord


def test_bad_input(run, tmp_path, capsys, quiet):
    no_adapter = tmp_path / "no-adapter"
    no_adapter.mkdir()
    RunRecord(model="m", quantize="nf4", compute_dtype="float32", device="cpu", chat=False, steps=0,
              status="interrupted").write(no_adapter)
    with pytest.raises(ExportError, match="has no adapter"):
        kinfuse.export(no_adapter, format="merged", out=tmp_path / "x", **quiet)
    with pytest.raises(ExportError, match="no such run"):
        kinfuse.export(tmp_path / "nope", format="merged", out=tmp_path / "x", **quiet)

    moved = tmp_path / "moved"
    shutil.copytree(run / "adapter", moved / "adapter")
    replace(RunRecord.read(run), model=str(tmp_path / "gone-base")).write(moved)
    with pytest.raises(ModelError, match="no such model folder.*gone-base"):
        kinfuse.export(moved, format="merged", out=tmp_path / "x", **quiet)
    assert cli(["export", str(moved), "--format", "tgi-adapter", "--out", str(tmp_path / "x")]) == 2
    assert "gone-base" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(ExportError, match="exists: pass --overwrite"):
        kinfuse.export(run, format="tgi-adapter", out=taken, **quiet)
    kinfuse.export(run, format="tgi-adapter", out=taken, overwrite=True, **quiet)
    assert (taken / "adapter_config.json").is_file()
    with pytest.raises(ExportError, match="holds the source"):
        kinfuse.export(run / "adapter", format="tgi-adapter", out=run, overwrite=True, **quiet)
    with pytest.raises(ExportError, match="choose one of"):
        kinfuse.export(run, format="gguf", out=tmp_path / "y", **quiet)


def test_full_disk_leaves_no_export(run, tmp_path, monkeypatch, quiet):
    good = kinfuse.export(run, format="merged", out=tmp_path / "out", **quiet)
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    real_write = merge.write_shard
    calls = []

    def full_disk(path, tensors, metadata):
        calls.append(path)
        if len(calls) == 2:
            real_write(path, dict(list(tensors.items())[:1]), metadata)  # a partial file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, tensors, metadata)

    monkeypatch.setattr(merge, "write_shard", full_disk)
    with pytest.raises(ExportError, match="disk filled up"):
        kinfuse.export(run, format="merged", out=tmp_path / "new", max_shard_size=50_000, **quiet)
    assert len(calls) == 2 and not (tmp_path / "new").exists()
    calls.clear()
    with pytest.raises(ExportError, match="disk filled up"):  # an overwrite that fails keeps the old export
        kinfuse.export(run, format="merged", out=good, overwrite=True, max_shard_size=50_000, **quiet)
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial folders left beside it


@pytest.mark.parametrize("name", ["deploy.py", "verify_child.py"])
def test_templates_are_python_files_in_the_package(name):
    text = (resources.files("kinfuse.export") / "templates" / name).read_text(encoding="utf-8")
    tree = ast.parse(text, name)  # read as text at runtime, but real Python: linted, and byte-compiled on install
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert imported and not [m for m in imported if m.split(".")[0] == "kinfuse"]  # runs where kinfuse is not
