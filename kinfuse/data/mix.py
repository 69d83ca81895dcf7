"""The training mix: every row one infusion trains on, and how the rows become blocks.

Training on the corpus text alone makes a model recite its sentences, not answer questions
about them, and costs general answers it knew. So the mix holds:
- the corpus text, repeated `corpus_repeats` times (continued pretraining);
- chat Q&A about the corpus: hand-written (`qa_files`), rule-written about every fact
  (`questions`, kinfuse.data.synth) and model-written (`generated_qa`, kinfuse.data.augment),
  trained on the answer tokens, so facts become retrievable by questions;
- rewritten documents (`document_variants`, `paraphrases`);
- anchors: replay of general text (`replay_ratio`) and self-distillation (`self_distill`:
  general prompts answered by the base model itself), which hold what the model knew; with
  `anchor_kl` they go in blocks of their own, trained on KL to the base model.

Rule-written rows come in rounds, one per epoch, so each epoch sees other wordings of a fact.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import io
from ..config import InfuseConfig
from ..corpus import Corpus
from ..errors import ConfigError, KinfuseError
from ..generate import TextGenerator
from ..progress import seconds
from .augment import AugmentResult, augment_for_infusion, whole_sentences
from .chunker import Chunker, ChunkStats
from .probes import ProbeGuard, general_prompts, general_texts, guard_sources, load_probes
from .synth import Synthesis, synthesize

Rows = list[dict[str, Any]]


def read_rows(path: str | Path, required: tuple[str, ...]) -> Rows:
    """Rows of a JSONL file that must each carry the `required` fields."""
    rows = io.read_jsonl(path)
    for n, row in enumerate(rows, 1):
        missing = [k for k in required if not row.get(k)]
        if missing:
            raise KinfuseError(f"{path}: row {n}: missing {', '.join(missing)}")
    return rows


def check_input_files(config: InfuseConfig) -> None:
    """Read every probe, retention and Q&A file with the readers the run uses later, and check the
    replay paths exist, raising one ConfigError that lists each problem: the probes are otherwise
    read only after training, so a typo in a path would cost a whole run."""
    problems = []
    readers = {("eval", "probes"): load_probes, ("eval", "retention"): load_probes,
               ("data", "qa_files"): lambda path: read_rows(path, ("question", "answer"))}
    for (section, name), read in readers.items():
        for i, path in enumerate(getattr(getattr(config, section), name)):
            try:
                read(path)
            except (KinfuseError, OSError, UnicodeDecodeError) as e:
                text = str(e) if isinstance(e, KinfuseError) else f"cannot be read as UTF-8 JSONL ({e})"
                lines = [line.strip().removeprefix("- ") for line in text.splitlines() if line.strip()]
                if len(lines) > 1 and lines[0].endswith(":"):  # a heading ("bad probes:") over the list
                    lines = lines[1:]
                reason = "; ".join(lines)
                problems.append(f"{section}.{name}[{i}]={path!r}: {reason}; fix the file, or its path "
                                f"in {section}.{name}")
    for i, path in enumerate(config.data.replay_paths):
        if not Path(path).exists():
            problems.append(f"data.replay_paths[{i}]={path!r}: no such file or folder; fix the path, or remove "
                            "it to replay the shipped general text")
    if problems:
        raise ConfigError(problems, "infusion config")


def training_qa(config: InfuseConfig, guard: ProbeGuard | None = None) -> Rows:
    """The Q&A rows of `data.qa_files`, refused if any question is (nearly) an evaluation probe:
    training on the probes would make them measure recall of the test, not knowledge."""
    rows = [row for path in config.data.qa_files for row in read_rows(path, ("question", "answer"))]
    guard = guard or ProbeGuard(guard_sources(config))
    clashes = [(row["question"], m) for row in rows if (m := guard.match(row["question"]))]
    if clashes:
        lines = "\n".join(f"  - {q!r} ~ probe {p!r} (word overlap {score:.2f})" for q, (p, score) in clashes)
        raise KinfuseError(
            f"{len(clashes)} training question(s) in data.qa_files are too close to evaluation probes:\n"
            f"{lines}\nreword or remove them (or the probes): the probes must be questions training never saw"
        )
    return rows


def replay_rows(texts: list[str], chars: int, seed: int) -> Rows:
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


DISTILL_VERSION = 2  # bump when the filtering changes, so caches written before are redone


def self_distill_rows(gen: TextGenerator, n: int, cache: Path, model_name: str, avoid: ProbeGuard | None = None,
                      echo: Any = print) -> Rows:
    """The base model's own answers to general prompts, as chat examples (cached per model).

    `avoid` drops prompts too close to evaluation questions. A cache that does not read (a
    truncated file) is answered afresh and rewritten, with a note.
    """
    if n <= 0:
        return []
    # never the held-out prompts KL is measured on, nor anything like a probe
    prompts = [q for q in general_prompts("train") if avoid is None or not avoid.match(q)][:n]
    if cache.is_file():
        why = "not a JSON object"
        try:
            saved = json.loads(cache.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            saved, why = None, f"{type(e).__name__}: {e}"
        if not isinstance(saved, dict):
            echo(f"note: {cache} does not read ({why}); answering the self-distillation prompts again")
        if (isinstance(saved, dict) and isinstance(saved.get("rows"), list)
                and (saved.get("model"), saved.get("prompts"), saved.get("version")) == (model_name, prompts,
                                                                                         DISTILL_VERSION)):
            return saved["rows"]
    # A longer limit than the probes': answers cut off mid-sentence are dropped below.
    answers = gen.generate([{"question": q} for q in prompts], adapter=False,
                           max_new_tokens=max(gen.max_new_tokens, 192), desc="self-distillation")
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
    io.write_json(cache, {"model": model_name, "prompts": prompts, "version": DISTILL_VERSION,
                          "rows": rows, "dropped": dropped})
    return rows


def repetitive(text: str, n: int = 5, max_share: float = 0.5) -> bool:
    """Whether more than `max_share` of the text's word n-grams repeat an earlier one: the
    signature of a decoding loop. A few repetitive lists go too, to be safe (thresholds in
    benchmarks/README.md)."""
    words = re.findall(r"\w+", text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return bool(grams) and 1 - len(set(grams)) / len(grams) > max_share


def as_text(rows: Rows) -> Rows:
    """Chat rows as plain text rows ("question" newline "answer"), for a model used without a chat template."""
    return [{"text": f"{r['question']}\n{r['answer']}"} if "question" in r else r for r in rows]


@dataclass
class Round:
    """One epoch's rows: Q&A (trained on the answers), text, and anchors (what to keep)."""

    qa: Rows
    text: Rows
    anchors: Rows


@dataclass
class TrainingMix:
    corpus: Rows  # the corpus text, repeated
    qa: Rows  # hand-written Q&A (data.qa_files), repeated
    replay: Rows
    distill: Rows
    rounds: list[Round]
    augmented: AugmentResult = field(default_factory=AugmentResult)
    synth: Synthesis | None = None

    @classmethod
    def build(cls, config: InfuseConfig, corpus: Corpus, qa: Rows, trainer: Any, gen: TextGenerator, out: Path,
              echo: Any = print) -> TrainingMix:
        """Every row of the mix around the hand-written `qa` (`training_qa`, checked before any
        model loads). Model-written augmentation (opt-in) and self-distilled answers are cached
        in `out` (augment.json, self_distill.json); rule-written questions are saved to
        out/generated.jsonl with the ones dropped and why."""
        data = config.data
        guard = ProbeGuard(guard_sources(config))
        qa = qa * data.qa_repeats
        corpus_rows = [{"text": d.text} for d in corpus] * data.corpus_repeats
        augmented = augment_for_infusion(config, corpus, trainer, out / "augment.json", echo)
        synth = None
        if data.questions or data.document_variants:
            synth = synthesize(corpus, probes=guard_sources(config), seed=config.train.seed, answers=data.answers)
            synth.save(out / "generated.jsonl")
            echo(synth.report())
        general = [d.text for d in Corpus.from_paths(data.replay_paths)] if data.replay_paths else general_texts("train")
        replay = replay_rows(general, int(data.replay_ratio * sum(len(r["text"]) for r in corpus_rows)),
                             config.train.seed)
        started = time.perf_counter()
        distill = self_distill_rows(gen, data.self_distill, out / "self_distill.json",
                                    trainer.model_name + ("" if config.chat else " (no chat template)"), guard,
                                    echo=echo)
        if data.self_distill:  # the one summary line of a phase that runs minutes on a CPU
            echo(f"self-distillation: kept {len(distill)} of the base model's answers to general prompts "
                 f"(self_distill = {data.self_distill}) in {seconds(time.perf_counter() - started)}; "
                 f"{out / 'self_distill.json'} lists those dropped and why")
        rounds = []
        for r in range(cls.round_count(config)):
            qa_rows = qa + [row for row in augmented.rows if "question" in row]
            text_rows = corpus_rows + [row for row in augmented.rows if "question" not in row]
            if synth:
                qa_rows = qa_rows + synth.rows(r, data.questions)
                text_rows = text_rows + synth.texts(r, data.document_variants)
            anchor_rows = replay + distill
            if not config.chat:  # a base model: Q&A as plain text
                qa_rows, anchor_rows = as_text(qa_rows), as_text(anchor_rows)
            rounds.append(Round(qa_rows, text_rows, anchor_rows))
        return cls(corpus_rows, qa, replay, distill, rounds, augmented, synth)

    @staticmethod
    def round_count(config: InfuseConfig) -> int:
        """One round per epoch when the rules write rows (each epoch other wordings); the trainer
        then runs epochs / rounds passes over all of them, the same number of steps."""
        uses_rules = bool(config.data.questions or config.data.document_variants)
        return max(1, math.ceil(config.train.epochs)) if uses_rules and config.train.max_steps is None else 1

    def rule_qa_rows(self) -> int:
        n_model_qa = sum("question" in x for x in self.augmented.rows)
        return sum(len(r.qa) for r in self.rounds) - len(self.rounds) * (len(self.qa) + n_model_qa)

    def variant_rows(self) -> int:
        return sum(len(r.text) for r in self.rounds) - len(self.rounds) * len(self.corpus)

    def blocks(self, chunker: Chunker, *, anchor_kl: bool, order: str) -> tuple[Any, ChunkStats, int]:
        """(blocks, their stats, how many are anchor blocks). With `anchor_kl` the anchor rows go
        in blocks of their own marked `anchor` (KL to the base model). `order` "mixed" packs
        every round together (the trainer shuffles all blocks each epoch); "qa_first" gives each
        round's Q&A blocks and then its text blocks ascending `phase` numbers, so they train in
        that order (pre-instruction-tuning, Jiang et al. 2024), the anchors spread over both."""
        from datasets import concatenate_datasets

        parts: list[Any] = []
        stats = ChunkStats()

        def chunk(rows: Rows, anchor: bool, phase: int | list[int] | None) -> None:
            nonlocal stats
            if not rows:
                return
            blocks, chunk_stats = chunker.chunk(rows, anchor=anchor)
            stats = stats + chunk_stats
            if phase is not None:
                phases = phase if isinstance(phase, list) else [phase] * len(blocks)
                blocks = blocks.add_column("phase", [phases[i % len(phases)] for i in range(len(blocks))])
            parts.append(blocks)

        if order == "mixed":
            learn = [row for r in self.rounds for row in r.text + r.qa]
            anchors = [row for r in self.rounds for row in r.anchors]
            if anchor_kl:
                chunk(learn, False, None)
                chunk(anchors, True, None)
            else:
                chunk(learn + anchors, False, None)
        else:
            for i, r in enumerate(self.rounds):
                chunk(r.qa, False, 2 * i)
                if anchor_kl:
                    chunk(r.text, False, 2 * i + 1)
                    chunk(r.anchors, True, [2 * i, 2 * i + 1])
                else:
                    chunk(r.text + r.anchors, False, 2 * i + 1)
        blocks = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        if not anchor_kl or not any(blocks["anchor"]):
            blocks = blocks.remove_columns("anchor")
        return blocks, stats, sum(blocks["anchor"]) if "anchor" in blocks.column_names else 0

    def describe(self, stats: ChunkStats, anchor_blocks: int, block_size: int) -> str:
        """The one line the recipe prints about what it will train on."""
        return (
            f"training rows: {len(self.corpus)} corpus, {len(self.qa)} Q&A, {len(self.replay)} replay, "
            f"{len(self.distill)} self-distill"
            + (f", {self.rule_qa_rows()} rule-written Q&A and {self.variant_rows()} document variants over "
               f"{len(self.rounds)} rounds (one per epoch)" if self.synth else "")
            + f" -> {stats.blocks} blocks of {block_size} tokens "
            + (f"({anchor_blocks} of them anchors: KL to the base model) " if anchor_blocks else "")
            + f"({stats.tokens_packed} tokens, {stats.padding_fraction:.1%} padding)"
        )

    def to_dict(self, stats: ChunkStats, anchor_blocks: int, block_size: int) -> dict[str, Any]:
        """metrics.json's "data" section."""
        return {"corpus_rows": len(self.corpus), "qa_rows": len(self.qa), "replay_rows": len(self.replay),
                "self_distill_rows": len(self.distill), "block_size": block_size, "anchor_blocks": anchor_blocks,
                "rounds": len(self.rounds), "rule_qa_rows": self.rule_qa_rows(),
                "document_variant_rows": self.variant_rows(), **stats.to_dict()}
