"""verify (kinfuse.export.verify) failing an export whose weights were changed after the merge."""

from __future__ import annotations

import kinfuse
from kinfuse.cli import main as cli


def test_verify_fails_a_broken_export(run, tmp_path, capsys, quiet):
    from safetensors.torch import load_file, save_file

    out = kinfuse.export(run, format="merged", out=tmp_path / "broken", **quiet)
    shard = next(out.glob("model-*.safetensors"))
    tensors = load_file(shard)
    tensors["model.layers.1.self_attn.o_proj.weight"].zero_()
    save_file(tensors, shard, metadata={"format": "pt"})
    assert cli(["verify", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "FAILED" in printed and "does not reproduce the trained model" in printed
