"""The base checkpoint, read tensor by tensor: merging streams it so that no more than one
weight (plus the shard being written) is in memory at a time, whatever the model's size."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import ModelError


def local_checkpoint(base: str) -> Path:
    """A local folder with the base checkpoint's config and weights (a hub id is fetched or read from the cache)."""
    path = Path(base)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        common = ["*.json", "tokenizer*", "*.model", "*.txt", "*.jinja"]
        folder = Path(snapshot_download(base, allow_patterns=common + ["*.safetensors"]))
        if not list(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(base, allow_patterns=common + ["*.bin"]))
    except Exception as e:  # hub errors come in many types; all mean "cannot get the base"
        from ..models import load_hint

        raise ModelError(load_hint(base, e)) from e
    return folder


class _BinReader:
    """safe_open's interface over a PyTorch .bin checkpoint (memory-mapped, not read whole)."""

    def __init__(self, path: Path):
        import torch

        self._state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)

    def keys(self) -> list[str]:
        return list(self._state)

    def get_tensor(self, name: str) -> Any:
        return self._state[name].clone()

    def get_slice(self, name: str) -> Any:
        return self._state[name]

    def __enter__(self) -> "_BinReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._state = {}


def checkpoint_files(folder: Path) -> list[Path]:
    """The checkpoint's weight files, in the order its index names them."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = folder / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = list(dict.fromkeys(weight_map.values()))
            missing = [f for f in files if not (folder / f).is_file()]
            if missing:
                raise ModelError(f"base checkpoint {folder} is incomplete: {missing[0]} (named by {index_name}) is missing")
            return [folder / f for f in files]
        if (folder / single).is_file():
            return [folder / single]
    found = sorted(p.name for p in folder.glob("*.safetensors"))
    if found:
        return [folder / f for f in found]
    raise ModelError(f"base checkpoint {folder} has no weights (no model.safetensors, index or pytorch_model.bin)")


def open_weights(path: Path) -> Any:
    """One weight file as a context manager with keys(), get_tensor() and get_slice()."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        return safe_open(str(path), framework="pt")
    return _BinReader(path)


def estimate_bytes(folder: Path, dtype_bytes: int) -> int:
    """Bytes of the merged weights at `dtype_bytes` per parameter, from the checkpoint's headers."""
    total = 0
    for path in checkpoint_files(folder):
        with open_weights(path) as f:
            for name in f.keys():
                piece = f.get_slice(name)
                shape = piece.get_shape() if hasattr(piece, "get_shape") else piece.shape
                total += math.prod(shape) * dtype_bytes
    return total
