"""Long phases end with a summary line; third-party noise is dropped by its text, nothing else."""

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

from kinfuse.progress import quiet_third_party, seconds

ROOT = Path(__file__).resolve().parent.parent


def test_each_long_phase_of_an_infusion_ends_with_one_summary_line(tiny_run):
    _, _, lines = tiny_run
    text = "\n".join(lines)
    for start in ("self-distillation: kept ", "probes: 3 asked to the base and "
                  "the adapted model in", "general-text perplexity: base", "KL(base || adapted): general text"):
        assert sum(line.lstrip().startswith(start) for line in text.splitlines()) == 1, start
    assert seconds(0.42) == "0.4 s" and seconds(41.2) == "41 s" and seconds(182) == "3 min 2 s"


def test_only_the_named_messages_are_dropped(caplog):
    quiet_third_party()
    log = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING, logger="bitsandbytes"):
        log.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ...", "no kernels")
        log.warning("some other bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["some other bitsandbytes warning"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        deprecated = "`is_gradient_checkpointing` is deprecated and will be removed in v6."
        warnings.warn_explicit(deprecated, FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")
        warnings.warn_explicit("another deprecation", FutureWarning, "modeling_utils.py", 2,
                               module="transformers.modeling_utils")
        warnings.warn_explicit(deprecated, FutureWarning, "mine.py", 3, module="mypackage")  # not transformers'
        warnings.warn_explicit(deprecated, UserWarning, "modeling_utils.py", 4, module="transformers.modeling_utils")
    assert [(str(w.message), w.category, w.lineno) for w in caught] == [
        ("another deprecation", FutureWarning, 2), (deprecated, FutureWarning, 3), (deprecated, UserWarning, 4)]


def test_a_command_prints_neither_message(tiny_run):
    run_dir, _, _ = tiny_run
    result = subprocess.run([sys.executable, "-m", "kinfuse.cli", "ask", str(run_dir), "Which port?"],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gemm_4bit_forward" not in result.stderr and "FutureWarning" not in result.stderr, result.stderr[-3000:]
