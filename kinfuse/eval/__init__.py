"""Knowledge gained and lost: base vs adapted answers on probes (`evaluator.py`, `results.py`),
forgetting measures (`forgetting.py`), model-written probes (`probe_writer.py`) and the run's
report (`report.py`)."""

from .evaluator import Evaluator
from .probe_writer import generate_probes
from .results import Comparison, LoglikScore, ProbeResult

__all__ = ["Comparison", "Evaluator", "LoglikScore", "ProbeResult", "generate_probes"]
