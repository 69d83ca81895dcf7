"""Nothing partial ships: export and verify refuse a run whose training did not complete
(--allow-incomplete overrides), a damaged tokenizer file is refused rather than copied, and a
wrong-shape tensor makes verify report FAILED naming it."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

import kinfuse
from kinfuse.cli import main as cli
from kinfuse.export.errors import ExportError
from kinfuse.run import RunRecord


@pytest.mark.parametrize("status, reason", [("interrupted", "stopped by SIGTERM at step 1"),
                                            ("failed", "TrainingError: loss became nan at step 2"),
                                            ("running", "")])
def test_export_and_verify_refuse_an_incomplete_run(run, tmp_path, capsys, quiet, status, reason):
    partial = tmp_path / "partial"
    shutil.copytree(run, partial)
    replace(RunRecord.read(run), status=status, reason=reason).write(partial)
    for source in (partial, partial / "adapter"):
        with pytest.raises(ExportError, match=rf"(?s)run {partial} is not complete \(run.json status '{status}'\).*"
                                              r"--allow-incomplete \(allow_incomplete=True\)"):
            kinfuse.export(source, format="tgi-adapter", out=tmp_path / "x", **quiet)
    assert cli(["export", str(partial), "--format", "merged", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert str(partial) in err and "--allow-incomplete" in err and (reason or "still running") in err
    assert not (tmp_path / "x").exists()

    # verify refuses it as the reference too
    good = kinfuse.export(run, format="tgi-adapter", out=tmp_path / "good", **quiet)
    with pytest.raises(ExportError, match="--allow-incomplete"):
        kinfuse.verify(good, partial, **quiet)
    assert cli(["verify", str(good), "--against", str(partial)]) == 2

    # the override: exported with a note, and the export remembers where it came from
    assert cli(["export", str(partial), "--format", "tgi-adapter", "--out", str(tmp_path / "x"),
                "--allow-incomplete"]) == 0
    assert "exporting anyway" in capsys.readouterr().err
    with pytest.raises(ExportError, match=f"whose training did not complete .*'{status}'"):
        kinfuse.verify(tmp_path / "x", compare=False, **quiet)
    assert kinfuse.verify(tmp_path / "x", compare=False, allow_incomplete=True, **quiet).ok


def test_a_truncated_tokenizer_file_is_refused_not_shipped(run, tmp_path, quiet):
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    text = (damaged / "adapter" / "tokenizer.json").read_text()
    (damaged / "adapter" / "tokenizer.json").write_text(text[: len(text) // 2])  # a disk that filled mid-save
    for format in ("tgi-adapter", "merged"):
        with pytest.raises(ExportError, match=rf"{damaged / 'adapter' / 'tokenizer.json'} is damaged"):
            kinfuse.export(damaged, format=format, out=tmp_path / "x", **quiet)
        assert not (tmp_path / "x").exists()


def test_verify_reports_a_wrong_shape_tensor_by_name(run, tmp_path, capsys, quiet):
    from safetensors.torch import load_file, save_file

    out = kinfuse.export(run, format="tgi-adapter", out=tmp_path / "adapter", **quiet)
    tensors = load_file(out / "adapter_model.safetensors")
    name = next(k for k in tensors if k.endswith("lora_A.weight"))
    tensors[name] = tensors[name][:, :-1].contiguous()
    save_file(tensors, out / "adapter_model.safetensors", metadata={"format": "pt"})
    for args in ([], ["--files-only"]):
        assert cli(["verify", str(out), *args]) == 1
        printed = capsys.readouterr().out
        assert "FAILED" in printed and f"tensor {name} has shape" in printed

    merged = kinfuse.export(run, format="merged", out=tmp_path / "merged", **quiet)
    shard = next(merged.glob("model*.safetensors"))
    tensors = load_file(shard)
    tensors["model.layers.0.self_attn.o_proj.weight"] = tensors["model.layers.0.self_attn.o_proj.weight"][:-1]
    save_file(tensors, shard, metadata={"format": "pt"})
    report = kinfuse.verify(merged, check=False, **quiet)
    assert not report.ok and any("tensor model.layers.0.self_attn.o_proj.weight has shape" in p for p in report.problems)

    # the trained adapter itself damaged: the reference side reports it, no traceback
    broken = tmp_path / "broken-run"
    shutil.copytree(run, broken)
    shutil.copy(out / "adapter_model.safetensors", broken / "adapter" / "adapter_model.safetensors")
    good = kinfuse.export(run, format="tgi-adapter", out=tmp_path / "good", **quiet)
    report = kinfuse.verify(good, broken, check=False, **quiet)
    assert not report.ok and any(f"trained adapter ({broken / 'adapter'}): tensor {name} has shape" in p
                                 for p in report.problems)
