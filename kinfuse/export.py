"""Export a trained adapter for serving, and verify an export against the model kinfuse trained.

    kinfuse export RUN_OR_ADAPTER --format tgi-adapter|merged|sagemaker --out DIR
    kinfuse verify DIR [--against RUN_OR_ADAPTER]

Formats:
- `tgi-adapter`: the PEFT adapter as TGI's `--lora-adapters` reads it (safetensors, plain LoRA on
  the projections TGI maps). Anything TGI would silently drop (DoRA magnitudes, rank/alpha
  patterns, trained embeddings, other modules) is refused, pointing at `--format merged`.
- `merged`: the LoRA folded into 16-bit weights, streamed tensor by tensor from the base
  checkpoint into shards of at most 2 GB (a 7B model merges in well under 24 GB of RAM). A run
  trained on an NF4 base is merged, by default, into the dequantized NF4 weights it was trained
  against: each quantized weight is quantized with the settings of kinfuse.models.load_model
  (NF4, double quantization, blocksize 64, in the run's compute dtype) and dequantized, on the CPU,
  exactly as bitsandbytes did in training.
- `sagemaker`: the merged layout as `model.tar.gz` (files at the archive root) or an uncompressed
  S3-prefix folder, with a `deploy.py` for the SageMaker Hugging Face LLM (TGI) container and an
  optional upload to S3.

Every export is written into a temporary folder next to the target and renamed into place at the
end, so a failure (a full disk included) never leaves a folder that looks complete. Each export
holds `tgi-launch.sh` (a ready `docker run` of TGI) and `kinfuse_export.json` (what was done).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import KinfuseError, ModelError

FORMATS = ("tgi-adapter", "merged", "sagemaker")
DTYPES = ("bfloat16", "float16")
MERGE_INTO = ("dequantized", "original")
MAX_SHARD_BYTES = 2 * 10**9  # output shards of at most 2 GB
NF4_BLOCKSIZE = 64  # bitsandbytes' Params4bit default, as transformers' BitsAndBytesConfig uses it
META_FILE = "kinfuse_export.json"
LAUNCH_FILE = "tgi-launch.sh"
TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference:latest"
# The module names TGI maps LoRA weights onto (text_generation_server/adapters/lora.py and the
# flash model classes); anything else in an adapter is ignored by TGI.
TGI_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"})
# TGI skips weight files whose names contain these; a merged export has none of them.
FORBIDDEN_NAME_PARTS = ("adapter", "args", "training")
NOT_SAFETENSORS = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".pkl")
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
    "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
)
PREFIX = "base_model.model."
LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector", ".lora_embedding_A", ".lora_embedding_B")


class ExportError(KinfuseError):
    """An export that cannot be made as asked: the message says why and what to do instead."""


class VerifyError(ExportError):
    """An export that does not reproduce the trained model or breaks TGI's file rules."""

    def __init__(self, report: "VerifyReport"):
        self.report = report
        super().__init__(report.summary())


# -- the source: a run dir or an adapter dir ----------------------------------------------


@dataclass
class Source:
    adapter_dir: Path
    run_dir: Path | None
    base_ref: str  # the base model as the run names it
    quantize: str | None  # "nf4" / "none" as trained, None when unknown (a bare adapter)
    quant_dtype: str  # compute dtype the NF4 weights were quantized in during training
    adapter_config: dict[str, Any]
    trained_on: str = "cpu"  # "cuda" or "cpu": where the NF4 weights were quantized

    def nf4_device(self) -> str:
        import torch

        return "cuda" if self.trained_on == "cuda" and torch.cuda.is_available() else "cpu"

    def base_path(self) -> str:
        """The base checkpoint as a local folder or a hub id (checked, not downloaded)."""
        from .models import resolve_model

        try:
            name = resolve_model(self.base_ref)
            return str(Path(name).absolute()) if Path(name).exists() else name
        except ModelError as e:
            raise ModelError(f"base model of {self.adapter_dir}: {e} (pass --base PATH to point at it)") from None

    def tokenizer_dir(self, base: str) -> str:
        has = any((self.adapter_dir / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"))
        return str(self.adapter_dir) if has else base


def load_source(source: str | os.PathLike, base: str | None = None) -> Source:
    """Read a run dir (adapter/ + metrics.json) or an adapter dir (adapter_config.json)."""
    path = Path(source).expanduser().absolute()
    if not path.exists():
        raise ExportError(f"no such run or adapter dir: {str(path)!r}")
    if not path.is_dir():
        raise ExportError(f"{str(path)!r} is a file: pass a run dir (with adapter/) or an adapter dir")
    metrics: dict[str, Any] | None = None
    run_dir: Path | None = None
    if (path / "adapter_config.json").is_file():
        adapter = path
        if path.name == "adapter" and (path.parent / "metrics.json").is_file():
            run_dir = path.parent
    elif (path / "adapter").is_dir() or (path / "metrics.json").is_file():
        run_dir, adapter = path, path / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            raise ExportError(
                f"run dir {str(path)!r} has no adapter ({adapter}/adapter_config.json is missing): the run did not "
                "finish training; rerun it, or export a checkpoint's adapter (checkpoints/step-N/adapter)"
            )
    else:
        raise ExportError(f"{str(path)!r} is neither a run dir (adapter/ + metrics.json) nor an adapter dir "
                          "(adapter_config.json)")
    if not (adapter / "adapter_model.safetensors").is_file() and not (adapter / "adapter_model.bin").is_file():
        raise ExportError(f"adapter dir {str(adapter)!r} has no adapter_model.safetensors")
    try:
        config = json.loads((adapter / "adapter_config.json").read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{adapter / 'adapter_config.json'}: not JSON ({e.msg})") from None
    if run_dir is not None and (run_dir / "metrics.json").is_file():
        try:
            metrics = json.loads((run_dir / "metrics.json").read_text())
        except json.JSONDecodeError as e:
            raise ExportError(f"{run_dir / 'metrics.json'}: not JSON ({e.msg})") from None
    quantize, quant_dtype, trained_on = None, "float32", "cpu"
    base_ref = base or config.get("base_model_name_or_path")
    if metrics is not None:
        train_cfg = (metrics.get("config") or {}).get("train") or {}
        quantize = train_cfg.get("quantize", "nf4")
        device = str((metrics.get("train") or {}).get("device") or "cpu")
        quant_dtype = (metrics.get("train") or {}).get("compute_dtype") or _trained_dtype(
            train_cfg.get("compute_dtype", "auto"), device)
        trained_on = "cuda" if device.startswith("cuda") else "cpu"
        base_ref = base or metrics.get("model") or base_ref
    elif (adapter.parent / "meta.json").is_file():  # a trainer checkpoint: checkpoints/step-N/adapter
        meta = json.loads((adapter.parent / "meta.json").read_text())
        quantize = (meta.get("lora") or {}).get("quantize")
        quant_dtype = meta.get("compute_dtype") or quant_dtype
        base_ref = base or meta.get("model") or base_ref
    if not base_ref:
        raise ExportError(f"{adapter}: no base model named (adapter_config.json has no base_model_name_or_path); "
                          "pass --base")
    return Source(adapter, run_dir, str(base_ref), quantize, quant_dtype, config, trained_on)


def _trained_dtype(name: str, device: str | None) -> str:
    """The compute dtype of a run that did not record it (kinfuse before 2026-11-26)."""
    if name and name != "auto":
        return name
    # kinfuse's "auto" then: bf16 on a GPU (fp16 on the few without bf16, which we cannot tell), fp32 on CPU
    return "bfloat16" if device and str(device).startswith("cuda") else "float32"


def _adapter_weights(adapter: Path) -> dict[str, Any]:
    if (adapter / "adapter_model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(adapter / "adapter_model.safetensors")
    import torch

    return torch.load(adapter / "adapter_model.bin", map_location="cpu", weights_only=True)


# -- TGI's rules for LoRA adapters ------------------------------------------------------------


def tgi_adapter_problems(config: dict[str, Any], keys: list[str], num_layers: int | None = None) -> list[str]:
    """What in this adapter TGI would refuse or silently ignore (empty: it serves as trained)."""
    p: list[str] = []
    if config.get("peft_type", "LORA") != "LORA":
        p.append(f"peft_type {config.get('peft_type')!r}: TGI serves only LoRA adapters")
    if config.get("use_dora"):
        p.append("DoRA (use_dora=true): TGI ignores the DoRA magnitude vectors")
    for name in ("rank_pattern", "alpha_pattern"):
        if config.get(name):
            p.append(f"{name} {config[name]}: TGI uses one r and lora_alpha for every module")
    if config.get("modules_to_save"):
        p.append(f"modules_to_save {config['modules_to_save']}: TGI does not load fully trained modules")
    if config.get("trainable_token_indices"):
        p.append("trainable_token_indices: TGI does not load trained token embeddings")
    if config.get("bias", "none") != "none" or config.get("lora_bias"):
        p.append("trained biases (bias / lora_bias): TGI ignores them")
    if config.get("layer_replication"):
        p.append("layer_replication: TGI does not replicate layers")
    full = [k for k in keys if not k.endswith(LORA_SUFFIXES)]
    if full:
        p.append(f"{len(full)} full tensor(s) such as {full[0]!r} (trained embeddings or modules): TGI ignores them")
    if any(k.endswith((".lora_embedding_A", ".lora_embedding_B")) for k in keys):
        p.append("LoRA on embeddings: TGI maps LoRA only onto linear projections")
    modules = {k[: k.rindex(".lora_")] for k in keys if ".lora_" in k}
    others = sorted({m.rsplit(".", 1)[-1] for m in modules} - TGI_MODULES)
    if others:
        p.append(f"target modules {others}: TGI maps only {', '.join(sorted(TGI_MODULES))}")
    # TGI drops a module type from every layer when one layer lacks it.
    layers: dict[str, set[int]] = {}
    for m in modules:
        found = re.search(r"\.layers\.(\d+)\.", m)
        if found:
            layers.setdefault(m.rsplit(".", 1)[-1], set()).add(int(found.group(1)))
    want = set(range(num_layers)) if num_layers else set().union(*layers.values()) if layers else set()
    partial = sorted(t for t, got in layers.items() if got != want)
    if partial or config.get("layers_to_transform"):
        p.append(f"LoRA on only some layers ({', '.join(partial) or 'layers_to_transform'}): TGI drops such a module "
                 "type from every layer")
    return p


# Keys that every peft version since LoRA support reads; newer keys are kept only when they
# carry a non-default value, so an older peft inside TGI can read the config.
_CORE_CONFIG_KEYS = {
    "base_model_name_or_path", "bias", "fan_in_fan_out", "inference_mode", "init_lora_weights", "lora_alpha",
    "lora_dropout", "modules_to_save", "peft_type", "r", "revision", "target_modules", "task_type", "use_rslora",
    "layers_pattern", "layers_to_transform", "rank_pattern", "alpha_pattern", "auto_mapping",
}
_DEFAULTS = {"megatron_core": "megatron.core", "qalora_group_size": 16}


def _portable_adapter_config(config: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in config.items():
        if k in _CORE_CONFIG_KEYS or not (v in (None, False, {}, [], "") or _DEFAULTS.get(k) == v):
            out[k] = v
    out["inference_mode"] = True
    out["target_modules"] = sorted(out["target_modules"]) if isinstance(out.get("target_modules"), list) else out.get("target_modules")
    return out


# -- the base checkpoint ---------------------------------------------------------------------


def _local_checkpoint(base: str) -> Path:
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
        from .models import load_hint

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


def _checkpoint_files(folder: Path) -> list[Path]:
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


def _open(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        return safe_open(str(path), framework="pt")
    return _BinReader(path)


def _skeleton(folder: Path) -> Any:
    """The model on the meta device (no memory): module types, tied weights, quantization skips."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _quantized_weights(model: Any) -> set[str]:
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

    The CUDA and CPU kernels of bitsandbytes break ties differently (measured on an H200: 0.03% of
    the elements of a bf16 run differ by one NF4 step), so a run trained on CUDA is rounded on CUDA
    when there is a GPU, and on the CPU, within that margin, when there is none."""
    import bitsandbytes.functional as F
    import torch

    packed, state = F.quantize_4bit(weight.to(device=device, dtype=dtype).contiguous(), blocksize=NF4_BLOCKSIZE,
                                    compress_statistics=True, quant_type="nf4", quant_storage=torch.uint8)
    return F.dequantize_4bit(packed, state).cpu()


# -- merging ------------------------------------------------------------------------------------


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


def _write_shard(path: Path, tensors: dict[str, Any], metadata: dict[str, str]) -> None:
    """One output shard (a seam for tests that simulate a full disk)."""
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
        _write_shard(path, self.current, {"format": "pt"})
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
    modules, full = _plan(src, _adapter_weights(src.adapter_dir))
    skeleton = _skeleton(base_folder)
    config = json.loads((base_folder / "config.json").read_text())
    quantized = _quantized_weights(skeleton) if merge_into == "dequantized" else set()
    # {tied weight: the weight it shares}, e.g. {"lm_head.weight": "model.embed_tokens.weight"}
    tied: dict[str, str] = dict(getattr(skeleton, "all_tied_weights_keys", None) or {})
    del skeleton
    changed = {f"{m}.weight" for m in modules} | set(full)
    untie = {t: s for t, s in tied.items() if t in changed or s in changed}
    by_source: dict[str, list[str]] = {}
    for t, s in untie.items():
        by_source.setdefault(s, []).append(t)
    files = _checkpoint_files(base_folder)
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
        with _open(path) as f:
            names.update(f.keys())
    for path in files:
        with _open(path) as f:
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
    _copy_tokenizer(Path(src.tokenizer_dir(str(base_folder))), folder)
    return MergeInfo(writer.params, shards, bool(tied) and not untie, bool(untie), len(modules), rounded)


def _copy_tokenizer(source: Path, folder: Path) -> None:
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, folder / name)
    # TGI reads the chat template from tokenizer_config.json; transformers 5 saves it to its own file.
    tc, jinja = folder / "tokenizer_config.json", folder / "chat_template.jinja"
    if tc.is_file() and jinja.is_file():
        data = json.loads(tc.read_text())
        if not data.get("chat_template"):
            data["chat_template"] = jinja.read_text()
            tc.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# -- serving helpers: TGI launch script, SageMaker sizes and deploy script --------------------------


def serving_limits(config: dict[str, Any]) -> dict[str, int]:
    cfg = config.get("text_config") or config
    longest = int(cfg.get("max_position_embeddings") or config.get("max_position_embeddings") or 2048)
    total = min(longest, 4096)
    inputs = total - min(1024, total // 4)
    return {"MAX_INPUT_LENGTH": inputs, "MAX_TOTAL_TOKENS": total, "MAX_BATCH_PREFILL_TOKENS": max(inputs, 4096)}


def suggest_instance(params: int) -> tuple[str, int]:
    """(SageMaker instance type, GPUs to shard over) for a 16-bit model of `params` parameters."""
    billions = params / 1e9
    if billions <= 3:
        return "ml.g5.xlarge", 1
    if billions <= 8:
        return "ml.g5.2xlarge", 1
    if billions <= 14:
        return "ml.g5.12xlarge", 4
    return "ml.p4d.24xlarge", 8


def _launch_script(*, model_dir: str, limits: dict[str, int], dtype: str | None, base: str | None = None,
                   adapter_name: str | None = None, prepare: str = "") -> str:
    flags = (f"--max-input-tokens {limits['MAX_INPUT_LENGTH']} --max-total-tokens {limits['MAX_TOTAL_TOKENS']} "
             f"--max-batch-prefill-tokens {limits['MAX_BATCH_PREFILL_TOKENS']}")
    mounts = f'-v "$PWD/{model_dir}":/data' if model_dir else '-v "$PWD":/data'
    if base is None:
        model = f"--model-id /data --dtype {dtype}"
        env = ""
    else:
        env = ""
        if Path(base).is_dir():  # a local base checkpoint: mount it too
            mounts += f" -v {_shell_quote(str(Path(base).resolve()))}:/base:ro"
            model_id = "/base"
        else:  # a hub id: TGI downloads it (gated models need HF_TOKEN)
            model_id, env = base, "-e HF_TOKEN "
        model = f"--model-id {_shell_quote(model_id)} --lora-adapters {adapter_name}=/data"
    return (
        "#!/usr/bin/env bash\n"
        "# Serve this export with Hugging Face Text Generation Inference on the GPUs of this machine,\n"
        "# then: curl localhost:8080/generate -X POST -H 'Content-Type: application/json' \\\n"
        "#   -d '{\"inputs\": \"Hello\", \"parameters\": {\"max_new_tokens\": 32}}'"
        + (f"\n#   (add \"adapter_id\": \"{adapter_name}\" to the parameters to use the adapter)" if base else "")
        + "\n# Generated by kinfuse export.\n"
        "set -euo pipefail\n"
        'cd "$(dirname "$0")"\n'
        + prepare
        + f"docker run --gpus all --shm-size 1g -p 8080:80 {env}{mounts} \\\n"
        f"  {TGI_IMAGE} \\\n"
        f"  {model} {flags} \"$@\"\n"
    )


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


DEPLOY_TEMPLATE = '''"""Deploy this model to a SageMaker real-time endpoint with the Hugging Face LLM (TGI) container.

Generated by kinfuse export. Needs the SageMaker Python SDK v2:  pip install "sagemaker>=2.200,<3"

    python deploy.py [--model-data S3_URI] [--role ROLE_ARN] [--instance-type TYPE] [--endpoint-name NAME]

--model-data defaults to where kinfuse uploaded the model ({tar_note}).
"""

import argparse

import sagemaker
from sagemaker.huggingface import HuggingFaceModel, get_huggingface_llm_image_uri

MODEL_DATA = {model_data!r}  # S3 URI of {what}
TARRED = {tarred!r}  # True: model.tar.gz; False: an uncompressed S3 prefix
INSTANCE_TYPE = {instance!r}  # suggested for {params_b:.2f}B parameters in {dtype}
ENV = {env}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-data", default=MODEL_DATA, help="s3:// URI of {what}")
    parser.add_argument("--role", help="IAM role ARN for SageMaker (default: the notebook's execution role)")
    parser.add_argument("--instance-type", default=INSTANCE_TYPE)
    parser.add_argument("--endpoint-name")
    parser.add_argument("--no-test", action="store_true", help="do not send a test request after deploying")
    args = parser.parse_args(argv)
    if not args.model_data:
        parser.error("pass --model-data s3://BUCKET/PREFIX{suffix} (upload first: {upload_hint})")
    model_data = args.model_data
    if not TARRED:
        model_data = {{"S3DataSource": {{"S3Uri": model_data.rstrip("/") + "/", "S3DataType": "S3Prefix",
                                         "CompressionType": "None"}}}}
    role = args.role or sagemaker.get_execution_role()
    model = HuggingFaceModel(
        model_data=model_data,
        role=role,
        image_uri=get_huggingface_llm_image_uri("huggingface"),
        env=ENV,
    )
    predictor = model.deploy(
        initial_instance_count=1,
        instance_type=args.instance_type,
        endpoint_name=args.endpoint_name,
        container_startup_health_check_timeout=900,
    )
    print("endpoint:", predictor.endpoint_name)
    if not args.no_test:
        print(predictor.predict({{"inputs": "Hello", "parameters": {{"max_new_tokens": 32}}}}))
    return predictor


if __name__ == "__main__":
    main()
'''


def _deploy_script(*, model_data: str | None, tarred: bool, params: int, dtype: str, limits: dict[str, int]) -> str:
    instance, gpus = suggest_instance(params)
    env = {"HF_MODEL_ID": "/opt/ml/model", "SM_NUM_GPUS": str(gpus), **{k: str(v) for k, v in limits.items()}}
    env_text = "{\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in env.items()) + "}"
    what = "model.tar.gz" if tarred else "the folder holding the model files"
    return DEPLOY_TEMPLATE.format(
        model_data=model_data, tarred=tarred, instance=instance, params_b=params / 1e9, dtype=dtype, env=env_text,
        what=what, suffix="/model.tar.gz" if tarred else "/",
        tar_note="kinfuse export --upload" if model_data else "none was given: pass --model-data",
        upload_hint="aws s3 cp model.tar.gz s3://BUCKET/PREFIX/" if tarred else "aws s3 sync model/ s3://BUCKET/PREFIX/",
    )


# -- S3 ----------------------------------------------------------------------------------------


def parse_s3_uri(uri: str) -> tuple[str, str]:
    found = re.fullmatch(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?", uri or "")
    if not found:
        raise ExportError(f"--upload {uri!r}: give an S3 URI like s3://bucket/prefix")
    return found.group(1), (found.group(2) or "").strip("/")


def upload_files(files: list[Path], uri: str, *, root: Path, echo: Callable[[str], Any] = print) -> list[str]:
    """Upload files (keys relative to `root`) under an s3:// prefix with boto3; returns the URIs.

    The endpoint and credentials are boto3's own: AWS_ENDPOINT_URL, AWS_PROFILE, AWS_ACCESS_KEY_ID, ...
    """
    bucket, prefix = parse_s3_uri(uri)
    try:
        import boto3
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise ExportError("--upload needs boto3: pip install 'kinfuse[sagemaker]'") from None
    s3 = boto3.client("s3")
    uris = []
    for path in files:
        key = "/".join(x for x in (prefix, path.relative_to(root).as_posix()) if x)
        echo(f"uploading {path.name} ({path.stat().st_size / 2**20:.1f} MiB) to s3://{bucket}/{key}")
        try:
            s3.upload_file(str(path), bucket, key)
        except (BotoCoreError, ClientError, Boto3Error) as e:
            raise ExportError(f"upload to s3://{bucket}/{key} failed: {e}") from e
        uris.append(f"s3://{bucket}/{key}")
    return uris


# -- export ------------------------------------------------------------------------------------


def _parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", size, re.I)
    if not found:
        raise ExportError(f"max shard size {size!r}: give bytes or e.g. '2GB', '500MB'")
    unit = (found.group(2) or "B").upper()
    mult = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}[unit]
    return int(float(found.group(1)) * mult)


def _estimate_bytes(folder: Path, dtype_bytes: int) -> int:
    """Bytes of the merged weights at `dtype_bytes` per parameter, from the checkpoint's headers."""
    total = 0
    for path in _checkpoint_files(folder):
        with _open(path) as f:
            for name in f.keys():
                piece = f.get_slice(name)
                shape = piece.get_shape() if hasattr(piece, "get_shape") else piece.shape
                total += math.prod(shape) * dtype_bytes
    return total


def _is_within(path: Path, other: Path) -> bool:
    try:
        path.relative_to(other)
        return True
    except ValueError:
        return False


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
    echo: Callable[[str], Any] = print,
) -> Path:
    """Export a run dir or adapter dir as `format` into `out`; returns the export folder.

    format: "tgi-adapter", "merged" or "sagemaker". dtype: the 16-bit type of merged weights.
    merge_into: "dequantized" (default for a run trained on NF4: the weights it was trained
    against) or "original" (the checkpoint's own weights). tar: sagemaker as model.tar.gz, or
    an uncompressed folder. upload: an s3://bucket/prefix to upload the export to (boto3).
    base: the base checkpoint, when the run's recorded one has moved.
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
    src = load_source(source, base)
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
                echo(f"note: {src.adapter_dir} has no run metrics telling how it was trained: merging into the "
                     "original weights (pass --merge-into dequantized for an adapter trained on an NF4 base)")
            merge_into = "dequantized" if src.quantize == "nf4" else "original"
        elif merge_into == "dequantized" and src.quantize == "none":
            raise ExportError("the run trained on unquantized weights (quantize='none'): there are no NF4 weights to "
                              "merge into; use --merge-into original")
        base_folder = _local_checkpoint(base_ref)
        if not (base_folder / "config.json").is_file():
            raise ModelError(f"base model {base_ref}: no config.json in {base_folder}")

    out.parent.mkdir(parents=True, exist_ok=True)
    if format != "tgi-adapter":  # refuse early rather than fill the disk
        need = _estimate_bytes(base_folder, 2) * (2 if format == "sagemaker" and tar else 1)
        free = shutil.disk_usage(out.parent).free
        if need > free:
            raise ExportError(f"not enough disk space for the export at {out.parent}: about {need / 1e9:.1f} GB "
                              f"needed, {free / 1e9:.1f} GB free")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    meta: dict[str, Any] = {
        "format": format, "source": str(Path(source).expanduser().absolute()), "adapter": str(src.adapter_dir.absolute()),
        "base_model": src.base_ref, "base_path": base_ref,
        "trained_quantize": src.quantize,
    }
    try:
        if format == "tgi-adapter":
            _export_adapter(src, staging, base_ref, out, meta)
        else:
            _export_merged(src, staging, base_folder, out, meta, dtype=dtype, merge_into=merge_into or "original",
                           max_bytes=max_bytes, sagemaker=format == "sagemaker", tar=tar, upload_to=upload, echo=echo)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        _replace(staging, out)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise ExportError(f"the disk filled up while writing the export to {out.parent}; nothing was left at {out}: "
                              "free some space or choose another --out") from e
        raise ExportError(f"writing the export to {out} failed: {e}") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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


def _replace(staging: Path, out: Path) -> None:
    """Put the finished export in place; an old one is removed only after the new one is there."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "x")
    try:
        os.replace(staging, out)
    except OSError:
        if old is not None:
            os.replace(old / "x", out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _adapter_name(out: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", out.name).strip("-") or "adapter"


def _export_adapter(src: Source, staging: Path, base_ref: str, out: Path, meta: dict[str, Any]) -> None:
    weights = _adapter_weights(src.adapter_dir)
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
        _write_shard(staging / "adapter_model.safetensors", {k: v.contiguous() for k, v in weights.items()},
                     {"format": "pt"})
    config = _portable_adapter_config(src.adapter_config)
    (staging / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    _copy_tokenizer(Path(src.tokenizer_dir(base_ref)), staging)
    base_config = Path(base_ref) / "config.json"
    limits = serving_limits(json.loads(base_config.read_text()) if base_config.is_file() else {})
    name = _adapter_name(out)
    (staging / LAUNCH_FILE).write_text(_launch_script(model_dir="", limits=limits, dtype=None, base=base_ref,
                                                      adapter_name=name))
    (staging / LAUNCH_FILE).chmod(0o755)
    meta.update({"adapter_name": name, "tgi": limits})


def _export_merged(src: Source, staging: Path, base_folder: Path, out: Path, meta: dict[str, Any], *, dtype: str,
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
    if not sagemaker:
        (staging / LAUNCH_FILE).write_text(_launch_script(model_dir="", limits=limits, dtype=dtype))
        (staging / LAUNCH_FILE).chmod(0o755)
        return
    instance, gpus = suggest_instance(info.params)
    model_data = None
    if upload_to:
        bucket, prefix = parse_s3_uri(upload_to)
        model_data = f"s3://{bucket}/" + "/".join(x for x in (prefix, "model.tar.gz" if tar else "") if x)
        if not tar:
            model_data = model_data.rstrip("/") + "/"
    if tar:
        echo(f"packing {model_dir.name}/ into model.tar.gz")
        with tarfile.open(staging / "model.tar.gz", "w:gz", compresslevel=1) as archive:
            for path in sorted(model_dir.iterdir()):
                archive.add(path, arcname=path.name, filter=_tar_filter)
        shutil.rmtree(model_dir)
        prepare = '[ -f model/config.json ] || { mkdir -p model && tar -xzf model.tar.gz -C model; }\n'
    else:
        prepare = ""
    (staging / "deploy.py").write_text(_deploy_script(model_data=model_data, tarred=tar, params=info.params,
                                                      dtype=dtype, limits=limits))
    (staging / LAUNCH_FILE).write_text(_launch_script(model_dir="model", limits=limits, dtype=dtype, prepare=prepare))
    (staging / LAUNCH_FILE).chmod(0o755)
    meta.update({"tar": tar, "instance_type": instance, "sm_num_gpus": gpus, "model_data": model_data})


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


# -- verify ------------------------------------------------------------------------------------

PROMPTS = (
    "The capital of France is",
    "Water boils at one hundred degrees",
    "Here is a short story about a river that flows from the mountains to the sea.",
)
CHAT_PROMPT = "What is the capital of France?"

# Runs in a fresh interpreter (`python -I -c`), importing only torch, transformers, peft and
# safetensors: the export is loaded exactly as a server or a user without kinfuse would.
_CHILD = r'''
import json, sys, warnings
args = json.loads(sys.argv[1])
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

dtype = getattr(torch, args["compute_dtype"])
info = {"warnings": []}
tok = AutoTokenizer.from_pretrained(args["tokenizer"])
info["chat"] = (tok.apply_chat_template([{"role": "user", "content": args["chat"]}], tokenize=False,
                                        add_generation_prompt=True) if getattr(tok, "chat_template", None) else None)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if args["kind"] == "adapter":
        from peft import PeftModel
        base = AutoModelForCausalLM.from_pretrained(args["base"], dtype=dtype)
        model = PeftModel.from_pretrained(base, args["path"])
    else:
        model, loading = AutoModelForCausalLM.from_pretrained(args["path"], dtype=dtype, output_loading_info=True)
        info["missing_keys"] = sorted(loading.get("missing_keys") or [])
        info["unexpected_keys"] = sorted(loading.get("unexpected_keys") or [])
        info["mismatched_keys"] = [str(k) for k in (loading.get("mismatched_keys") or [])]
        info["quantization_config"] = hasattr(model.config, "quantization_config")
info["warnings"] = [str(w.message)[:300] for w in caught if "adapter" in str(w.message).lower() and (
    "missing" in str(w.message).lower() or "unexpected" in str(w.message).lower())]
model.eval()
logits, ids_all = {}, []
with torch.no_grad():
    for i, text in enumerate(args["texts"]):
        ids = tok(text, return_tensors="pt").input_ids
        logits[f"logits_{i}"] = model(input_ids=ids).logits[0].float().contiguous()
        ids_all.append(ids[0].tolist())
info["ids"] = ids_all
info["kinfuse_imported"] = "kinfuse" in sys.modules
assert "kinfuse" not in sys.modules, "the export check imported kinfuse"
save_file(logits, args["out"] + ".safetensors")
with open(args["out"] + ".json", "w") as f:
    json.dump(info, f)
'''


@dataclass
class VerifyReport:
    path: str
    kind: str  # "merged", "adapter" or "sagemaker"
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reference: str = ""  # what the export was compared with
    export_dtype: str = ""
    compute_dtype: str = ""
    prompts: int = 0
    max_abs_diff: float = float("nan")  # max |export logits - reference logits| over prompts and positions
    tolerance: float = float("nan")  # the allowed max |difference| (for the prompt with the least headroom)
    logit_scale: float = float("nan")  # max |reference logits|
    adapter_effect: float = float("nan")  # max |reference - base model without the adapter|
    top1_agreement: float = float("nan")  # fraction of positions whose argmax token agrees

    def summary(self) -> str:
        head = f"verify {self.path} ({self.kind}): {'OK' if self.ok else 'FAILED'}"
        lines = [head]
        if self.prompts:
            lines.append(
                f"  max |logit difference| {self.max_abs_diff:.4g} (tolerance {self.tolerance:.4g}; logit scale "
                f"{self.logit_scale:.3g}; the adapter itself moves logits by up to {self.adapter_effect:.3g}; "
                f"top-1 agreement {self.top1_agreement:.1%}) over {self.prompts} prompts"
            )
            lines.append(f"  export loaded as {self.export_dtype} weights, computed in {self.compute_dtype}; "
                         f"reference: {self.reference}")
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tolerance(scale: float, weights: str, compute: str) -> float:
    """Allowed max |Δlogit| for reference logits of magnitude `scale`.

    Measured (tests/test_export.py, a random tiny Llama; SmolLM2-135M): a correct bf16 export of
    an NF4 run differs by up to ~3% of the logit scale (fp16: 8x less, the mantissa ratio), while
    a LoRA scale off by 10%, one module's LoRA missing or one weight zeroed differ by 40% or more.
    So bf16 allows 5% of the scale + 0.1, fp16 a quarter of that, fp32 weights (adapters) 1e-4."""
    if compute in ("bfloat16", "float16"):  # the export was run in 16 bits too (too large for fp32 here)
        rtol, atol = (0.08, 0.2) if compute == "bfloat16" else (0.03, 0.06)
    else:
        rtol, atol = {"bfloat16": (0.05, 0.1), "float16": (0.0125, 0.025)}.get(weights, (1e-4, 1e-3))
    return rtol * scale + atol


def check_files(folder: Path, kind: str) -> list[str]:
    """TGI's file rules for a merged model folder or an adapter folder."""
    p: list[str] = []
    files = [f for f in folder.iterdir() if f.is_file()]
    names = {f.name for f in files}
    for f in files:
        if f.name.endswith(NOT_SAFETENSORS):
            p.append(f"{f.name}: TGI reads weights only as safetensors")
    if kind == "adapter":
        for need in ("adapter_config.json", "adapter_model.safetensors"):
            if need not in names:
                p.append(f"missing {need}")
        return p
    weights = sorted(f.name for f in files if f.name.endswith(".safetensors"))
    if not weights:
        p.append("no .safetensors weight files")
    for name in weights:
        bad = [part for part in FORBIDDEN_NAME_PARTS if part in name]
        if bad:
            p.append(f"weight file {name}: TGI skips or misreads files whose names contain {bad[0]!r}")
    if "config.json" not in names:
        p.append("missing config.json")
    else:
        config = json.loads((folder / "config.json").read_text())
        if "quantization_config" in config:
            p.append("config.json has a quantization_config: TGI would load the 16-bit weights as quantized")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        mapped = set(json.loads(index.read_text()).get("weight_map", {}).values())
        for name in sorted(mapped - names):
            p.append(f"model.safetensors.index.json names {name}, which is missing")
        for name in sorted(set(weights) - mapped - {"model.safetensors"}):
            p.append(f"{name} is not in model.safetensors.index.json")
    elif len(weights) > 1:
        p.append("several weight files but no model.safetensors.index.json")
    if not names & {"tokenizer.json", "tokenizer.model"}:
        p.append("no tokenizer (tokenizer.json or tokenizer.model)")
    return p


def check_tar(path: Path) -> list[str]:
    p: list[str] = []
    try:
        with tarfile.open(path, "r:gz") as archive:
            members = archive.getmembers()
    except (tarfile.TarError, OSError, EOFError) as e:
        return [f"{path.name} is not a readable .tar.gz: {e}"]
    for m in members:
        if not m.isfile():
            p.append(f"{path.name}: member {m.name!r} is not a plain file (SageMaker wants every file at the root)")
        elif "/" in m.name.strip("/") or m.name.startswith(("./", "/")):
            p.append(f"{path.name}: member {m.name!r} is not at the archive root")
    if not any(m.name == "config.json" for m in members):
        p.append(f"{path.name}: no config.json at the archive root")
    return p


def _child_dtype(folder: Path, export_dtype: str) -> str:
    """fp32 compute when the upcast model fits comfortably in memory, else the export's own dtype."""
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        avail = 0
    factor = 2 if export_dtype in DTYPES else 1
    return "float32" if not avail or size * factor < 0.4 * avail else export_dtype


class _Child:
    """The export loaded by plain transformers in a fresh interpreter, started now, read by `result()`."""

    def __init__(self, args: dict[str, Any], timeout: float):
        self._tmp = tempfile.TemporaryDirectory(prefix="kinfuse-verify-")
        self.args = {**args, "out": str(Path(self._tmp.name) / "result")}
        self.timeout = timeout
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
        self.proc = subprocess.Popen([sys.executable, "-I", "-c", _CHILD, json.dumps(self.args)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd=self._tmp.name)

    def result(self) -> tuple[dict[str, Any], dict[str, Any]]:
        from safetensors.torch import load_file

        try:
            try:
                stdout, stderr = self.proc.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
                raise ExportError(f"loading the export with plain transformers took over {self.timeout:.0f} s") from None
            if self.proc.returncode != 0:
                tail = "\n".join((stderr or stdout).strip().splitlines()[-6:])
                raise ExportError(f"plain transformers{'/peft' if self.args['kind'] == 'adapter' else ''} could not "
                                  f"load the export:\n{tail}")
            out = Path(self.args["out"])
            return json.loads(out.with_suffix(".json").read_text()), load_file(str(out.with_suffix(".safetensors")))
        finally:
            self._tmp.cleanup()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        self._tmp.cleanup()


def _reference_logits(src: Source, base: str, quantize: str, ids: list[list[int]],
                      quant_dtype: str = "float32") -> tuple[list[Any], list[Any]]:
    """Logits of the adapted model as kinfuse trained it (and of the base without the adapter), fp32 on CPU.

    NF4 weights are quantized from the weights cast to the run's compute dtype, as in training
    (a bf16 GPU run quantized bf16 weights), then everything computes in fp32."""
    import torch
    from peft import PeftModel

    from .models import load_model

    load_dtype = getattr(torch, quant_dtype) if quantize == "nf4" else torch.float32
    model = load_model(base, quantize=quantize, compute_dtype=load_dtype, device=torch.device("cpu"))
    for module in model.modules():
        # bitsandbytes' CPU inference shortcut (eval mode, AVX512-BF16) repacks NF4 weights and computes
        # approximately; training ran the exact dequantize + matmul, so the reference must too.
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
        if hasattr(module, "compute_dtype"):
            module.compute_dtype = torch.float32
    if load_dtype != torch.float32:
        for p in list(model.parameters()) + list(model.buffers()):
            if p.is_floating_point() and p.dtype != torch.float32 and p.dtype != torch.uint8:
                p.data = p.data.float()
    model = PeftModel.from_pretrained(model, str(src.adapter_dir)).eval()
    adapted, plain = [], []
    with torch.no_grad():
        for row in ids:
            x = torch.tensor([row])
            adapted.append(model(input_ids=x).logits[0].float())
            with model.disable_adapter():
                plain.append(model(input_ids=x).logits[0].float())
    return adapted, plain


def verify(path: str | os.PathLike, against: str | os.PathLike | None = None, *, base: str | None = None,
           check: bool = True, compare: bool = True, timeout: float = 1800,
           echo: Callable[[str], Any] = print) -> VerifyReport:
    """Load an export with plain transformers (and peft) in a subprocess that does not import
    kinfuse, and compare its logits with the adapted model kinfuse trained; check TGI's file rules.

    compare=False checks only the files (layout, names, config, archive), loading no model.
    Returns the report; raises VerifyError when `check` and the export fails."""
    folder = Path(path).expanduser().absolute()
    if not folder.is_dir():
        raise ExportError(f"no such export folder: {str(folder)!r}")
    meta = json.loads((folder / META_FILE).read_text()) if (folder / META_FILE).is_file() else {}
    with tempfile.TemporaryDirectory(prefix="kinfuse-verify-tar-") as tmp:
        if (folder / "model.tar.gz").is_file():
            kind = "sagemaker"
            problems = check_tar(folder / "model.tar.gz")
            if not problems:
                with tarfile.open(folder / "model.tar.gz", "r:gz") as archive:
                    archive.extractall(tmp, filter="data")
            model_dir = Path(tmp)
        elif (folder / "model" / "config.json").is_file() and (folder / "deploy.py").is_file():
            kind, problems, model_dir = "sagemaker", [], folder / "model"
        elif (folder / "adapter_config.json").is_file():
            kind, problems, model_dir = "adapter", [], folder
        elif (folder / "config.json").is_file():
            kind, problems, model_dir = "merged", [], folder
        else:
            raise ExportError(f"{folder} is not an export (no config.json, adapter_config.json or model.tar.gz)")
        report = VerifyReport(path=str(folder), kind=kind, problems=problems)
        if kind == "sagemaker" and not (folder / "deploy.py").is_file():
            report.problems.append("no deploy.py next to the model")
        if not (folder / LAUNCH_FILE).is_file():
            report.notes.append(f"no {LAUNCH_FILE}")
        if not report.problems:
            report.problems += check_files(model_dir, "adapter" if kind == "adapter" else "merged")
        source = against or meta.get("source")
        if not compare:
            report.notes.append("files only: the logits were not compared")
        elif not source:
            report.problems.append(f"nothing to compare with: pass --against RUN_OR_ADAPTER (no {META_FILE} here)")
        elif not report.problems:
            _compare(report, model_dir, load_source(source, base or meta.get("base_path")), meta, kind, timeout, echo)
    report.ok = not report.problems
    if check and not report.ok:
        raise VerifyError(report)
    return report


def _compare(report: VerifyReport, model_dir: Path, src: Source, meta: dict[str, Any], kind: str, timeout: float,
             echo: Callable[[str], Any]) -> None:
    base = src.base_path()
    if kind == "adapter":
        problems = tgi_adapter_problems(json.loads((model_dir / "adapter_config.json").read_text()),
                                        list(_adapter_weights(model_dir)))
        report.problems += [f"TGI: {p}" for p in problems]
        report.export_dtype = str(next(iter(_adapter_weights(model_dir).values())).dtype).replace("torch.", "")
        report.compute_dtype = "float32"
        quantize = "none"
        report.reference = f"{base} (unquantized, fp32) + {src.adapter_dir} with peft, as TGI applies the adapter"
    else:
        config = json.loads((model_dir / "config.json").read_text())
        report.export_dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
        report.compute_dtype = _child_dtype(model_dir, report.export_dtype)
        merged_into = meta.get("merge_into") or ("dequantized" if src.quantize == "nf4" else "original")
        quantize = "nf4" if merged_into == "dequantized" else "none"
        report.reference = (f"{base} ({'NF4 as trained' if quantize == 'nf4' else 'original weights'}, computed in "
                            f"fp32) + {src.adapter_dir} with peft")
        if quantize == "none" and src.quantize == "nf4":
            report.notes.append("this export was merged into the original weights, not the NF4 ones the adapter "
                                "was trained against: compared with base + adapter unquantized")
    from .models import load_tokenizer

    tokenizer = load_tokenizer(src.tokenizer_dir(base))
    texts = list(PROMPTS)
    chat = (tokenizer.apply_chat_template([{"role": "user", "content": CHAT_PROMPT}], tokenize=False,
                                          add_generation_prompt=True) if tokenizer.chat_template else None)
    texts += [chat] if chat else []
    ids = [tokenizer(t).input_ids for t in texts]
    args = {"kind": "adapter" if kind == "adapter" else "merged", "path": str(model_dir), "base": base,
            "tokenizer": str(model_dir) if kind != "adapter" or (model_dir / "tokenizer_config.json").is_file() else base,
            "compute_dtype": report.compute_dtype, "texts": texts, "chat": CHAT_PROMPT}
    # A small model: the subprocess and the reference run side by side; a large one: one after the other.
    small = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) < 2**30
    echo(f"loading the export with plain transformers in a subprocess ({report.compute_dtype})")
    child = _Child(args, timeout)
    try:
        if not small:
            info, logits = child.result()
        echo(f"computing the reference: {report.reference}")
        adapted, plain = _reference_logits(src, base, quantize, ids, ((meta.get("nf4") or {}).get("dtype")
                                                                      or src.quant_dtype))
        if small:
            info, logits = child.result()
    except ExportError as e:
        report.problems.append(str(e))
        return
    finally:
        child.stop()
    if info.get("kinfuse_imported"):
        report.problems.append("the export check imported kinfuse")
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(key):
            report.problems.append(f"transformers reports {key.replace('_', ' ')}: {info[key][:5]}")
    if info.get("quantization_config"):
        report.problems.append("the loaded config has a quantization_config")
    report.problems += [f"peft: {w}" for w in info.get("warnings", [])]
    if info.get("chat") != chat:
        report.problems.append("the export's chat template differs from the run's" if chat and info.get("chat")
                               else "the export's tokenizer has no chat template" if chat
                               else "the export has a chat template the run's tokenizer lacks")
    if not chat:
        report.notes.append("the run's tokenizer has no chat template")
    if info["ids"] != ids:
        report.problems.append("the export's tokenizer encodes the prompts differently from the run's")
        return
    report.prompts = len(adapted)
    worst = -math.inf
    diffs, scales, effects, agree, total = [], [], [], 0, 0
    for i, (ref, without) in enumerate(zip(adapted, plain)):
        got = logits[f"logits_{i}"]
        if got.shape != ref.shape:
            report.problems.append(f"logits of prompt {i} have shape {tuple(got.shape)}, expected {tuple(ref.shape)}")
            return
        diff = (got - ref).abs().max().item()
        scale = ref.abs().max().item()
        tol = tolerance(scale, report.export_dtype, report.compute_dtype)
        if not math.isfinite(diff) or diff - tol > worst:
            worst = diff - tol if math.isfinite(diff) else math.inf
            report.tolerance = tol
        diffs.append(diff)
        scales.append(scale)
        effects.append((ref - without).abs().max().item())
        agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
        total += ref.shape[0]
    report.max_abs_diff = max(diffs)
    report.logit_scale = max(scales)
    report.adapter_effect = max(effects)
    report.top1_agreement = agree / max(1, total)
    if worst > 0:
        report.problems.append(
            f"logits differ from the trained model by up to {report.max_abs_diff:.4g}, over the tolerance "
            f"{report.tolerance:.4g} for {report.export_dtype} weights (the adapter's own effect is "
            f"{report.adapter_effect:.3g}): the export does not reproduce the trained model"
        )
    if report.adapter_effect < report.tolerance:
        report.notes.append(f"the adapter moves logits by at most {report.adapter_effect:.3g}, under the tolerance: "
                            "this check cannot tell it from no adapter at all")
