"""What to export: a run folder, a bare adapter folder or a trainer checkpoint's adapter, read
into one `Source` that names the base model and says how the adapter was trained.

How it was trained decides how to merge: a run on an NF4 base is merged into the weights it
saw, NF4 quantized in the run's compute dtype on the run's device. A run folder says so in its
run record (run.json, `kinfuse.run.RunRecord`), a checkpoint in its meta.json; a bare adapter
does not say, and is merged into the original weights unless told otherwise.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..run import RECORD_FILE, RunRecord, RunRecordError
from .errors import ExportError

# The tensor names a PEFT LoRA adapter stores per adapted module; any other key is a full tensor.
LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector", ".lora_embedding_A", ".lora_embedding_B")

@dataclass
class Source:
    adapter_dir: Path
    run_dir: Path | None
    base_ref: str  # the base model as the run names it
    quantize: str | None  # "nf4" / "none" as trained, None when unknown (a bare adapter)
    quant_dtype: str  # compute dtype the NF4 weights were quantized in during training
    adapter_config: dict[str, Any]
    trained_on: str = "cpu"  # "cuda" or "cpu": where the NF4 weights were quantized
    record: RunRecord | None = None  # run.json, when the source is a run's adapter

    def nf4_device(self) -> str:
        import torch

        return "cuda" if self.trained_on == "cuda" and torch.cuda.is_available() else "cpu"

    def base_path(self) -> str:
        """The base checkpoint as a local folder or a hub id (checked, not downloaded)."""
        from ..models import resolve_model

        try:
            name = resolve_model(self.base_ref)
            return str(Path(name).absolute()) if Path(name).exists() else name
        except ModelError as e:
            raise ModelError(f"base model of {self.adapter_dir}: {e} (pass --base PATH to point at it)") from None

    def tokenizer_dir(self, base: str) -> str:
        has = any((self.adapter_dir / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"))
        return str(self.adapter_dir) if has else base


def load_source(source: str | os.PathLike, base: str | None = None, *, allow_incomplete: bool = False) -> Source:
    """Read a run folder (run.json + adapter/), an adapter folder (adapter_config.json) or a
    trainer checkpoint's adapter (checkpoints/step-N/adapter, with ../meta.json).

    A run whose record says training did not complete (running, interrupted, failed) is
    refused unless `allow_incomplete`: its adapter is partial, or stale from an earlier run. A
    checkpoint's adapter is partial by name, so asking for one is asking for it."""
    path = Path(source).expanduser().absolute()
    if not path.exists():
        raise ExportError(f"no such run or adapter dir: {str(path)!r}")
    if not path.is_dir():
        raise ExportError(f"{str(path)!r} is a file: pass a run dir (with adapter/) or an adapter dir")
    record: RunRecord | None = None
    run_dir: Path | None = None
    if (path / "adapter_config.json").is_file():
        adapter = path
        if path.name == "adapter" and RunRecord.exists(path.parent):
            run_dir = path.parent
            record = _read_record(run_dir)
    elif RunRecord.exists(path) or (path / "adapter").is_dir() or (path / "metrics.json").is_file():
        if not RunRecord.exists(path):
            raise ExportError(
                f"run folder {str(path)!r} has no {RECORD_FILE}, which says which base model the adapter belongs to "
                "and how it was trained: the run was made by an older kinfuse, or stopped before training began. "
                f"Rerun the infusion, or export the adapter folder itself ({path / 'adapter'}) with --base MODEL, "
                "adding --merge-into dequantized if it was trained on an NF4 base"
            )
        run_dir, record = path, _read_record(path)
        adapter = path / record.adapter
        if not (adapter / "adapter_config.json").is_file():
            raise ExportError(
                f"run dir {str(path)!r} has no adapter ({adapter}/adapter_config.json is missing): the run did not "
                "finish training; rerun it, or export a checkpoint's adapter (checkpoints/step-N/adapter)"
            )
    else:
        raise ExportError(f"{str(path)!r} is neither a run dir ({RECORD_FILE} + adapter/) nor an adapter dir "
                          "(adapter_config.json)")
    if not (adapter / "adapter_model.safetensors").is_file() and not (adapter / "adapter_model.bin").is_file():
        raise ExportError(f"adapter dir {str(adapter)!r} has no adapter_model.safetensors")
    why = record.incomplete(run_dir) if record is not None and run_dir is not None else None
    if why and not allow_incomplete:
        raise ExportError(why)
    try:
        config = json.loads((adapter / "adapter_config.json").read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{adapter / 'adapter_config.json'}: not JSON ({e.msg})") from None
    quantize, quant_dtype, trained_on = None, "float32", "cpu"
    base_ref = base or config.get("base_model_name_or_path")
    if record is not None:
        quantize, quant_dtype, trained_on = record.quantize, record.compute_dtype, record.trained_on
        base_ref = base or record.model or base_ref
    elif (adapter.parent / "meta.json").is_file():  # a trainer checkpoint: checkpoints/step-N/adapter
        try:
            meta = json.loads((adapter.parent / "meta.json").read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ExportError(f"{adapter.parent / 'meta.json'}: not JSON ({e}); the checkpoint is damaged: export "
                              "another checkpoint, or this adapter with --base MODEL") from None
        meta = meta if isinstance(meta, dict) else {}
        quantize = (meta.get("lora") or {}).get("quantize")
        quant_dtype = meta.get("compute_dtype") or quant_dtype
        base_ref = base or meta.get("model") or base_ref
    if not base_ref:
        raise ExportError(f"{adapter}: no base model named (adapter_config.json has no base_model_name_or_path); "
                          "pass --base")
    return Source(adapter, run_dir, str(base_ref), quantize, quant_dtype, config, trained_on, record)


def _read_record(run_dir: Path) -> RunRecord:
    try:
        return RunRecord.read(run_dir)
    except RunRecordError as e:
        raise ExportError(str(e)) from None


def adapter_weights(adapter: Path) -> dict[str, Any]:
    """The tensors of a PEFT adapter folder (safetensors, or the older adapter_model.bin)."""
    if (adapter / "adapter_model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(adapter / "adapter_model.safetensors")
    import torch

    return torch.load(adapter / "adapter_model.bin", map_location="cpu", weights_only=True)
