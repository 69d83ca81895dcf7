"""Tensor shapes of an export (or an adapter) against the base checkpoint, read from the
safetensors headers only: a wrong-shape tensor is reported by name, as a problem of the
verify report, before any model is loaded (loading it would fail, or silently skip it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .checkpoint import checkpoint_files, open_weights

ADAPTER_PREFIX = "base_model.model."


def tensor_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the weight files (headers only)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        with open_weights(path) as f:
            for name in f.keys():
                piece = f.get_slice(name)
                shapes[name] = tuple(piece.get_shape() if hasattr(piece, "get_shape") else piece.shape)
    return shapes


def base_shapes(base_folder: Path) -> dict[str, tuple[int, ...]]:
    return tensor_shapes(checkpoint_files(base_folder))


def merged_shape_problems(folder: Path, base: dict[str, tuple[int, ...]]) -> list[str]:
    """Each tensor of a merged model folder whose shape differs from the base's same tensor."""
    got = tensor_shapes(sorted(folder.glob("*.safetensors")))
    return [f"tensor {name} has shape {list(shape)}, the base model's has {list(base[name])}"
            for name, shape in sorted(got.items()) if name in base and base[name] != shape]


def adapter_shape_problems(adapter_file: Path, base: dict[str, tuple[int, ...]], what: str = "tensor") -> list[str]:
    """Each LoRA tensor of a PEFT adapter file that does not fit the base module it adapts:
    lora_A is (r, in_features), lora_B (out_features, r), with the same r."""
    got = tensor_shapes([adapter_file])
    problems = []
    for name, shape in sorted(got.items()):
        for part, pos in ((".lora_A.weight", "in"), (".lora_B.weight", "out")):
            if not name.endswith(part):
                continue
            module = name[: -len(part)].removeprefix(ADAPTER_PREFIX)
            weight = base.get(module + ".weight")
            other = got.get(name[: -len(part)] + (".lora_B.weight" if pos == "in" else ".lora_A.weight"))
            if weight is None or len(weight) != 2:
                continue
            want = [_rank(shape, other, pos), weight[1]] if pos == "in" else [weight[0], _rank(shape, other, pos)]
            if len(shape) != 2 or list(shape) != want:
                problems.append(f"{what} {name} has shape {list(shape)}, {module} of the base model needs {want}")
    return problems


def _rank(shape: tuple[int, ...], other: Any, pos: str) -> int:
    """The LoRA rank as the partner tensor states it (lora_B's columns, lora_A's rows)."""
    if other is not None and len(other) == 2:
        return other[1] if pos == "in" else other[0]
    return shape[0] if pos == "in" else shape[-1]
