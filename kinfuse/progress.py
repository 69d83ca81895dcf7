"""Progress for a run's long phases, and the third-party noise a user cannot act on.

Every phase that can take more than a few seconds (self-distillation, augmentation, probe
answers, perplexity, KL) shows a tqdm bar while it runs, as training does, and the caller
prints one summary line when it ends. Bars draw only on a terminal (tqdm's `disable=None`), so
logs and captured output get the summary lines alone.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any


def bar(total: int, desc: str, unit: str = "it") -> Any:
    """A tqdm bar of `total` steps labelled `desc`, cleared when done (the summary line stays)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=None, leave=False, dynamic_ncols=True)


def seconds(s: float) -> str:
    """A duration for a summary line: "0.4 s", "41 s", "3 min 2 s"."""
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    return f"{int(s // 60)} min {int(s % 60)} s"


# -- third-party noise --------------------------------------------------------------------
# Each is one message a library prints on every run that the user can do nothing about: it is
# dropped by its text where it is raised, never by silencing a logger or warnings wholesale.

# bitsandbytes on CPUs with AVX512-BF16 tries an optional kernel package (`kernels`) at import
# and logs a warning when it is absent; kinfuse never uses that inference kernel (it keeps the
# training layout, kinfuse.models.keep_training_layout).
_BNB_LOGGER = "bitsandbytes.backends.cpu.ops"
_BNB_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"
# peft reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model.
_TRANSFORMERS_DEPRECATIONS = (r"`is_gradient_checkpointing` is deprecated",)


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_third_party() -> None:
    """Install the filters above (once; harmless to call again). Needs no library imported."""
    log = logging.getLogger(_BNB_LOGGER)
    if not any(isinstance(f, _DropMessage) for f in log.filters):
        log.addFilter(_DropMessage(_BNB_MESSAGE))
    for message in _TRANSFORMERS_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning, module=r"transformers\.")
