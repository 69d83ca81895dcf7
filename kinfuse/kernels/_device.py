"""What every Triton op checks before it launches: the tensors' device."""

from __future__ import annotations

from typing import Any


def interpreted(kernel: object) -> bool:
    """Whether `kernel` runs in Triton's CPU interpreter: triton.jit picks it when the kernel is
    defined (TRITON_INTERPRET=1 at import), and only then are CPU tensors valid."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover - very old triton
        return False
    return isinstance(kernel, InterpretedFunction)


def require_device(op: str, device: Any, kernel: object) -> None:
    """Refuse CPU tensors unless the kernel is interpreted, naming the torch twin to use."""
    if device.type != "cuda" and not interpreted(kernel):
        raise ValueError(
            f"{op} (Triton) needs CUDA tensors, got {device}: use kinfuse.kernels.reference.{op} on CPU "
            "(or set TRITON_INTERPRET=1 before importing triton, for slow testing)"
        )
