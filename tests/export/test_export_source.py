"""What export reads (kinfuse.export.source): a run folder through its run record, a trainer
checkpoint through its meta.json, and a clear error for a run folder without run.json."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from kinfuse.export.errors import ExportError
from kinfuse.export.source import load_source
from kinfuse.run import RunRecord


def test_quantization_dtype_is_the_one_training_recorded(run, tmp_path):
    from kinfuse.train import pick_dtype

    # the run's record carries what training computed in ("auto" resolved on this machine)
    want = str(pick_dtype("auto", torch.device("cpu"))).removeprefix("torch.")
    assert RunRecord.read(run).compute_dtype == want
    assert load_source(run).quant_dtype == want
    # a run that computed in fp32 on a CPU is rounded in fp32, on the CPU
    shutil.copytree(run / "adapter", tmp_path / "old" / "adapter")
    replace(RunRecord.read(run), model="m", compute_dtype="float32", device="cpu").write(tmp_path / "old")
    assert load_source(tmp_path / "old").quant_dtype == "float32"
    assert load_source(tmp_path / "old").trained_on == "cpu"
    # a trainer checkpoint records it in meta.json
    step = tmp_path / "checkpoints" / "step-1"
    shutil.copytree(run / "adapter", step / "adapter")
    (step / "meta.json").write_text(json.dumps({"model": "m", "compute_dtype": "bfloat16", "lora": {"quantize": "nf4"}}))
    assert load_source(step / "adapter").quant_dtype == "bfloat16"


def test_a_run_folder_without_its_record_is_refused_with_the_fix(run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run / "adapter", old / "adapter")
    (old / "metrics.json").write_text(json.dumps({"model": "m", "train": {"device": "cpu"}}))
    with pytest.raises(ExportError, match=r"(?s)old.*has no run\.json.*--base"):
        load_source(old)
    # its adapter folder is still exportable, as a bare adapter
    src = load_source(old / "adapter")
    assert src.run_dir is None and src.quantize is None
    (old / "run.json").write_text("{not json")
    with pytest.raises(ExportError, match="run.json: not JSON"):
        load_source(old)
