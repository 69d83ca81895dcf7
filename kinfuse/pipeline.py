"""The infusion recipe: corpus -> training rows -> blocks -> QLoRA training -> evaluation.

Training on the corpus text alone makes a model recite its sentences, not answer questions
about them, and costs general answers it knew. So the rows it trains on mix:
- the corpus text, repeated `corpus_repeats` times (continued pretraining);
- chat Q&A about the corpus (`qa_files`), trained on the answer tokens, so facts become
  retrievable by questions in chat form;
- replay of general text (`replay_ratio`), which slows forgetting;
- self-distillation (`self_distill`): general prompts answered by the base model itself,
  trained on as chat, which keeps the model's chat behaviour (ending its turns) and answers.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .augment import ProbeGuard, augment_for_infusion, whole_sentences
from .chunker import Chunker, ChunkStats
from .config import InfuseConfig
from .corpus import Corpus
from .corpus import read_jsonl as corpus_read_jsonl
from .errors import KinfuseError
from .synth import synthesize
from .evaluator import Comparison, Evaluator, general_prompts, general_texts
from .models import load_tokenizer, resolve_model
from .run import RunRecord, kinfuse_version
from .train import QLoRATrainer, TrainResult


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
        parts.append(Corpus.from_urls(config.corpus.urls))
    if config.corpus.paths:
        parts.append(Corpus.from_paths(config.corpus.paths))
    corpus = parts[0]
    for extra in parts[1:]:
        corpus = corpus + extra
    return corpus


def read_jsonl(path: str | Path, required: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of a JSONL file that must each carry the `required` fields."""
    path = Path(path)
    if not path.is_file():
        raise KinfuseError(f"no such file: {path}")
    rows = corpus_read_jsonl(path)
    for n, row in enumerate(rows, 1):
        missing = [k for k in required if not row.get(k)]
        if missing:
            raise KinfuseError(f"{path}: row {n}: missing {', '.join(missing)}")
    return rows


def guard_sources(config: InfuseConfig) -> list[str]:
    """The evaluation files (probes and retention) whose questions no training row may restate."""
    return list(config.eval.probes) + list(config.eval.retention)


def probe_guard(config: InfuseConfig) -> ProbeGuard:
    """The evaluation questions (probes and retention) that no training row may restate."""
    return ProbeGuard(guard_sources(config))


def as_text(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat rows as plain text rows ("question" newline "answer"), for a model used without a chat template."""
    return [{"text": f"{r['question']}\n{r['answer']}"} if "question" in r else r for r in rows]


def layout_blocks(chunker: Chunker, rounds: list[tuple[list[dict], list[dict], list[dict]]], *, anchor_kl: bool,
                  order: str) -> tuple[Any, ChunkStats, int]:
    """Blocks for rounds of (Q&A rows, text rows, anchor rows): with `anchor_kl` the anchor rows
    go in blocks of their own marked `anchor` (KL to the base model). `order` "mixed" packs
    every round together (the trainer shuffles all blocks each epoch); "qa_first" gives each
    round's Q&A blocks and then its text blocks ascending `phase` numbers, so they train in
    that order (pre-instruction-tuning, Jiang et al. 2024), the anchors spread over both."""
    from datasets import concatenate_datasets

    parts: list[Any] = []
    stats = ChunkStats()

    def chunk(rows: list[dict], anchor: bool, phase: int | list[int] | None) -> None:
        nonlocal stats
        if not rows:
            return
        blocks = chunker(rows)
        stats = stats + chunker.stats
        blocks = blocks.add_column("anchor", [anchor] * len(blocks))
        if phase is not None:
            phases = phase if isinstance(phase, list) else [phase] * len(blocks)
            blocks = blocks.add_column("phase", [phases[i % len(phases)] for i in range(len(blocks))])
        parts.append(blocks)

    if order == "mixed":
        learn = [row for qa, text, _ in rounds for row in text + qa]
        anchors = [row for *_, anchor_rows in rounds for row in anchor_rows]
        if anchor_kl:
            chunk(learn, False, None)
            chunk(anchors, True, None)
        else:
            chunk(learn + anchors, False, None)
    else:
        for r, (qa, text, anchor_rows) in enumerate(rounds):
            chunk(qa, False, 2 * r)
            if anchor_kl:
                chunk(text, False, 2 * r + 1)
                chunk(anchor_rows, True, [2 * r, 2 * r + 1])
            else:
                chunk(text + anchor_rows, False, 2 * r + 1)
    blocks = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if not anchor_kl or not any(blocks["anchor"]):
        blocks = blocks.remove_columns("anchor")
    return blocks, stats, sum(blocks["anchor"]) if "anchor" in blocks.column_names else 0


def training_qa(config: InfuseConfig, guard: ProbeGuard | None = None) -> list[dict[str, Any]]:
    """The Q&A rows of `data.qa_files`, refused if any question is (nearly) an evaluation probe:
    training on the probes would make them measure recall of the test, not knowledge."""
    rows = [row for path in config.data.qa_files for row in read_jsonl(path, ("question", "answer"))]
    guard = guard or probe_guard(config)
    clashes = [(row["question"], m) for row in rows if (m := guard.match(row["question"]))]
    if clashes:
        lines = "\n".join(f"  - {q!r} ~ probe {p!r} (word overlap {score:.2f})" for q, (p, score) in clashes)
        raise KinfuseError(
            f"{len(clashes)} training question(s) in data.qa_files are too close to evaluation probes:\n"
            f"{lines}\nreword or remove them (or the probes): the probes must be questions training never saw"
        )
    return rows


def replay_rows(texts: list[str], chars: int, seed: int) -> list[dict[str, str]]:
    """General-text paragraphs, shuffled and cycled, until they add up to `chars` characters."""
    if chars <= 0 or not texts:
        return []
    rng = random.Random(seed)
    rows, total = [], 0
    while total < chars:
        order = texts[:]
        rng.shuffle(order)
        for t in order:
            rows.append({"text": t})
            total += len(t)
            if total >= chars:
                break
    return rows


def self_distill_rows(
    evaluator: Evaluator, n: int, cache: Path, model_name: str, avoid: ProbeGuard | None = None
) -> list[dict[str, Any]]:
    """The base model's own answers to general prompts, as chat examples (cached per model).

    `avoid` drops prompts too close to evaluation questions.
    """
    if n <= 0:
        return []
    # never the held-out prompts KL is measured on, nor anything like a probe
    prompts = [q for q in general_prompts("train") if avoid is None or not avoid.match(q)][:n]
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if (saved.get("model"), saved.get("prompts"), saved.get("version")) == (model_name, prompts, _DISTILL_VERSION):
            return saved["rows"]
    # A longer limit than the probes': answers cut off mid-sentence are dropped below.
    limit, evaluator.max_new_tokens = evaluator.max_new_tokens, max(evaluator.max_new_tokens, 192)
    try:
        answers = evaluator.generate([{"question": q} for q in prompts], adapter=False)
    finally:
        evaluator.max_new_tokens = limit
    rows, dropped = [], []
    for q, (a, ended) in zip(prompts, answers):
        # An answer cut off by the limit is shortened to its last whole sentence (and then
        # ends its turn); one with no whole sentence is dropped: it would teach rambling.
        if not ended:
            a = whole_sentences(a, min_share=1 / 3)
        if not a:
            dropped.append({"question": q, "reason": "cut off before its first whole sentence"})
        elif repetitive(a):
            # A small model's greedy answer can loop ("you'll need vinaigrette, ... and a
            # vinaigrette" over and over): training on it would teach looping.
            dropped.append({"question": q, "reason": "repeats itself"})
        else:
            rows.append({"question": q, "answer": a, "source": "self-distill"})
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"model": model_name, "prompts": prompts, "version": _DISTILL_VERSION,
                                 "rows": rows, "dropped": dropped}, indent=1))
    return rows


_DISTILL_VERSION = 2  # bump when the filtering changes, so caches written before are redone


def repetitive(text: str, n: int = 5, max_share: float = 0.5) -> bool:
    """Whether more than `max_share` of the text's word n-grams repeat an earlier one: the
    signature of a decoding loop. The looping demo answer scored 0.72, the small model's
    other long answers 0.0-0.35; a few repetitive lists (0.5-0.62) go too, to be safe."""
    words = re.findall(r"\w+", text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return bool(grams) and 1 - len(set(grams)) / len(grams) > max_share


def infuse(config: InfuseConfig, *, corpus: Corpus | None = None, echo: Any = print) -> InfuseResult:
    """Run one infusion end to end and write adapter, metrics.json and train_log.jsonl to out_dir."""
    config.validate()
    started = time.perf_counter()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # -- setup: data and model -------------------------------------------------------
    corpus = corpus if corpus is not None else build_corpus(config)
    data = config.data
    guard = probe_guard(config)
    qa = training_qa(config, guard) * data.qa_repeats
    echo(corpus.report())
    # One round of rows per epoch when the rules write them, so each epoch sees other wordings;
    # the trainer then runs epochs / rounds passes over all the rounds (the same step count).
    uses_rules = bool(data.questions or data.document_variants)
    n_rounds = max(1, math.ceil(config.train.epochs)) if uses_rules and config.train.max_steps is None else 1
    # checkpoints and loss.png go with the run unless the train config says otherwise
    tokenizer = None
    if not config.chat:  # a base (completion) model: no chat template, Q&A rows as plain text
        tokenizer = load_tokenizer(resolve_model(config.model))
        tokenizer.chat_template = None
    trainer = QLoRATrainer(config.model, replace(config.train, output_dir=config.train.output_dir or str(out),
                                                 epochs=config.train.epochs / n_rounds), tokenizer=tokenizer)
    evaluator = Evaluator(trainer, max_new_tokens=config.eval.max_new_tokens, batch_size=config.eval.batch_size)
    rows: list[dict[str, Any]] = [{"text": d.text} for d in corpus] * data.corpus_repeats
    corpus_chars = sum(len(r["text"]) for r in rows)
    # opt-in (data.paraphrases / data.generated_qa): written before training, cached in out/augment.json
    augmented = augment_for_infusion(config, corpus, trainer, out / "augment.json", echo)
    # rule-based questions about every fact and rewritten documents (no writer model)
    synth = None
    if uses_rules:
        synth = synthesize(corpus, probes=guard_sources(config), seed=config.train.seed, answers=data.answers)
        synth.save(out / "generated.jsonl")
        echo(synth.report())
    general = [d.text for d in Corpus.from_paths(data.replay_paths)] if data.replay_paths else general_texts("train")
    replay = replay_rows(general, int(data.replay_ratio * corpus_chars), config.train.seed)
    distill = self_distill_rows(evaluator, data.self_distill, out / "self_distill.json",
                                trainer.model_name + ("" if config.chat else " (no chat template)"), guard)
    chunker = Chunker(trainer.tokenizer, data.block_size)
    rounds = []
    for r in range(n_rounds):
        qa_rows = qa + [row for row in augmented.rows if "question" in row]
        text_rows = rows + [row for row in augmented.rows if "question" not in row]
        if synth:
            qa_rows = qa_rows + synth.rows(r, data.questions)
            text_rows = text_rows + synth.texts(r, data.document_variants)
        anchor_rows = replay + distill
        if not config.chat:
            qa_rows, anchor_rows = as_text(qa_rows), as_text(anchor_rows)
        rounds.append((qa_rows, text_rows, anchor_rows))
    blocks, stats, anchor_blocks = layout_blocks(chunker, rounds, anchor_kl=data.anchor_kl, order=data.order)
    synth_qa = sum(len(r[0]) for r in rounds) - n_rounds * (len(qa) + sum("question" in x for x in augmented.rows))
    echo(
        f"training rows: {len(rows)} corpus, {len(qa)} Q&A, {len(replay)} replay, {len(distill)} self-distill"
        + (f", {synth_qa} rule-written Q&A and {sum(len(r[1]) for r in rounds) - n_rounds * len(rows)} document "
           f"variants over {n_rounds} rounds (one per epoch)" if synth else "")
        + f" -> {stats.blocks} blocks of {chunker.block_size} tokens "
        + (f"({anchor_blocks} of them anchors: KL to the base model) " if anchor_blocks else "")
        + f"({stats.tokens_packed} tokens, {stats.padding_fraction:.1%} padding)"
    )

    # -- train and checkpoint ----------------------------------------------------------
    log_path = out / "train_log.jsonl"
    log_path.unlink(missing_ok=True)
    train = trainer.train(blocks, log_path=log_path)
    trainer.save_adapter(out / "adapter")
    record = RunRecord(
        model=trainer.model_name, quantize=config.train.quantize, compute_dtype=train.compute_dtype,
        device=train.device, chat=config.chat, steps=train.steps, completed=not train.interrupted,
        checkpoint=train.checkpoint, config=asdict(config), kinfuse_version=kinfuse_version(),
    )
    record.write(out)
    echo(
        f"trained {train.steps} steps, loss {train.first_loss:.3f} -> {train.final_loss:.3f}, "
        f"{train.tokens_per_second:.0f} tokens/s, peak memory {train.peak_memory_bytes / 2**30:.2f} GiB"
    )

    result = InfuseResult(out_dir=out, train=train)
    if train.interrupted:  # SIGINT/SIGTERM: the user wants to stop, not to wait for evaluation
        echo(f"interrupted at step {train.steps}: checkpoint {train.checkpoint}; set train.resume = true "
             "and run again to continue")
        return result

    # -- evaluate: base (adapter off) vs adapted, in one model ---------------------------
    if config.eval.probes:
        result.probes = Comparison([r for p in config.eval.probes for r in evaluator.compare(p).results])
        echo("\n" + result.probes.table())
    if config.eval.retention:
        result.retention = Comparison([r for p in config.eval.retention for r in evaluator.compare(p).results])
        echo(
            f"retention: base answered {sum(r.base_correct for r in result.retention.results)}"
            f"/{len(result.retention.results)} general questions; adapted keeps {result.retention.retention():.0%}"
        )
    if config.eval.perplexity:
        result.perplexity = {"base": evaluator.perplexity(adapter=False), "adapted": evaluator.perplexity()}
        change = result.perplexity["adapted"] / result.perplexity["base"] - 1
        result.perplexity["change"] = change
        echo(f"general-text perplexity: base {result.perplexity['base']:.2f} -> adapted "
             f"{result.perplexity['adapted']:.2f} ({change:+.1%})")
        # KL(base || adapted) per token on general text and general chat prompts: forward passes only
        kl = {"general_text": evaluator.kl_divergence()}
        if getattr(trainer.tokenizer, "chat_template", None):
            kl["general_chat"] = evaluator.kl_divergence(chat=True)
    else:
        kl = {}

    result.metrics = {
        "model": trainer.model_name,
        "corpus": {"documents": len(corpus), "sources": [r.__dict__ for r in corpus.records]},
        "data": {"corpus_rows": len(rows), "qa_rows": len(qa), "replay_rows": len(replay),
                 "self_distill_rows": len(distill), "block_size": chunker.block_size,
                 "anchor_blocks": anchor_blocks, "rounds": n_rounds, "rule_qa_rows": synth_qa,
                 "document_variant_rows": sum(len(r[1]) for r in rounds) - n_rounds * len(rows), **stats.to_dict()},
        "train": {k: v for k, v in train.to_dict().items() if k != "history"},
        "probes": result.probes.to_dict() if result.probes else None,
        "retention": result.retention.to_dict() if result.retention else None,
        "perplexity": result.perplexity,
        "config": asdict(config),
        "seconds": time.perf_counter() - started,
    }
    from .report import build_report, summary, write_report

    report = build_report(probes=result.probes, retention=result.retention, perplexity=result.perplexity,
                          kl=kl, train=train, model=trainer.model_name, title=f"kinfuse report: {out.name}")
    # new keys only: the ones above keep their names and shapes
    result.metrics["kl"] = kl
    result.metrics["chat_behaviour"] = report["metrics"].get("chat")
    result.metrics["loglik"] = report["metrics"].get("loglik")
    result.metrics["augment"] = augmented.to_dict()
    result.metrics["synth"] = synth.to_dict() if synth else None
    json_path, html_path = write_report(report, out)
    result.metrics["report"] = {"json": str(json_path), "html": str(html_path)}
    (out / "metrics.json").write_text(json.dumps(result.metrics, indent=2, default=str))
    record.metrics = "metrics.json"
    record.write(out)
    echo("\n" + summary(report))
    echo(f"wrote {out / 'metrics.json'}, {html_path.name}, {json_path.name} and {out / 'adapter'} "
         f"in {result.metrics['seconds']:.0f} s")
    return result

