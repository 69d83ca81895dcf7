"""`export()`: one run or adapter into one serving format, written whole or not at all.

Every export is filled in a staging folder beside the target (kinfuse.io.staged_dir) that takes
its place only when complete, so a failure, a full disk included, never leaves a folder that
looks complete, and --overwrite keeps the old export until the new one is there. The files
inside the staging folder are written plainly: the folder is the unit that appears atomically.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from .. import io
from ..errors import ModelError
from . import merge
from .checkpoint import estimate_bytes, local_checkpoint
from .errors import ExportError
from .merge import MAX_SHARD_BYTES, NF4_BLOCKSIZE, merge_into_folder
from .sagemaker import package, parse_s3_uri, upload_files
from .source import Source, adapter_weights, load_source
from .tgi import (adapter_name, copy_tokenizer, portable_adapter_config, serving_limits, tgi_adapter_problems,
                  write_launch_script)

FORMATS = ("tgi-adapter", "merged", "sagemaker")
DTYPES = ("bfloat16", "float16")
MERGE_INTO = ("dequantized", "original")
META_FILE = "kinfuse_export.json"  # what was exported from where, and how; verify reads it


def export(
    source: str | os.PathLike,
    format: str = "merged",
    out: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    dtype: str = "bfloat16",
    merge_into: str | None = None,
    tar: bool = True,
    upload: str | None = None,
    base: str | None = None,
    max_shard_size: int | str = MAX_SHARD_BYTES,
    allow_incomplete: bool = False,
    echo: Callable[[str], Any] = print,
) -> Path:
    """Export a run dir or adapter dir as `format` into `out`; returns the export folder.

    format: "tgi-adapter", "merged" or "sagemaker". dtype: the 16-bit type of merged weights.
    merge_into: "dequantized" (default for a run trained on NF4: the weights it was trained
    against) or "original" (the checkpoint's own weights). tar: sagemaker as model.tar.gz, or
    an uncompressed folder. upload: an s3://bucket/prefix to upload the export to (boto3).
    base: the base checkpoint, when the run's recorded one has moved. allow_incomplete: export
    a run whose training was interrupted or failed (refused by default: its adapter is partial).
    """
    if format not in FORMATS:
        raise ExportError(f"format {format!r}: choose one of {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise ExportError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if merge_into is not None and merge_into not in MERGE_INTO:
        raise ExportError(f"merge_into {merge_into!r}: choose one of {', '.join(MERGE_INTO)}")
    if out is None:
        raise ExportError("give an output folder (--out DIR)")
    if upload:
        parse_s3_uri(upload)
    max_bytes = _parse_size(max_shard_size)
    out = Path(out).expanduser().absolute()
    src = load_source(source, base, allow_incomplete=allow_incomplete)
    if src.record is not None and (why := src.record.why_incomplete()):  # allow_incomplete: load_source refuses otherwise
        echo(f"note: exporting anyway (allow_incomplete): run {src.run_dir} is not complete "
             f"(run.json status {src.record.status!r}): {why}")
    if out.exists() and not overwrite:
        raise ExportError(f"output folder {out} exists: pass --overwrite to replace it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise ExportError(f"output path {out} is a file, not a folder")
    for protected in filter(None, (src.adapter_dir, src.run_dir)):
        if _is_within(protected.resolve(), out.resolve()):
            raise ExportError(f"output folder {out} holds the source {protected}: choose another --out")
    base_ref = src.base_path()
    if Path(base_ref).is_dir() and _is_within(Path(base_ref).resolve(), out.resolve()):
        raise ExportError(f"output folder {out} holds the base model {base_ref}: choose another --out")

    if format != "tgi-adapter":
        if merge_into is None:
            if src.quantize is None:
                echo(f"note: {src.adapter_dir} has no run record telling how it was trained: merging into the "
                     "original weights (pass --merge-into dequantized for an adapter trained on an NF4 base)")
            merge_into = "dequantized" if src.quantize == "nf4" else "original"
        elif merge_into == "dequantized" and src.quantize == "none":
            raise ExportError("the run trained on unquantized weights (quantize='none'): there are no NF4 weights to "
                              "merge into; use --merge-into original")
        base_folder = local_checkpoint(base_ref)
        if not (base_folder / "config.json").is_file():
            raise ModelError(f"base model {base_ref}: no config.json in {base_folder}")

    out.parent.mkdir(parents=True, exist_ok=True)
    if format != "tgi-adapter":  # refuse early rather than fill the disk
        need = estimate_bytes(base_folder, 2) * (2 if format == "sagemaker" and tar else 1)
        free = shutil.disk_usage(out.parent).free
        if need > free:
            raise ExportError(f"not enough disk space for the export at {out.parent}: about {need / 1e9:.1f} GB "
                              f"needed, {free / 1e9:.1f} GB free")
    meta: dict[str, Any] = {
        "format": format, "source": str(Path(source).expanduser().absolute()), "adapter": str(src.adapter_dir.absolute()),
        "base_model": src.base_ref, "base_path": base_ref,
        "trained_quantize": src.quantize,
        "run_status": src.record.status if src.record is not None else None,
    }
    try:
        with io.staged_dir(out) as staging:
            if format == "tgi-adapter":
                _export_adapter(src, staging, base_ref, out, meta)
            else:
                _export_merged(src, staging, base_folder, meta, dtype=dtype, merge_into=merge_into or "original",
                               max_bytes=max_bytes, sagemaker=format == "sagemaker", tar=tar, upload_to=upload,
                               echo=echo)
            (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise ExportError(f"the disk filled up while writing the export to {out.parent}; nothing was left at {out}: "
                              "free some space or choose another --out") from e
        raise ExportError(f"writing the export to {out} failed: {e}") from e
    echo(f"wrote {format} export to {out}")
    if upload:
        if format == "sagemaker":
            files = [out / "model.tar.gz"] if tar else sorted(p for p in (out / "model").iterdir() if p.is_file())
            root = out if tar else out / "model"
        else:
            files, root = sorted(p for p in out.iterdir() if p.is_file()), out
        try:
            upload_files(files, upload, root=root, echo=echo)
        except ExportError as e:
            raise ExportError(f"{e}\nthe export itself is complete at {out}; rerun with --overwrite to upload again") from e
    return out


def _parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", size, re.I)
    if not found:
        raise ExportError(f"max shard size {size!r}: give bytes or e.g. '2GB', '500MB'")
    unit = (found.group(2) or "B").upper()
    mult = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}[unit]
    return int(float(found.group(1)) * mult)


def _is_within(path: Path, other: Path) -> bool:
    try:
        path.relative_to(other)
        return True
    except ValueError:
        return False


def _export_adapter(src: Source, staging: Path, base_ref: str, out: Path, meta: dict[str, Any]) -> None:
    weights = adapter_weights(src.adapter_dir)
    num_layers = None
    if Path(base_ref).is_dir() and (Path(base_ref) / "config.json").is_file():
        bc = json.loads((Path(base_ref) / "config.json").read_text())
        num_layers = (bc.get("text_config") or bc).get("num_hidden_layers")
    problems = tgi_adapter_problems(src.adapter_config, list(weights), num_layers)
    if problems:
        raise ExportError(
            f"{src.adapter_dir} cannot be served by TGI as a LoRA adapter:\n  - " + "\n  - ".join(problems)
            + "\nexport it with --format merged instead (the adapter folded into the weights serves as trained)"
        )
    if (src.adapter_dir / "adapter_model.safetensors").is_file():
        shutil.copy2(src.adapter_dir / "adapter_model.safetensors", staging / "adapter_model.safetensors")
    else:  # TGI reads adapters only as safetensors
        merge.write_shard(staging / "adapter_model.safetensors", {k: v.contiguous() for k, v in weights.items()},
                          {"format": "pt"})
    config = portable_adapter_config(src.adapter_config)
    (staging / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    copy_tokenizer(Path(src.tokenizer_dir(base_ref)), staging)
    base_config = Path(base_ref) / "config.json"
    limits = serving_limits(json.loads(base_config.read_text()) if base_config.is_file() else {})
    name = adapter_name(out)
    write_launch_script(staging, model_dir="", limits=limits, dtype=None, base=base_ref, adapter_name=name)
    meta.update({"adapter_name": name, "tgi": limits})


def _export_merged(src: Source, staging: Path, base_folder: Path, meta: dict[str, Any], *, dtype: str,
                   merge_into: str, max_bytes: int, sagemaker: bool, tar: bool, upload_to: str | None,
                   echo: Callable[[str], Any]) -> None:
    model_dir = staging / "model" if sagemaker else staging
    model_dir.mkdir(exist_ok=True)
    info = merge_into_folder(src, base_folder, model_dir, dtype=dtype, merge_into=merge_into,
                             max_shard_bytes=max_bytes, echo=echo)
    limits = serving_limits(json.loads((model_dir / "config.json").read_text()))
    meta.update({
        "dtype": dtype, "merge_into": merge_into, **asdict(info), "tgi": limits,
        "nf4": ({"quant_type": "nf4", "double_quant": True, "blocksize": NF4_BLOCKSIZE, "dtype": src.quant_dtype,
                 "trained_on": src.trained_on, "rounded_on": src.nf4_device()} if merge_into == "dequantized" else None),
    })
    if sagemaker:
        meta.update(package(staging, model_dir, params=info.params, dtype=dtype, limits=limits, tar=tar,
                            upload_to=upload_to, echo=echo))
    else:
        write_launch_script(staging, model_dir="", limits=limits, dtype=dtype)
