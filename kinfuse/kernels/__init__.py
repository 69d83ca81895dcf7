"""Custom kernels: Triton ops with pure-torch twins, and where they plug into a model.

    impl = resolve("auto", device)            # "triton" on CUDA with triton, else "torch"
    with patch_model(model, "auto") as patch:  # swaps module forwards, all in one place
        ...                                    # patch.replaced / patch.skipped say what changed
    # leaving the block (or patch.undo()) restores every module exactly

Each op has a Triton version in kinfuse/kernels/<file>.py and a twin of the same name and
signature in kinfuse/kernels/reference.py ("torch": the CPU path and the tests' ground truth).
Importing this package needs neither triton nor a GPU: triton loads only when a Triton op is
asked for.
"""

from __future__ import annotations

import contextvars
import importlib
import logging
import os
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import KinfuseError

log = logging.getLogger("kinfuse.kernels")

MODES = ("auto", "triton", "torch")

# op name -> the file (kinfuse/kernels/<file>.py) of its Triton version.
OP_FILES = {
    "nf4_dequantize": "nf4",
    "qlora_linear": "qlora_linear",
    "fused_linear_cross_entropy": "cross_entropy",
    "rms_norm": "rmsnorm",
    "apply_rotary": "rope",
    "swiglu": "swiglu",
}


class KernelError(KinfuseError):
    """A kernel mode that cannot run here (no triton, no GPU) or a model that is patched twice."""


def triton_available() -> bool:
    """Whether triton imports (it is an optional extra; `pip install 'kinfuse[kernels]'`)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # a broken install (driver, ABI) counts as absent, not as a crash
        return False
    return True


def _interpreter_on() -> bool:
    """TRITON_INTERPRET=1 runs Triton kernels on the CPU with numpy (slow; for tests)."""
    return os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "yes", "on")


def resolve(mode: str, device: Any) -> str:
    """Which implementation runs: "triton" or "torch" (the reference twins).

    "auto": Triton on a CUDA device when triton imports, the reference otherwise.
    "triton": Triton, or an error saying why it cannot run (on a CPU it runs only under
    TRITON_INTERPRET=1, Triton's interpreter). "torch": the reference twins.
    """
    import torch

    if mode not in MODES:
        raise KernelError(f"kernels mode {mode!r}: choose one of {', '.join(MODES)}")
    device = torch.device(device)
    if mode == "torch":
        return "torch"
    if mode == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if not triton_available():
        raise KernelError("kernels='triton' but triton does not import: install it with "
                          "pip install 'kinfuse[kernels]', or use kernels='auto' or 'torch'")
    if device.type == "cuda":
        return "triton"
    if device.type == "cpu" and _interpreter_on():
        return "triton"
    raise KernelError(
        f"kernels='triton' on device {device.type!r}: Triton kernels run on CUDA GPUs; on a CPU only in "
        "Triton's interpreter (set TRITON_INTERPRET=1 before triton is imported; slow, for tests). "
        "Use kernels='auto' (Triton where it can run) or 'torch' (the twins)"
    )


def load_op(name: str, impl: str) -> Callable | None:
    """The op `name` in implementation `impl` ("triton" or "torch"), or None, logged, when that
    implementation is not in this build (so a model keeps its stock module for that op)."""
    if name not in OP_FILES:
        raise KernelError(f"unknown kernel op {name!r}: known ops are {', '.join(OP_FILES)}")
    if impl not in ("triton", "torch"):
        raise KernelError(f"load_op: impl={impl!r}; pass resolve(mode, device), 'triton' or 'torch'")
    module = "reference" if impl == "torch" else OP_FILES[name]
    qualified = f"{__name__}.{module}"
    try:
        mod = importlib.import_module(qualified)
    except ModuleNotFoundError as e:
        if e.name != qualified:  # the file is there but something it imports is not: a real error
            raise
        log.warning("kernels: %s not used: %s.py is not in this build; the stock module stays", name,
                    qualified.replace(".", "/"))
        return None
    op = getattr(mod, name, None)
    if op is None:
        log.warning("kernels: %s not used: %s has no %s yet; the stock module stays", name, qualified, name)
    return op


# -- patching -------------------------------------------------------------------------------
#
# Every patch below sets `forward` on a module instance (the class is untouched, and so are
# parameters and buffers); undo deletes it again, or puts back an instance forward that was
# there before. Forwards are bound with types.MethodType so that copy.deepcopy rebinds them
# to the copy. Each patched forward falls back to the module's own forward for any case it
# does not cover (merged adapters, DoRA, several active adapters, extra args, a weight that
# bitsandbytes already repacked for its CPU inference path before the patch).

# peft LoRA layers over bitsandbytes 4-bit weights.
_LORA_4BIT = ("Linear4bit",)
# RMSNorms computing weight * (x / rms(x)).to(x.dtype), as LlamaRMSNorm (not Gemma's 1 + weight).
_RMSNORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm")
# MLPs computing down_proj(act_fn(gate_proj(x)) * up_proj(x)).
_GATED_MLPS = ("LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP")
# Attentions calling their module's apply_rotary_pos_emb(q, k, cos, sin) with (B, T, D) cos/sin.
_ROPE_ATTENTIONS = ("LlamaAttention", "MistralAttention", "Qwen2Attention", "Qwen3Attention")


def _is_lora_4bit(m: Any) -> bool:
    if type(m).__name__ not in _LORA_4BIT:
        return False
    try:
        from peft.tuners.lora import bnb as peft_bnb
    except ImportError:
        return False
    return isinstance(m, getattr(peft_bnb, "Linear4bit", ()))


def plain_adapter(layer: Any) -> str | None:
    """The name of a peft LoRA layer's one active adapter when it is plain LoRA (not DoRA or
    another variant), else None: the case kinfuse's own LoRA forwards compute (here and in
    kinfuse.train.lora)."""
    active = layer.active_adapters
    name = active[0] if len(active) == 1 else None
    if name is None or name not in layer.lora_A or name in getattr(layer, "lora_variant", {}):
        return None
    return name


def _is_rmsnorm(m: Any) -> bool:
    return type(m).__name__ in _RMSNORMS and hasattr(m, "variance_epsilon")


def _is_gated_mlp(m: Any) -> bool:
    act = getattr(m, "act_fn", None)
    silu = type(act).__name__ in ("SiLU", "SiLUActivation")
    return type(m).__name__ in _GATED_MLPS and silu and all(hasattr(m, p) for p in ("gate_proj", "up_proj", "down_proj"))


def _is_rope_attention(m: Any) -> bool:
    return type(m).__name__ in _ROPE_ATTENTIONS and callable(
        getattr(sys.modules.get(type(m).__module__), "apply_rotary_pos_emb", None))


def _lora_4bit_forward(op: Callable, stock: Callable, impl: str) -> Callable:
    import torch
    import torch.nn.functional as F

    dequantize = load_op("nf4_dequantize", impl)

    def forward(self, x, *args, **kwargs):
        base = self.base_layer
        qs = getattr(base.weight, "quant_state", None)
        if (args or kwargs or self.merged or qs is None or getattr(qs, "packing_format_for_cpu", False)
                or (base.bias is not None and base.bias.requires_grad)):
            return stock(self, x, *args, **kwargs)
        if self.disable_adapters:
            # The base model alone (the evaluator's "before"), as bitsandbytes' Linear4bit computes
            # it. Not its forward: on a CPU in eval mode that repacks the weight into a layout
            # (packing_format_for_cpu) no kernel here reads, which would turn the kernels off.
            dtype = base.compute_dtype or x.dtype
            bias = None if base.bias is None else base.bias.to(dtype)
            return F.linear(x.to(dtype), dequantize(base.weight, dtype=dtype), bias).to(x.dtype)
        name = plain_adapter(self)
        if name is None:  # several active adapters, DoRA etc.
            return stock(self, x, *args, **kwargs)
        drop = self.lora_dropout[name]
        p = drop.p if isinstance(drop, torch.nn.Dropout) else 0.0
        return op(x, base.weight, self.lora_A[name].weight, self.lora_B[name].weight, self.scaling[name],
                  bias=base.bias, dropout=p, training=drop.training)

    return forward


def _rmsnorm_forward(op: Callable, stock: Callable, impl: str) -> Callable:
    def forward(self, hidden_states):
        return op(hidden_states, self.weight, self.variance_epsilon)

    return forward


def _mlp_forward(op: Callable, stock: Callable, impl: str) -> Callable:
    def forward(self, x):
        return self.down_proj(op(self.gate_proj(x), self.up_proj(x)))

    return forward


# The rotary embedding is a module-level function in transformers, not a module: the modeling
# module's apply_rotary_pos_emb is swapped for a switch (while any patch needs it) that calls
# the op only inside a patched attention's forward, so other models in the process keep the
# stock function.
_ROPE_OP: contextvars.ContextVar[Callable | None] = contextvars.ContextVar("kinfuse_rope_op", default=None)
_ROPE_SWITCHES: dict[str, list[Any]] = {}  # modeling module name -> [stock function, users]


def _install_rope_switch(module_name: str) -> Callable[[], None]:
    modeling = sys.modules[module_name]
    if module_name not in _ROPE_SWITCHES:
        stock = modeling.apply_rotary_pos_emb

        def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
            op = _ROPE_OP.get()
            if op is None or args or kwargs:  # not in a patched attention, or a non-default unsqueeze_dim
                return stock(q, k, cos, sin, *args, **kwargs)
            return op(q, k, cos, sin)

        apply_rotary_pos_emb.__wrapped__ = stock
        modeling.apply_rotary_pos_emb = apply_rotary_pos_emb
        _ROPE_SWITCHES[module_name] = [stock, 0]
    _ROPE_SWITCHES[module_name][1] += 1

    def remove() -> None:
        entry = _ROPE_SWITCHES[module_name]
        entry[1] -= 1
        if entry[1] == 0:
            modeling.apply_rotary_pos_emb = entry[0]
            del _ROPE_SWITCHES[module_name]

    return remove


def _attention_forward(op: Callable, stock: Callable, impl: str) -> Callable:
    def forward(self, *args, **kwargs):
        token = _ROPE_OP.set(op)
        try:
            return stock(self, *args, **kwargs)
        finally:
            _ROPE_OP.reset(token)

    return forward


@dataclass(frozen=True)
class _Patch:
    what: str  # the modules replaced, for logs
    matches: Callable[[Any], bool]
    op: str  # the op (OP_FILES) that replaces them
    forward: Callable[[Callable, Callable, str], Callable]  # (op, stock forward, impl) -> new forward


# What is replaced, and by what. Matching is by class name (and a structural check), so a
# model family is added by adding its class names to the tuples above.
PATCHES = (
    _Patch("peft LoRA Linear4bit (NF4 base + LoRA)", _is_lora_4bit, "qlora_linear", _lora_4bit_forward),
    _Patch("RMSNorm (Llama-style)", _is_rmsnorm, "rms_norm", _rmsnorm_forward),
    _Patch("gated MLP activation silu(gate) * up", _is_gated_mlp, "swiglu", _mlp_forward),
    _Patch("attention rotary embedding", _is_rope_attention, "apply_rotary", _attention_forward),
)


@dataclass
class KernelPatch:
    """What patch_model changed; undo() (or leaving a `with` block) restores it all."""

    impl: str  # "triton" or "torch"
    replaced: dict[str, int] = field(default_factory=dict)  # op -> modules patched
    skipped: list[str] = field(default_factory=list)  # why an op was not used
    _undo: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _model: Any = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return bool(self._undo)

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()
        if self._model is not None and getattr(self._model, "_kinfuse_kernel_patch", None) is self:
            del self._model._kinfuse_kernel_patch
        self._model = None

    def __enter__(self) -> "KernelPatch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.undo()


def _stock_forward(module: Any) -> tuple[Callable, Callable[[], None]]:
    """The forward a patch falls back to, as an unbound (self, ...) function, and the undo
    that puts the module's forward back as it was."""
    had = "forward" in module.__dict__
    previous = module.__dict__.get("forward")
    stock = (lambda self, *a, **k: previous(*a, **k)) if had else type(module).forward
    return stock, lambda: _restore_forward(module, had, previous)


def _restore_forward(module: Any, had: bool, previous: Any) -> None:
    if had:
        module.forward = previous
    else:
        del module.forward


def patch_model(model: Any, mode: str = "auto") -> KernelPatch:
    """Swap the forwards of `model`'s modules for kernel ops (the PATCHES table), in place.

    mode: "auto", "triton" or "torch" (see resolve). An op whose file is not in this build is
    skipped with a log line. Returns a KernelPatch; its undo() restores every module exactly.
    """
    import torch

    if getattr(model, "_kinfuse_kernel_patch", None) is not None:
        raise KernelError("this model is already patched with kernels: undo() the first patch before patching again")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    patch = KernelPatch(impl=resolve(mode, device))
    try:
        for entry in PATCHES:
            modules = [m for m in model.modules() if entry.matches(m)]
            if not modules:
                continue
            op = load_op(entry.op, patch.impl)
            if op is None:
                patch.skipped.append(f"{entry.op}: not in this build ({entry.what} keep their stock forward)")
                continue
            switches: set[str] = set()
            for m in modules:
                stock, undo = _stock_forward(m)
                m.forward = types.MethodType(entry.forward(op, stock, patch.impl), m)
                patch._undo.append(undo)
                if entry.op == "apply_rotary" and type(m).__module__ not in switches:
                    switches.add(type(m).__module__)
                    patch._undo.append(_install_rope_switch(type(m).__module__))
            patch.replaced[entry.op] = len(modules)
    except BaseException:
        patch.undo()
        raise
    if "qlora_linear" not in patch.replaced:
        if any(type(m).__name__ == "Linear" and hasattr(m, "lora_A") for m in model.modules()):
            patch.skipped.append("qlora_linear: LoRA layers over unquantized weights (quantize='none') keep peft's forward")
    model._kinfuse_kernel_patch = patch
    patch._model = model
    for line in patch.skipped:
        log.info("kernels: skipped %s", line)
    log.info("kernels (%s): %s", patch.impl, ", ".join(f"{op} x{n}" for op, n in patch.replaced.items()) or "nothing patched")
    return patch
