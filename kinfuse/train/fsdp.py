"""FSDP-QLoRA: the model sharded over the training processes (train.distributed = "fsdp").

Under torchrun with data parallelism (distributed.py) every process holds the whole base
model; a model that does not fit one card needs its weights split instead. Here every
decoder layer and then the decoder itself become FSDP2 units (`torch.distributed.fsdp.
fully_shard`): each process keeps 1/N of every weight, a unit's full weights are gathered
just before its forward (and again for its backward) and freed after, and the LoRA
gradients are reduce-scattered back to the shards. The NF4 weights can be sharded because
they are stored in the compute dtype (bitsandbytes' `bnb_4bit_quant_storage`, as peft's
FSDP-QLoRA guide and Answer.AI's fsdp_qlora do): FSDP splits a tensor of a float dtype like
any other, and bitsandbytes restores the quantization state, which stays whole on every
process (it is small), from the module when a gathered weight comes back as a plain tensor.

The output layer is not sharded: the loss takes its weight directly (the fused output
layer + cross-entropy), outside any module's forward that FSDP could hook. It is frozen, so
a copy per process needs no synchronisation.

Loading: by default (fsdp_loading = "sharded") the model is built on the meta device, sharded
there, and each process reads, quantizes and keeps only its shard of each weight
(fsdp_load.py), so no process ever holds the whole model; with fsdp_loading = "whole" every
process loads the whole NF4 model onto its device (load_model) before the shards are cut.

What leaves the shards: the adapter and the optimizer state of checkpoints are gathered whole
(the LoRA weights are a few MB) in the layout one process writes, so a checkpoint and an
adapter written under FSDP are read by the same resume and export code.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .result import TrainingError


def check_config(dist: Any) -> None:
    """Refused before the model loads: FSDP mode in one process. What the settings cannot run
    is TrainConfig.validate's (config.py), so a config is refused before it is launched."""
    if not dist.enabled:
        raise ConfigError(['distributed = "fsdp" shards the model over several processes, but this is one process '
                           "(WORLD_SIZE unset or 1): launch with torchrun --nproc-per-node N (N >= 2), or set "
                           'distributed = "ddp" (the default) for one process'], "TrainConfig")


def kernels_setting(config: Any) -> str:
    """The kernels setting FSDP mode runs with: "auto" means the stock modules (the fused output
    layer + cross-entropy in torch still runs). The NF4 LoRA op reads the quantization state from
    the weight, and the weight FSDP gathers for a layer is a plain tensor without it, so it would
    fall back to the stock forward for every projection; "triton" and "torch" are refused by
    TrainConfig.validate for that reason."""
    return "none" if config.kernels == "auto" else config.kernels


def shard(model: Any, dist: Any, device: Any) -> list[Any]:
    """Shard the peft `model` in place: each decoder layer, then the decoder, an FSDP2 unit
    over all the processes. Returns the units."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh

    try:
        from torch.distributed.fsdp import FSDPModule, fully_shard
    except ImportError:
        FSDPModule = None
    needed = ("set_gradient_divide_factor", "set_force_sum_reduction_for_comms")  # used below
    if FSDPModule is None or not all(hasattr(FSDPModule, name) for name in needed):
        raise TrainingError(f'train.distributed = "fsdp" needs a torch whose FSDP2 (fully_shard) has '
                            f"{' and '.join(needed)}; this is torch {torch.__version__}: upgrade torch, or use "
                            'distributed = "ddp"')
    base = model.get_base_model()
    decoder = base.get_decoder()
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        raise TrainingError(f"{type(base).__name__}'s decoder has no `layers` list to shard: "
                            'train.distributed = "fsdp" supports decoder-layer models (Llama, Mistral, Qwen, ...); '
                            'use distributed = "ddp"')
    mesh = init_device_mesh(device.type, (dist.world_size,))
    units = [fully_shard(layer, mesh=mesh) for layer in layers] + [fully_shard(decoder, mesh=mesh)]
    for unit in units:
        # FSDP averages gradients over the processes by default. The loop normalises every
        # micro-batch's loss by the target tokens of the whole global step, so each process's
        # gradient is already its share of the global mean: the shares must be summed (as
        # distributed.all_reduce_grads does in DDP mode), which a divide factor of 1 gives.
        unit.set_gradient_divide_factor(1.0)
        # A plain SUM: the custom-factor reduce op (NCCL's PreMulSum) does not exist in gloo.
        unit.set_force_sum_reduction_for_comms(True)
    stray = [n for n, p in model.named_parameters() if p.requires_grad and not is_sharded(p)]
    if stray:
        raise TrainingError(f"trainable weights outside the decoder layers ({stray[:3]}) are not sharded under "
                            'train.distributed = "fsdp": drop them from target_modules, or use distributed = "ddp"')
    return units


def is_sharded(t: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full(t: Any) -> Any:
    """A sharded tensor gathered whole, on the CPU (a collective: every process calls it);
    a plain tensor as it is."""
    return t.full_tensor().cpu() if is_sharded(t) else t.detach().cpu()


def trainable_state(model: Any) -> dict[str, Any]:
    """The trainable weights gathered whole on the CPU, by their names in `model` (every
    process calls it; the LoRA weights are small)."""
    return {n: full(p.detach()) for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: Any, weights: dict[str, Any]) -> None:
    """Put whole adapter `weights` (keys as peft saves them) into the sharded trainable
    weights of `model`, each process its shard (a weight `weights` lacks keeps its value, as
    set_peft_model_state_dict does). peft's own state-dict mapping names the keys, so they
    match what set_peft_model_state_dict would load."""
    import torch
    from peft import get_peft_model_state_dict

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    saved_name = get_peft_model_state_dict(model, state_dict=dict(params))  # saved key -> the param itself
    extra = [k for k in weights if k not in saved_name]
    if extra:
        raise ValueError(f"unexpected adapter weights {extra[:3]}")
    with torch.no_grad():
        for key, p in saved_name.items():
            if key in weights:
                local_shard(p).copy_(shard_like(weights[key].to(dtype=p.dtype), p))


def local_shard(p: Any) -> Any:
    return p.to_local() if is_sharded(p) else p.data


def shard_like(whole: Any, like: Any) -> Any:
    """This process's shard of the whole tensor `whole` as `like` (a sharded weight) holds it."""
    if not is_sharded(like):
        return whole.to(like.device)
    from torch.distributed.tensor import distribute_tensor

    # Every process has `whole` (read from the same file): each cuts its own piece, no traffic.
    return distribute_tensor(whole.to(like.device), like.device_mesh, like.placements, src_data_rank=None).to_local()


def full_optimizer_state(optimizer: Any) -> dict[str, Any]:
    """optimizer.state_dict() with every sharded state tensor gathered whole on the CPU: the
    layout one process writes (a collective: every process calls it)."""
    state = optimizer.state_dict()
    state["state"] = {i: {k: full(v) if hasattr(v, "shape") else v for k, v in s.items()}
                      for i, s in state["state"].items()}
    return state


def load_full_optimizer_state(optimizer: Any, state: dict[str, Any]) -> None:
    """Load a whole (one-process layout) optimizer state into an optimizer of sharded weights:
    each state tensor shaped like its weight is cut to this process's shard."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for p in group["params"]:
            s = optimizer.state.get(p)
            if not s or not is_sharded(p):
                continue
            for k, v in s.items():
                if hasattr(v, "shape") and tuple(v.shape) == tuple(p.shape) and not is_sharded(v):
                    s[k] = _as_dtensor(shard_like(v, p), p)


def _as_dtensor(local: Any, like: Any) -> Any:
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(local, like.device_mesh, like.placements, run_check=False,
                              shape=like.shape, stride=like.stride())
