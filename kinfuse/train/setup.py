"""Setting a model up for training: device and dtype, the allocator, the model build (load,
quantize, freeze, LoRA wrap) and every forward kinfuse swaps in (patch_forwards).

Everything that decides what runs where is here, so the loop and the losses can take the
model as they find it.
"""

from __future__ import annotations

from typing import Any, Callable

from ..config import TrainConfig
from ..errors import ConfigError, KinfuseError, ModelError
from ..models import load_model

# -- device, dtype, attention -----------------------------------------------------------------


def pick_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KinfuseError(f"device={name!r} but no CUDA GPU is visible; use device='auto' or 'cpu'")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def pick_dtype(name: str, device: Any) -> Any:
    import torch

    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # A CPU with native bf16 dot products (AVX512-BF16, AMX) runs bf16 matmuls faster than
    # fp32; on one without, torch emulates them and they are slower than fp32.
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 dot products (AVX512-BF16 or AMX)."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so looked up with care
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def pick_attention(name: str, device: Any) -> str:
    if name != "auto":
        return name
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401  (optional extra)

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


# -- allocator ----------------------------------------------------------------------------------


def set_mmap_threshold(nbytes: int) -> bool:
    """glibc mallopt(M_MMAP_THRESHOLD, nbytes): allocations from nbytes up are mmapped and
    unmapped on free. Fixing it also stops glibc from raising it after each large free, which
    leaves freed activation buffers in the heap (resident) instead of reusing or returning them.
    False where there is no glibc (macOS, musl): nothing changes."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    M_MMAP_THRESHOLD = -3  # malloc.h
    return mallopt(M_MMAP_THRESHOLD, int(nbytes)) == 1


def tune_allocator(config: TrainConfig, device: Any) -> None:
    """The allocator settings of `config`; call before loading: quantization churns memory too."""
    if device.type == "cpu" and config.cpu_mmap_threshold:
        set_mmap_threshold(config.cpu_mmap_threshold)


# -- the model -----------------------------------------------------------------------------------


def build_model(model_name: str, config: TrainConfig, device: Any, compute_dtype: Any) -> tuple[Any, list[str]]:
    """The base model (NF4 with double quantization, or plain) loaded and frozen, wrapped with a
    peft LoRA on `config.target_modules`; returns (peft model, names of the modules trained in
    full). The adapter's trainable weights are fp32: they are tiny, and the optimizer's master
    weights. Seeds torch with `config.seed` first: LoRA A is random, so runs repeat."""
    # FSDP shards the packed NF4 weights only when they are stored in the other weights' float dtype.
    storage = compute_dtype if config.distributed == "fsdp" else None
    base = load_model(model_name, quantize=config.quantize, compute_dtype=compute_dtype, device=device,
                      attention=pick_attention(config.attention, device), quant_storage=storage)
    return wrap_lora(base, config, model_name)


def wrap_lora(base: Any, config: TrainConfig, model_name: str) -> tuple[Any, list[str]]:
    """Freeze the loaded `base` and wrap it with the LoRA of `config` (see build_model). Also the
    FSDP shard-by-shard loader's (fsdp_load.py), on a model whose base weights are not loaded yet:
    nothing here reads them, and the LoRA init draws the same numbers either way."""
    import torch
    from peft import LoraConfig, get_peft_model

    cfg = config
    base.config.use_cache = False  # the KV cache is useless in training and costs memory
    for p in base.parameters():
        p.requires_grad_(False)
    if cfg.gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (no enable_input_require_grads hack).
        # transformers 5.x renames it activation checkpointing and warns on the old name.
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(cfg.seed)
    full_modules, tied = _full_modules(base, cfg, model_name)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules,
        use_rslora=cfg.use_rslora,
        use_dora=cfg.use_dora,
        # Trainable copies of embeddings / lm_head, saved in the adapter. For a tied model the
        # embeddings' copy is shared with lm_head (peft ties it), so it stays one matrix.
        modules_to_save=full_modules or None,
        ensure_weight_tying=tied,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    if tied and full_modules:
        _check_still_tied(model, full_modules, model_name)
    return model, full_modules


def _full_modules(base: Any, cfg: TrainConfig, model_name: str) -> tuple[list[str], bool]:
    """Names of the modules trained in full (peft modules_to_save), and whether the model
    ties its output layer to its input embeddings."""
    if not (cfg.train_embeddings or cfg.train_lm_head):
        return [], False
    emb, head = base.get_input_embeddings(), base.get_output_embeddings()
    if cfg.train_lm_head and head is None:
        raise ConfigError([f"train_lm_head=True but {model_name} has no output layer: set it False"],
                          "TrainConfig for this model")
    tied = head is not None and getattr(head, "weight", None) is emb.weight
    if tied and cfg.train_embeddings != cfg.train_lm_head:
        raise ConfigError(
            [f"train_embeddings={cfg.train_embeddings}, train_lm_head={cfg.train_lm_head}: {model_name} "
             "ties lm_head to its input embeddings (one matrix), so neither trains without the other; "
             "set both True or both False"],
            "TrainConfig for this model",
        )
    names = {id(m): n for n, m in base.named_modules()}
    if tied:
        return [names[id(emb)]], True
    return [names[id(m)] for m, on in ((emb, cfg.train_embeddings), (head, cfg.train_lm_head)) if on], False


def _check_still_tied(model: Any, full_modules: list[str], model_name: str) -> None:
    """peft ties the trainable copies only for the embedding names it knows; check it did,
    since an untied copy would silently train the embeddings while lm_head stays frozen."""
    full = {id(p) for n, p in model.named_parameters(remove_duplicate=False)
            if p.requires_grad and ".modules_to_save." in n}
    head = model.get_base_model().get_output_embeddings()
    if len(full) != 1 or not any(p.requires_grad for p in head.parameters()):
        raise ModelError(
            f"peft could not keep the tied embeddings and lm_head of {model_name} tied in the adapter "
            f"(modules {full_modules}): set train_embeddings and train_lm_head to False"
        )


# -- forward patches --------------------------------------------------------------------------


def patch_forwards(model: Any, config: TrainConfig, device: Any, compute_dtype: Any,
                   *, full_modules: bool) -> tuple[Any, Callable | None]:
    """Every forward kinfuse changes in the peft `model`, in this order; returns (the kernels'
    KernelPatch or None, the fused output layer + cross-entropy op for the loss).

    Which forward runs where:
      - LoRA layers over NF4, RMSNorm, the gated MLP and the rotary embedding: the Triton ops
        on CUDA (kernels "auto" or "triton"); on a CPU the stock modules, or the torch twins
        when kernels="torch" asks for them (those are for checking, not speed).
        `KernelPatch.undo()` restores them.
      - Every LoRA layer the kernels did not take (all of them on a CPU): the lean LoRA
        forward (one addmm), and on a CPU BitsDropout for its dropout (kinfuse.train.lora).
      - The loss, on every device: the fused output layer + cross-entropy (Triton when the
        kernels are, else its torch twin). It never builds the (N, V) logits and takes its
        gradients in the same pass, so it is faster and leaner than logits + F.cross_entropy.
      - Trainable embeddings (`full_modules`) under a compute dtype below fp32: their output is
        cast to the compute dtype, as the frozen embeddings gave it; an fp32 embedding copy
        would otherwise turn the whole residual stream fp32 (twice the activation memory).
    """
    import torch

    from ..kernels import load_op, patch_model, resolve
    from .lora import use_lean_lora_forward

    if full_modules and compute_dtype != torch.float32:
        model.get_base_model().get_input_embeddings().register_forward_hook(lambda m, i, out: out.to(compute_dtype))
    kernel_patch = None
    impl = "torch" if config.kernels == "none" else resolve(config.kernels, device)
    # "auto" where Triton cannot run resolves to the twins: patch only with Triton, or with
    # the twins when they are asked for by name.
    if impl == "triton" or config.kernels == "torch":
        kernel_patch = patch_model(model, impl)
    fused_ce = load_op("fused_linear_cross_entropy", impl)
    use_lean_lora_forward(model, bits_dropout=device.type == "cpu")
    return kernel_patch, fused_ce
