"""kinfuse: infuse new knowledge from a text corpus into a causal LM with QLoRA, and measure
what it learned against what it forgot.

    from kinfuse import Corpus, Chunker, QLoRATrainer, TrainConfig, Evaluator, default_model
    run = kinfuse.load_run("out")       # a finished run: base + adapter as trained, run.ask(...)

Importing kinfuse needs no GPU and no optional extra; torch and transformers load lazily on
first use of the classes that need them.
"""

from __future__ import annotations

from .config import CorpusConfig, DataConfig, EvalConfig, InfuseConfig, TrainConfig
from .corpus import Corpus, Document, SourceRecord, extract_text
from .data.answers import answer_matches
from .data.chunker import Chunker, ChunkStats
from .data.synth import Synthesis, synthesize
from .errors import ConfigError, CorpusError, KinfuseError, ModelError
from .eval import Comparison, Evaluator, ProbeResult
from .export import export, verify
from .models import default_model
from .pipeline import InfuseResult, infuse
from .progress import quiet_third_party
from .session import InfusedRun, load_run
from .train import QLoRATrainer, TrainingError, TrainResult

# Two messages third-party libraries print on every run that a user cannot act on (kinfuse.progress).
quiet_third_party()

__version__ = "0.1.0"

__all__ = [
    "Chunker",
    "ChunkStats",
    "Comparison",
    "ConfigError",
    "Corpus",
    "CorpusConfig",
    "CorpusError",
    "DataConfig",
    "Document",
    "EvalConfig",
    "Evaluator",
    "InfuseConfig",
    "InfuseResult",
    "InfusedRun",
    "KinfuseError",
    "ModelError",
    "ProbeResult",
    "QLoRATrainer",
    "SourceRecord",
    "Synthesis",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "answer_matches",
    "default_model",
    "export",
    "extract_text",
    "infuse",
    "load_run",
    "synthesize",
    "verify",
]
