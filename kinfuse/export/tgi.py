"""Hugging Face Text Generation Inference (TGI): what it serves and how to launch it.

TGI silently drops what it cannot map (DoRA magnitudes, rank patterns, trained embeddings,
unknown modules, weight files it does not read), so an export that breaks these rules serves
a different model from the one trained. The rules are checked before writing a `tgi-adapter`
export and again by `kinfuse verify`.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

from .errors import ExportError
from .source import LORA_SUFFIXES

TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference:latest"
LAUNCH_FILE = "tgi-launch.sh"
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


# -- adapters ------------------------------------------------------------------------------------


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


def portable_adapter_config(config: dict[str, Any]) -> dict[str, Any]:
    """adapter_config.json as the (possibly older) peft inside TGI can read it."""
    out = {}
    for k, v in config.items():
        if k in _CORE_CONFIG_KEYS or not (v in (None, False, {}, [], "") or _DEFAULTS.get(k) == v):
            out[k] = v
    out["inference_mode"] = True
    out["target_modules"] = sorted(out["target_modules"]) if isinstance(out.get("target_modules"), list) else out.get("target_modules")
    return out


def adapter_name(out: Path) -> str:
    """The name TGI serves the adapter under: the export folder's name, made safe."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", out.name).strip("-") or "adapter"


# -- tokenizer and serving limits -----------------------------------------------------------


def copy_tokenizer(source: Path, folder: Path) -> None:
    """The tokenizer files of `source`, with the chat template where TGI looks for it. The JSON
    ones must parse: a truncated tokenizer.json (a disk that filled while an older kinfuse saved
    it) is refused here rather than shipped to fail when the server starts."""
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            if name.endswith(".json"):
                try:
                    json.loads((source / name).read_text(encoding="utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise ExportError(f"{source / name} is damaged ({e}): it would ship a broken tokenizer; "
                                      "save the tokenizer again (rerun the infusion), or pass --base with the "
                                      "base model and remove the adapter's tokenizer files to use the base's") from None
            shutil.copy2(source / name, folder / name)
    # TGI reads the chat template from tokenizer_config.json; transformers 5 saves it to its own file.
    tc, jinja = folder / "tokenizer_config.json", folder / "chat_template.jinja"
    if tc.is_file() and jinja.is_file():
        data = json.loads(tc.read_text())
        if not data.get("chat_template"):
            data["chat_template"] = jinja.read_text()
            tc.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def serving_limits(config: dict[str, Any]) -> dict[str, int]:
    """TGI's token limits for a model with this config.json (at most 4096 tokens in all)."""
    cfg = config.get("text_config") or config
    longest = int(cfg.get("max_position_embeddings") or config.get("max_position_embeddings") or 2048)
    total = min(longest, 4096)
    inputs = total - min(1024, total // 4)
    return {"MAX_INPUT_LENGTH": inputs, "MAX_TOTAL_TOKENS": total, "MAX_BATCH_PREFILL_TOKENS": max(inputs, 4096)}


# -- the launch script ------------------------------------------------------------------------


def launch_script(*, model_dir: str, limits: dict[str, int], dtype: str | None, base: str | None = None,
                  adapter_name: str | None = None, prepare: str = "") -> str:
    """tgi-launch.sh: a `docker run` of TGI serving the export (with `base`: as a LoRA adapter on it)."""
    flags = (f"--max-input-tokens {limits['MAX_INPUT_LENGTH']} --max-total-tokens {limits['MAX_TOTAL_TOKENS']} "
             f"--max-batch-prefill-tokens {limits['MAX_BATCH_PREFILL_TOKENS']}")
    mounts = f'-v "$PWD/{model_dir}":/data' if model_dir else '-v "$PWD":/data'
    if base is None:
        model = f"--model-id /data --dtype {dtype}"
        env = ""
    else:
        env = ""
        if Path(base).is_dir():  # a local base checkpoint: mount it too
            mounts += f" -v {shlex.quote(str(Path(base).resolve()))}:/base:ro"
            model_id = "/base"
        else:  # a hub id: TGI downloads it (gated models need HF_TOKEN)
            model_id, env = base, "-e HF_TOKEN "
        model = f"--model-id {shlex.quote(model_id)} --lora-adapters {adapter_name}=/data"
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


def write_launch_script(folder: Path, **kwargs: Any) -> None:
    """`launch_script(**kwargs)` as an executable tgi-launch.sh in `folder`."""
    path = folder / LAUNCH_FILE
    path.write_text(launch_script(**kwargs))
    path.chmod(0o755)


# -- the file rules -----------------------------------------------------------------------------


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
