"""FSDP-QLoRA loading shard by shard: no process ever holds the whole model's weights.

The whole-model way (fsdp_loading = "whole") has every process load and quantize the whole
model before FSDP cuts it, so a model whose NF4 weights do not fit one card cannot be trained
however many cards there are. Here (fsdp_loading = "sharded", the default) every process:

1. builds the model on the meta device (shapes, no memory), with the bitsandbytes NF4 modules
   transformers' own quantizer puts in (the NF4 bytes stored in the compute dtype, so FSDP
   shards them), and wraps it with the LoRA exactly as the whole-model way does (setup.wrap_lora:
   the same seeded init, the adapter real on the CPU; see _standing_in);
2. shards it (fsdp.shard) while it is still on the meta device, then allocates its own shards
   only (to_empty);
3. fills them tensor by tensor from the safetensors files: each base weight is read whole
   (one at a time), quantized to NF4 where the model is (deterministic: every process gets
   the same bytes and quantization state) and cut to this process's shard; the rest is freed
   before the next tensor is read.

So a process holds at most: its 1/N of the sharded weights (the NF4 decoder layers and the
embeddings), the frozen output layer whole (it is not sharded, fsdp.py says why), the
quantization states (small) and the adapter, plus one tensor being loaded (read, and its NF4
form). No broadcast is needed: every process reads the files, which the page cache shares.

Limits: a local safetensors checkpoint (or a hub id, downloaded first) whose tensor names are
the model's own (transformers renames some architectures' keys while loading: those are
refused with the way on); DoRA's magnitude needs the base weights before they are loaded, so
use_dora needs fsdp_loading = "whole" (TrainConfig.validate says so).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import ModelError
from ..models import keep_training_layout, load_hint, nf4_config
from . import fsdp
from .setup import pick_attention, wrap_lora

WAY_ON = 'set train.fsdp_loading = "whole" (every process loads the whole model first)'


def build_meta_model(model_name: str, config: Any, compute_dtype: Any) -> tuple[Any, list[str], "Loader"]:
    """The peft model with its base weights on the meta device and its adapter real on the CPU;
    returns (peft model, full modules, the Loader that fills it once sharded)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    files = checkpoint_files(model_name)
    try:
        model_config = AutoConfig.from_pretrained(model_name)
    except Exception as e:
        raise ModelError(load_hint(model_name, e)) from e
    # Parameters on meta, buffers (the rotary frequencies: computed, not in the files) real.
    with init_empty_weights(include_buffers=False):
        base = AutoModelForCausalLM.from_config(_plain_config(model_config), dtype=compute_dtype,
                                                attn_implementation=pick_attention(config.attention,
                                                                                   torch.device("cpu")))
    base.tie_weights()  # as from_pretrained does: a tied output layer is the embeddings (one tensor in the file)
    quantizer, nf4 = _quantize_skeleton(base, compute_dtype) if config.quantize == "nf4" else (None, {})
    keep_training_layout(base)
    loader = Loader(base, files, model_name, nf4)
    with _standing_in(base):
        model, full_modules = wrap_lora(base, config, model_name)
    if quantizer is not None:  # the marks from_pretrained leaves (peft reads is_loaded_in_4bit)
        base.hf_quantizer = quantizer
        quantizer.postprocess_model(base)
    return model, full_modules, loader


def shard_model(model: Any, dist: Any, device: Any, loader: "Loader | None") -> None:
    """Shard the peft `model` over the processes (fsdp.shard), with rank 0's LoRA init on every
    process; with a `loader` (a model from build_meta_model), then allocate and fill the shards."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if loader:
        for p in trainable:  # made on the CPU; a GPU backend broadcasts device tensors
            p.data = p.data.to(device)
    dist.sync_weights(trainable)  # while the weights are whole; each process keeps its shard
    adapter = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad} if loader else {}
    fsdp.shard(model, dist, device)
    if loader:
        loader.materialize(model, device, adapter)


def _plain_config(model_config: Any) -> Any:
    """The config without a quantization section: the NF4 modules are put in below."""
    if hasattr(model_config, "quantization_config"):
        raise ModelError("the checkpoint is already quantized (its config has a quantization_config): "
                         f"the sharded loader quantizes full-precision weights; {WAY_ON}")
    return model_config


def _quantize_skeleton(base: Any, compute_dtype: Any) -> tuple[Any, dict[int, dict[str, Any]]]:
    """Swap in the NF4 modules as from_pretrained does (transformers' quantizer, so the same
    modules are quantized), then give each NF4 weight the packed shape it will have: FSDP cuts
    the packed bytes, so the meta weight it shards must have their shape. Returns (the
    quantizer, each NF4 module's quantization settings and whole weight shape by its id)."""
    import bitsandbytes as bnb
    import torch
    from transformers import BitsAndBytesConfig
    from transformers.quantizers import AutoHfQuantizer

    quantizer = AutoHfQuantizer.from_config(nf4_config(compute_dtype, quant_storage=compute_dtype))
    quantizer.preprocess_model(model=base, dtype=compute_dtype, device_map=None, checkpoint_files=None,
                               use_kernels=False)
    assert isinstance(quantizer.quantization_config, BitsAndBytesConfig)
    nf4 = {}
    for module in base.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            w = module.weight
            per_element = torch.empty((), dtype=w.quant_storage).element_size() * 2  # 4-bit values per stored element
            packed = torch.empty(((w.numel() + 1) // per_element, 1), dtype=w.quant_storage, device="meta")
            module.weight = bnb.nn.Params4bit(packed, requires_grad=False, blocksize=w.blocksize,
                                              compress_statistics=w.compress_statistics, quant_type=w.quant_type,
                                              quant_storage=w.quant_storage, module=module, bnb_quantized=True)
            nf4[id(module)] = {"blocksize": w.blocksize, "compress_statistics": w.compress_statistics,
                               "quant_type": w.quant_type, "shape": tuple(w.shape)}  # (out, in): the file's
    return quantizer, nf4


@contextmanager
def _standing_in(base: Any) -> Iterator[None]:
    """peft puts an adapter on its base layer's weight's device, and these weights are on the
    meta device, where the adapter's init would be lost. While peft wraps, each meta weight is
    stood in for by a CPU tensor of its shape that holds one element (expanded), of its class
    and attributes: the adapter is made on the CPU with the numbers the seeded init draws, as
    in the whole-model way. The meta weights are put back after."""
    import torch

    swapped = []
    for module in base.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and p.is_meta:
                standin = torch.zeros((), dtype=p.dtype).expand(p.shape)
                twin = torch.Tensor._make_subclass(type(p), standin, False)
                twin.__dict__.update(p.__dict__)
                module._parameters[name] = twin
                swapped.append((module, name, p))
    try:
        yield
    finally:
        for module, name, p in swapped:
            p.requires_grad_(module._parameters[name].requires_grad)  # frozen while stood in for
            module._parameters[name] = p


def checkpoint_files(model_name: str) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it, for a local checkpoint folder or a hub
    id (downloaded, or found in the hub cache)."""
    folder = Path(model_name)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(model_name, allow_patterns=["*.json", "*.safetensors"]))
        except Exception as e:
            raise ModelError(load_hint(model_name, e)) from e
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {k: folder / v for k, v in weight_map.items()}
    single = folder / "model.safetensors"
    if not single.is_file():
        raise ModelError(f"{model_name}: no model.safetensors or model.safetensors.index.json in {folder}; the "
                         f"sharded FSDP loader reads safetensors files (convert the checkpoint, or {WAY_ON})")
    from safetensors import safe_open

    with safe_open(single, framework="pt") as f:
        return {k: single for k in f.keys()}


class Loader:
    """Fills a sharded meta model from the checkpoint files, one tensor at a time."""

    def __init__(self, base: Any, files: dict[str, Path], model_name: str, nf4: dict[int, dict[str, Any]]):
        import torch

        self.files, self.model_name, self.nf4 = files, model_name, nf4
        # Every base weight by its module and name there: peft keeps the base modules (a
        # LoRA layer holds the original as base_layer) and FSDP swaps the weights in place,
        # so these references find the sharded weights later. A tied weight (the output layer
        # sharing the embeddings) is listed under each module: FSDP shards the embeddings' and
        # leaves the output layer's whole, as after whole-model loading; the file holds it once.
        self.targets: list[tuple[str, Any, str]] = []
        first: dict[int, str] = {}
        missing = []
        for mod_name, module in base.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                key = f"{mod_name}.{pname}" if mod_name else pname
                source = key if key in files else first.get(id(p))
                first.setdefault(id(p), key)
                if source is None or source not in files:
                    missing.append(key)
                self.targets.append((source or key, module, pname))
        if missing:
            raise ModelError(f"{model_name}: the checkpoint has no tensors named {missing[:3]} "
                             f"({len(missing)} of the model's weights): its names differ from the model's "
                             f"(transformers renames some architectures' on loading); {WAY_ON}")
        self.buffers = {n: b.detach().clone() for n, b in base.named_buffers()}
        self.base = base
        self.stats = {"read_bytes": 0, "largest_read_bytes": 0}
        self._torch = torch

    def materialize(self, model: Any, device: Any, trainable: dict[str, Any]) -> None:
        """After fsdp.shard: allocate this process's shards (to_empty) and fill every weight;
        `trainable` is the adapter's whole weights by name, taken before sharding."""
        torch = self._torch
        model.to_empty(device=device)  # FSDP allocates each sharded weight's local piece only
        with torch.no_grad():
            for key, module, pname in self.targets:
                self._fill(key, module, pname, device)
            for name, b in model.get_base_model().named_buffers():
                if name in self.buffers:
                    b.copy_(self.buffers[name])
            for name, p in model.named_parameters():
                if name in trainable:
                    fsdp.local_shard(p).copy_(fsdp.shard_like(trainable[name].to(p.dtype), p))

    def _fill(self, key: str, module: Any, pname: str, device: Any) -> None:
        import bitsandbytes as bnb

        param = getattr(module, pname)
        whole = self.read(key)
        nf4 = self.nf4.get(id(module)) if pname == "weight" else None
        if nf4 is not None:
            shape = tuple(whole.shape)
            packed, state = bnb.functional.quantize_4bit(
                whole.to(device=device, dtype=module.compute_dtype), blocksize=nf4["blocksize"],
                compress_statistics=nf4["compress_statistics"], quant_type=nf4["quant_type"],
                quant_storage=module.quant_storage)
            del whole
            if tuple(packed.shape) != tuple(param.shape) or shape != nf4["shape"]:
                raise ModelError(f"{self.model_name}: {key} has shape {shape} in the checkpoint, which does not "
                                 f"match the model built from its config; {WAY_ON}")
            module.quant_state = state  # bitsandbytes gives it back to the weight FSDP gathers
            whole = packed
        elif tuple(whole.shape) != tuple(param.shape):
            raise ModelError(f"{self.model_name}: {key} has shape {tuple(whole.shape)} in the checkpoint, the model "
                             f"built from its config {tuple(param.shape)}; {WAY_ON}")
        # Cut where the tensor is (the CPU for a weight read from the file), then copy the piece
        # over: the embeddings, read whole, never go to the device whole.
        fsdp.local_shard(param).copy_(local_piece(whole, param))

    def read(self, key: str) -> Any:
        """One tensor, copied out of its file: the file is opened for it alone, so its mapped
        pages do not stay resident (counted in this process's memory) after."""
        from safetensors import safe_open

        with safe_open(self.files[key], framework="pt") as f:
            t = f.get_tensor(key).clone()
        n = t.numel() * t.element_size()
        self.stats["read_bytes"] += n
        self.stats["largest_read_bytes"] = max(self.stats["largest_read_bytes"], n)
        return t


def held_bytes(model: Any) -> int:
    """Bytes of weights and buffers this process holds now: sharded ones by their local piece
    (their storage, padding included), the others whole; a tensor shared by two names once."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        local = fsdp.local_shard(t)
        if local.is_meta:
            continue
        storage = local.untyped_storage()
        if storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes()
    for m in model.modules():
        state = getattr(m, "quant_state", None)
        if state is not None and hasattr(state, "as_dict"):
            total += sum(v.numel() * v.element_size() for v in state.as_dict(packed=True).values()
                         if hasattr(v, "numel"))
    return total


def local_piece(whole: Any, like: Any) -> Any:
    """This process's piece of the whole tensor `whole` as the sharded weight `like` holds it,
    cut where `whole` is (FSDP's Shard(dim) is torch.chunk's split, the last pieces possibly
    empty); `whole` itself for a weight that is not sharded."""
    if not fsdp.is_sharded(like):
        return whole
    (placement,) = like.placements
    pieces = whole.chunk(like.device_mesh.size(), dim=placement.dim)
    rank = like.device_mesh.get_local_rank()
    piece = pieces[rank] if rank < len(pieces) else whole.narrow(placement.dim, 0, 0)
    if tuple(piece.shape) != tuple(like.to_local().shape):  # not the split assumed: let DTensor cut it
        return fsdp.shard_like(whole, like)
    return piece
