"""Folding a LoRA adapter into the base weights: a merged 16-bit checkpoint that serves as trained.

The base checkpoint is streamed tensor by tensor into shards, so memory holds one weight and one
shard, not the model. A run trained on an NF4 base is merged, by default, into the dequantized
NF4 weights it was trained against: each weight transformers would quantize is quantized with
the settings of kinfuse.models.load_model (NF4, double quantization, blocksize 64, in the run's
compute dtype) and dequantized, exactly as bitsandbytes did in training.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .checkpoint import checkpoint_files, open_weights
from .errors import ExportError
from .source import LORA_SUFFIXES, Source, adapter_weights
from .tgi import copy_tokenizer

MAX_SHARD_BYTES = 2 * 10**9  # output shards of at most 2 GB
NF4_BLOCKSIZE = 64  # bitsandbytes' Params4bit default, as transformers' BitsAndBytesConfig uses it
PREFIX = "base_model.model."  # what peft puts before the base model's own tensor names


# -- the NF4 weights training saw --------------------------------------------------------------


def skeleton(folder: Path) -> Any:
    """The model on the meta device (no memory): module types, tied weights, quantization skips."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def quantized_weights(model: Any) -> set[str]:
    """Names of the weights transformers quantizes to NF4 for this model (as kinfuse.models.load_model does)."""
    import torch
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    skip = HfQuantizer.get_modules_to_not_convert(model, None, model._keep_in_fp32_modules)
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        Conv1D = ()  # type: ignore[assignment]
    return {
        f"{name}.weight" for name, module in model.named_modules()
        if (type(module) is torch.nn.Linear or isinstance(module, Conv1D)) and should_convert_module(name, skip)
    }


def nf4_roundtrip(weight: Any, dtype: Any, device: Any = "cpu") -> Any:
    """dequantize_4bit(quantize_4bit(weight)) with the settings kinfuse trains with: the weights the adapter saw.

    The CUDA and CPU kernels of bitsandbytes break some ties differently, so a run trained on
    CUDA is rounded on CUDA when there is a GPU, and on the CPU, a few elements one NF4 step
    off, when there is none."""
    import bitsandbytes.functional as F
    import torch

    packed, state = F.quantize_4bit(weight.to(device=device, dtype=dtype).contiguous(), blocksize=NF4_BLOCKSIZE,
                                    compress_statistics=True, quant_type="nf4", quant_storage=torch.uint8)
    return F.dequantize_4bit(packed, state).cpu()


# -- the adapter, module by module ----------------------------------------------------------------


@dataclass
class _Module:
    """The adapter's weights for one base module."""

    name: str
    a: Any = None
    b: Any = None
    magnitude: Any = None
    embedding: bool = False


def _plan(src: Source, weights: dict[str, Any]) -> tuple[dict[str, _Module], dict[str, Any]]:
    """LoRA modules by base module name, and full tensors (modules_to_save, biases) by base tensor name."""
    cfg = src.adapter_config
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"{src.adapter_dir}: peft_type {cfg.get('peft_type')!r} is not LoRA; kinfuse merges LoRA adapters only")
    if cfg.get("lora_bias"):
        raise ExportError(f"{src.adapter_dir}: lora_bias adapters are not supported by the merge")
    modules: dict[str, _Module] = {}
    full: dict[str, Any] = {}
    for key, tensor in weights.items():
        if not key.startswith(PREFIX):
            raise ExportError(f"{src.adapter_dir}: unexpected adapter weight {key!r} (not a PEFT causal-LM adapter)")
        name = key[len(PREFIX):]
        suffix = next((s for s in LORA_SUFFIXES if name.endswith(s)), None)
        if suffix is None:
            if "trainable_tokens" in name or "token_adapter" in name:
                raise ExportError(f"{src.adapter_dir}: trainable_token_indices adapters are not supported by the merge")
            full[name.replace(".base_layer.", ".").replace(".modules_to_save.", ".")] = tensor
            continue
        m = modules.setdefault(name[: -len(suffix)], _Module(name[: -len(suffix)]))
        if suffix == ".lora_A.weight":
            m.a = tensor
        elif suffix == ".lora_B.weight":
            m.b = tensor
        elif suffix == ".lora_embedding_A":
            m.a, m.embedding = tensor, True
        elif suffix == ".lora_embedding_B":
            m.b, m.embedding = tensor, True
        else:
            m.magnitude = tensor
    for m in modules.values():
        if m.a is None or m.b is None:
            raise ExportError(f"{src.adapter_dir}: LoRA module {m.name} lacks its A or B matrix")
        if m.embedding and m.magnitude is not None:
            raise ExportError(f"{src.adapter_dir}: DoRA on embeddings is not supported by the merge")
    bad = [k for k, t in full.items() if not t.is_floating_point()]
    if bad:
        raise ExportError(f"{src.adapter_dir}: saved module {bad[0]} is not a float tensor (a quantized module_to_save?)")
    return modules, full


def _pattern_value(pattern: dict[str, Any], module: str, default: Any) -> Any:
    # peft: a pattern key matches a module name as a (regex) suffix at a module boundary
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _scaling(cfg: dict[str, Any], m: _Module) -> float:
    r = m.a.shape[0]
    alpha = _pattern_value(cfg.get("alpha_pattern") or {}, m.name, cfg.get("lora_alpha", 8))
    return alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r


def _merge_module(w: Any, m: _Module, cfg: dict[str, Any]) -> Any:
    """W' = W + scale * B @ A (DoRA: rescaled to the trained row norms), in fp32."""
    import torch

    scale = _scaling(cfg, m)
    a, b = m.a.float(), m.b.float()
    if m.embedding:
        delta = (b @ a).T * scale  # (num_embeddings, dim)
    else:
        delta = b @ a * scale  # (out, in)
        if cfg.get("fan_in_fan_out"):
            delta = delta.T
    if delta.shape != w.shape:
        raise ExportError(f"LoRA update of {m.name} has shape {tuple(delta.shape)} but the base weight is {tuple(w.shape)}: "
                          "the adapter was trained on another model (check --base)")
    merged = w + delta
    if m.magnitude is not None:
        rows = merged.T if cfg.get("fan_in_fan_out") else merged
        norm = torch.linalg.norm(rows, dim=1)
        factor = (m.magnitude.float() / norm).unsqueeze(1)
        merged = (factor * rows).T if cfg.get("fan_in_fan_out") else factor * rows
    return merged


# -- the output shards --------------------------------------------------------------------------


def write_shard(path: Path, tensors: dict[str, Any], metadata: dict[str, str]) -> None:
    """One safetensors file (a seam for tests that simulate a full disk)."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)


class _ShardWriter:
    """Collects output tensors and writes a safetensors shard each time `max_bytes` would be passed."""

    def __init__(self, folder: Path, max_bytes: int, dtype: Any):
        self.folder, self.max_bytes, self.dtype = folder, max_bytes, dtype
        self.current: dict[str, Any] = {}
        self.size = 0
        self.total_bytes = 0
        self.params = 0
        self.shards: list[tuple[Path, list[str]]] = []

    def add(self, name: str, tensor: Any) -> None:
        t = (tensor.to(self.dtype) if tensor.is_floating_point() else tensor).contiguous()
        nbytes = t.numel() * t.element_size()
        if self.current and self.size + nbytes > self.max_bytes:
            self.flush()
        self.current[name] = t
        self.size += nbytes
        self.total_bytes += nbytes
        self.params += t.numel()

    def flush(self) -> None:
        if not self.current:
            return
        path = self.folder / f".shard-{len(self.shards) + 1:05d}.partial"
        write_shard(path, self.current, {"format": "pt"})
        self.shards.append((path, list(self.current)))
        self.current, self.size = {}, 0

    def finish(self) -> list[str]:
        self.flush()
        n = len(self.shards)
        weight_map, names = {}, []
        for i, (path, keys) in enumerate(self.shards, 1):
            final = f"model-{i:05d}-of-{n:05d}.safetensors"
            path.rename(self.folder / final)
            names.append(final)
            weight_map.update({k: final for k in keys})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        return names


# -- the merge ------------------------------------------------------------------------------------


@dataclass
class MergeInfo:
    params: int
    shards: list[str]
    tied_embeddings: bool
    untied: bool
    merged_modules: int
    nf4_roundtrip_weights: int


def merge_into_folder(src: Source, base_folder: Path, folder: Path, *, dtype: str, merge_into: str,
                      max_shard_bytes: int = MAX_SHARD_BYTES, echo: Callable[[str], Any] = print) -> MergeInfo:
    """Write the merged checkpoint (shards, index, config, generation config, tokenizer) into `folder`."""
    import torch

    out_dtype = getattr(torch, dtype)
    quant_dtype = getattr(torch, src.quant_dtype)
    nf4_device = src.nf4_device()
    cfg = src.adapter_config
    modules, full = _plan(src, adapter_weights(src.adapter_dir))
    model = skeleton(base_folder)
    config = json.loads((base_folder / "config.json").read_text())
    quantized = quantized_weights(model) if merge_into == "dequantized" else set()
    # {tied weight: the weight it shares}, e.g. {"lm_head.weight": "model.embed_tokens.weight"}
    tied: dict[str, str] = dict(getattr(model, "all_tied_weights_keys", None) or {})
    del model
    changed = {f"{m}.weight" for m in modules} | set(full)
    untie = {t: s for t, s in tied.items() if t in changed or s in changed}
    by_source: dict[str, list[str]] = {}
    for t, s in untie.items():
        by_source.setdefault(s, []).append(t)
    files = checkpoint_files(base_folder)
    writer = _ShardWriter(folder, max_shard_bytes, out_dtype)
    used_modules: set[str] = set()
    used_full: set[str] = set()
    written: set[str] = set()
    rounded = 0

    def produce(name: str, tensor: Any) -> Any:
        nonlocal rounded
        if name in full:
            used_full.add(name)
            tensor = full[name]
        elif name in quantized:
            tensor = nf4_roundtrip(tensor, quant_dtype, nf4_device)
            rounded += 1
        module = name[: -len(".weight")] if name.endswith(".weight") else None
        if module in modules:
            used_modules.add(module)
            return _merge_module(tensor.float(), modules[module], cfg)
        return tensor

    echo(f"merging {len(modules)} LoRA module(s) into {base_folder} ({len(files)} file(s)), "
         f"into the {'dequantized NF4' if merge_into == 'dequantized' else 'original'} weights, as {dtype}")
    names: set[str] = set()
    for path in files:
        with open_weights(path) as f:
            names.update(f.keys())
    for path in files:
        with open_weights(path) as f:
            for name in f.keys():
                if name in written:
                    continue
                if name in tied and name not in untie and tied[name] in names:
                    continue  # a tied copy saved beside its source: transformers ties it back on load
                tensor = f.get_tensor(name)
                for target in by_source.get(name, []):
                    if target not in names and target not in written:  # the tie is broken: start from this original
                        writer.add(target, produce(target, tensor))
                        written.add(target)
                writer.add(name, produce(name, tensor))
                written.add(name)
                del tensor
    missing = sorted(set(modules) - used_modules) + sorted(set(full) - used_full)
    if missing:
        raise ExportError(f"the adapter changes {len(missing)} weight(s) that the base checkpoint {base_folder} does not "
                          f"have, such as {missing[0]!r}: the adapter was trained on another model (check --base)")
    shards = writer.finish()
    # config.json: 16-bit, unquantized, untied where the adapter changed one side of a tie
    config.pop("quantization_config", None)
    config["dtype"] = dtype
    config["torch_dtype"] = dtype  # what TGI and older transformers read
    if untie:
        config["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if (base_folder / "generation_config.json").is_file():
        shutil.copy2(base_folder / "generation_config.json", folder / "generation_config.json")
    else:
        gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config.get(k) is not None}
        (folder / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    copy_tokenizer(Path(src.tokenizer_dir(str(base_folder))), folder)
    return MergeInfo(writer.params, shards, bool(tied) and not untie, bool(untie), len(modules), rounded)
