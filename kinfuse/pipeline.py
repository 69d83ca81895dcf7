"""The infusion recipe: corpus -> training mix -> blocks -> QLoRA training -> evaluation -> report.

Each stage is a component (kinfuse.corpus, kinfuse.data, kinfuse.train, kinfuse.eval); this
module only wires them, in the order they run. What the mix holds and why is in
kinfuse/data/mix.py; what a run wrote is recorded in out_dir/run.json (kinfuse.run.RunRecord).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from . import io
from .config import InfuseConfig
from .corpus import Corpus
from .data.chunker import Chunker
from .data.mix import TrainingMix, check_input_files, training_qa
from .errors import KinfuseError
from .eval.evaluator import Evaluator
from .eval.report import build_report, summary, write_report
from .eval.results import Comparison
from .models import load_tokenizer, resolve_model
from .progress import seconds
from .run import RunRecord, kinfuse_version
from .train import QLoRATrainer, TrainResult, distributed


@dataclass
class InfuseResult:
    out_dir: Path
    train: TrainResult
    probes: Comparison | None = None  # knowledge probes, base vs adapted
    retention: Comparison | None = None  # general questions, base vs adapted
    perplexity: dict[str, float] = field(default_factory=dict)  # general text, base vs adapted
    metrics: dict[str, Any] = field(default_factory=dict)  # what metrics.json holds


def build_corpus(config: InfuseConfig) -> Corpus:
    parts = []
    if config.corpus.urls:
        parts.append(Corpus.from_urls(config.corpus.urls, allow_private=config.corpus.allow_private,
                                      max_bytes=config.corpus.max_bytes, deadline=config.corpus.deadline))
    if config.corpus.paths:
        parts.append(Corpus.from_paths(config.corpus.paths, max_bytes=config.corpus.max_bytes))
    corpus = parts[0]
    for extra in parts[1:]:
        corpus = corpus + extra
    return corpus


def infuse(config: InfuseConfig, *, corpus: Corpus | None = None, echo: Any = print) -> InfuseResult:
    """Run one infusion end to end and write adapter, run.json, metrics.json, train_log.jsonl and
    the report to out_dir.

    Under `torchrun --nproc-per-node N` every process trains its share of each step
    (kinfuse.train.distributed); rank 0 alone builds the corpus and the training mix (the others
    receive its blocks), writes, evaluates and reports. The others return after training, once
    rank 0's adapter is written."""
    config.validate()
    check_input_files(config)  # probe, retention and Q&A files: before a page is fetched or a model loads
    started = time.perf_counter()
    dist = distributed.init(config.train.device)
    if not dist.main:
        return _train_share(config)
    out = writable_dir(Path(config.out_dir))

    # -- setup: corpus, model, evaluator ----------------------------------------------
    corpus = corpus if corpus is not None else build_corpus(config)
    qa = training_qa(config)  # refused if a question restates a probe: before any model loads
    echo(corpus.report())
    trainer = make_trainer(config)
    evaluator = Evaluator(trainer, max_new_tokens=config.eval.max_new_tokens, batch_size=config.eval.batch_size)

    # -- the training mix, as blocks -----------------------------------------------------
    mix = TrainingMix.build(config, corpus, qa, trainer, evaluator, out, echo)
    chunker = Chunker(trainer.tokenizer, config.data.block_size)
    blocks, stats, anchor_blocks = mix.blocks(chunker, anchor_kl=config.data.anchor_kl, order=config.data.order)
    echo(mix.describe(stats, anchor_blocks, chunker.block_size))
    dist.broadcast(blocks)  # to the other processes, waiting in _train_share

    # -- train ---------------------------------------------------------------------------
    # run.json says "running" until training ends, so a run killed outright (or one that fails)
    # is never exported as finished; the log keeps the steps up to a checkpoint resumed from.
    record = RunRecord(
        model=trainer.model_name, quantize=config.train.quantize, compute_dtype=trainer.dtype_name,
        device=str(trainer.device), chat=config.chat, steps=0, config=asdict(config),
        kinfuse_version=kinfuse_version(),
    )
    record.write(out)
    try:
        train = trainer.train(blocks, log_path=out / "train_log.jsonl")
        trainer.save_adapter(out / "adapter")  # an interrupted run's too: --allow-incomplete exports it
    except BaseException as e:
        record.failed(e, trainer.last_checkpoint).write(out)
        raise
    record.trained(train).write(out)
    echo(
        f"trained {train.steps} steps, loss {train.first_loss:.3f} -> {train.final_loss:.3f}, "
        f"{train.tokens_per_second:.0f} tokens/s, peak memory {train.peak_memory_bytes / 2**30:.2f} GiB"
    )
    result = InfuseResult(out_dir=out, train=train)
    if train.interrupted:  # SIGINT/SIGTERM: the user wants to stop, not to wait for evaluation
        echo(f"interrupted by {train.stop_signal or 'a signal'} at step {train.steps}: checkpoint {train.checkpoint}; "
             "to continue, run again with --train.resume (or `resume = true` under [train] in the config file)")
        return result

    # -- evaluate: base (adapter off) vs adapted, in one model; the report ----------------
    report, kl, (json_path, html_path) = evaluate_and_report(
        config, evaluator, result, out, model=trainer.model_name, train=train, title=f"kinfuse report: {out.name}",
        echo=echo)
    result.metrics = {
        "model": trainer.model_name,
        "corpus": {"documents": len(corpus), "sources": [r.__dict__ for r in corpus.records]},
        "data": mix.to_dict(stats, anchor_blocks, chunker.block_size),
        "train": {k: v for k, v in train.to_dict().items() if k != "history"},
        "probes": result.probes.to_dict() if result.probes else None,
        "retention": result.retention.to_dict() if result.retention else None,
        "perplexity": result.perplexity,
        "config": asdict(config),
        "seconds": time.perf_counter() - started,
    }
    result.metrics["kl"] = kl
    result.metrics["chat_behaviour"] = report["metrics"].get("chat")
    result.metrics["loglik"] = report["metrics"].get("loglik")
    result.metrics["augment"] = mix.augmented.to_dict()
    result.metrics["synth"] = mix.synth.to_dict() if mix.synth else None
    result.metrics["report"] = {"json": str(json_path), "html": str(html_path)}
    io.write_text(out / "metrics.json", json.dumps(result.metrics, indent=2, default=str))
    record.metrics = "metrics.json"
    record.write(out)
    echo(f"wrote {out / 'metrics.json'}, {html_path.name}, {json_path.name} and {out / 'adapter'} "
         f"in {result.metrics['seconds']:.0f} s")
    return result


def make_trainer(config: InfuseConfig) -> QLoRATrainer:
    """The run's trainer (on every process under torchrun)."""
    tokenizer = None
    if not config.chat:  # a base (completion) model: no chat template, Q&A rows as plain text
        tokenizer = load_tokenizer(resolve_model(config.model))
        tokenizer.chat_template = None
    # The rounds of rule-written rows each take one epoch's share of the training steps;
    # checkpoints and loss.png go with the run unless the train config says otherwise.
    epochs = config.train.epochs / TrainingMix.round_count(config)
    return QLoRATrainer(config.model, replace(config.trainer_config(), epochs=epochs), tokenizer=tokenizer)


def _train_share(config: InfuseConfig) -> InfuseResult:
    """A process other than rank 0 under torchrun: the model, rank 0's blocks, its share of the
    training, and the wait for rank 0's adapter (save_adapter writes nothing here). It does not
    wait for rank 0's evaluation, which needs no other process and may outlast any collective's
    timeout."""
    trainer = make_trainer(config)
    blocks = trainer.dist.broadcast(None)
    train = trainer.train(blocks)
    trainer.save_adapter(Path(config.out_dir) / "adapter")
    return InfuseResult(out_dir=Path(config.out_dir), train=train)


def writable_dir(out: Path) -> Path:
    """`out`, created if need be, once a file can be written in it: an unwritable or misplaced
    output folder is refused before any model loads, naming it and the fix."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        io.write_text(out / ".kinfuse-write-test", "")
        (out / ".kinfuse-write-test").unlink()
    except OSError as e:
        raise KinfuseError(f"output folder {out} is not writable ({e.strerror or e}"
                           f"{': ' + str(e.filename) if e.filename and str(e.filename) != str(out) else ''}): "
                           "choose another out_dir (--out_dir DIR) or fix its permissions") from e
    return out


def evaluate(config: InfuseConfig, evaluator: Evaluator, result: InfuseResult, echo: Any = print) -> dict[str, float]:
    """Probes, retention and perplexity into `result`; returns KL(base || adapted) per token on
    general text and general chat prompts (forward passes only). Each phase shows a progress
    bar on a terminal and ends with one line saying what it found and how long it took."""
    clock = time.perf_counter()

    def _lap() -> str:  # the time since the last summary line
        nonlocal clock
        now = time.perf_counter()
        spent, clock = now - clock, now
        return seconds(spent)

    if config.eval.probes:
        result.probes = Comparison([r for p in config.eval.probes for r in evaluator.compare(p, label="probes").results])
        echo("\n" + result.probes.table())
        echo(f"probes: {len(result.probes.results)} asked to the base and the adapted model in {_lap()}")
    if config.eval.retention:
        result.retention = Comparison([r for p in config.eval.retention
                                       for r in evaluator.compare(p, label="retention").results])
        echo(
            f"retention: base answered {sum(r.base_correct for r in result.retention.results)}"
            f"/{len(result.retention.results)} general questions; adapted keeps {result.retention.retention():.0%} "
            f"({_lap()})"
        )
    if not config.eval.perplexity:
        return {}
    result.perplexity = {"base": evaluator.perplexity(adapter=False), "adapted": evaluator.perplexity()}
    change = result.perplexity["adapted"] / result.perplexity["base"] - 1
    result.perplexity["change"] = change
    echo(f"general-text perplexity: base {result.perplexity['base']:.2f} -> adapted "
         f"{result.perplexity['adapted']:.2f} ({change:+.1%}) ({_lap()})")
    kl = {"general_text": evaluator.kl_divergence()}
    if getattr(evaluator.tokenizer, "chat_template", None):
        kl["general_chat"] = evaluator.kl_divergence(chat=True)
    echo("KL(base || adapted): " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in kl.items())
         + f" nats/token ({_lap()})")
    return kl


def evaluate_and_report(config: InfuseConfig, evaluator: Evaluator, result: InfuseResult, out: Path, *,
                        model: str, train: Any = None, title: str, echo: Any = print
                        ) -> tuple[dict[str, Any], dict[str, float], tuple[Path, Path]]:
    """`evaluate`, then report.json and report.html in `out` and the summary on the terminal:
    the end of `infuse`, and all of `kinfuse eval` on a finished run. Returns the report, the KL
    values and the two files' paths."""
    kl = evaluate(config, evaluator, result, echo)
    report = build_report(probes=result.probes, retention=result.retention, perplexity=result.perplexity,
                          kl=kl, train=train, model=model, title=title)
    paths = write_report(report, out)
    echo("\n" + summary(report))
    return report, kl, paths
