"""Configuration dataclasses. The TOML file and the CLI map onto these, field for field.

The `kinfuse infuse` flags (`--train.lora_r 8`) and their help are derived from these fields,
their types and their comments (kinfuse.cli), so a field's comment is also its user-facing help.
Each config has one `validate()` that reports every problem at once, so a user fixes a
config in one pass rather than one error per run. A field's type is stated once, by its
annotation: the CLI parses its flag by it and `validate()` checks values from a TOML file, a
dict or Python against it (finite numbers only) before the range rules run. The bounds that
kinfuse.data.augment checks too are constants here, so both read one number.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .fieldtypes import field_types, fits, type_problems

SCHEDULES = ("cosine", "linear", "constant")
OPTIMIZERS = ("auto", "adamw", "paged_adamw_32bit", "paged_adamw_8bit")
DTYPES = ("auto", "bfloat16", "float16", "float32")
QUANTIZE = ("nf4", "none")
ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2", "flex_attention")
KERNELS = ("none", "auto", "triton", "torch")
DISTRIBUTED = ("ddp", "fsdp")
FSDP_LOADING = ("sharded", "whole")
ORDERS = ("mixed", "qa_first")
ANSWERS = ("sentence", "span-first", "span")
MAX_RULE_ROUNDS = 20  # most rule-written questions per fact / document variants per epoch
# One paraphrase per style: kinfuse.data.augment.PARAPHRASE_STYLES has this many (and asserts it).
MAX_PARAPHRASES = 5
MAX_GENERATED_QA = 20  # question-answer pairs per document section
MIN_SECTION_CHARS = 200  # shortest section limit for a generation prompt
MAX_SOURCE_BYTES = 20_000_000  # CorpusConfig.max_bytes: one page or file, after decompression
FETCH_DEADLINE = 120.0  # CorpusConfig.deadline: seconds for one URL, redirects and retries included
# AdamW moves every weight by about the learning rate per step whatever the gradient's scale,
# and LoRA weights are of order 0.01: a rate above 1 overshoots on the first steps and leaves
# NaN in the adapter. Such a value is a typo (2e-4 written as 2e4), not a setting.
MAX_LEARNING_RATE = 1.0
# General-text tokens per corpus token: beyond this the run trains on little but replay, and a
# typo (5e5 for 0.5) would build replay rows until memory runs out.
MAX_REPLAY_RATIO = 100.0
# kinfuse.train.blocks seeds torch with seed * 1_000_003 + epoch, which must fit in 64 bits.
MAX_SEED = 2**32 - 1


@dataclass
class TrainConfig:
    """How the adapter is trained (QLoRATrainer)."""

    lora_r: int = 16  # LoRA rank: capacity of the adapter
    lora_alpha: int = 32  # LoRA scale numerator; the update is scaled by alpha / r
    lora_dropout: float = 0.05  # dropout on the LoRA input; regularises small corpora
    target_modules: str | list[str] = "all-linear"  # peft target modules; "all-linear" = every projection
    use_rslora: bool = False  # rank-stabilised scaling alpha / sqrt(r) (peft)
    use_dora: bool = False  # weight-decomposed LoRA (peft); slower, sometimes better
    quantize: str = "nf4"  # "nf4": 4-bit NF4 base with double quantization (QLoRA); "none": 16/32-bit base
    learning_rate: float = 2e-4  # peak learning rate of the LoRA weights
    # Full-matrix training of the token embeddings / output layer (peft modules_to_save: a trainable
    # copy, saved in the adapter). Models that tie lm_head to the embeddings (SmolLM2, Llama-3.2-1B)
    # have one matrix for both, so these two must then be set alike.
    train_embeddings: bool = False  # also train the input token embeddings (new vocabulary, new names)
    train_lm_head: bool = False  # also train the output layer (lm_head)
    embedding_learning_rate: float | None = None  # peak lr of embeddings/lm_head; None: learning_rate / 10
    lr_schedule: str = "cosine"  # decay after warmup: cosine, linear or constant
    warmup_steps: int = 0  # linear warmup from 0 to learning_rate, in optimizer steps
    epochs: float = 1.0  # passes over the blocks (ignored when max_steps is set)
    max_steps: int | None = None  # optimizer steps to run; overrides epochs
    micro_batch_size: int = 1  # blocks per forward/backward pass
    grad_accum: int = 1  # micro-batches per optimizer step
    max_grad_norm: float | None = 1.0  # gradient clipping; None disables it
    weight_decay: float = 0.0  # AdamW weight decay on the LoRA weights
    # Blocks marked anchor (an "anchor" column; DataConfig.anchor_kl makes them) are trained to
    # keep the base model's next-token distributions: KL(base || adapted) at their target
    # positions, times this weight, in place of cross-entropy.
    anchor_kl_weight: float = 1.0
    optimizer: str = "auto"  # auto: paged AdamW 32-bit on CUDA, torch AdamW elsewhere
    compute_dtype: str = "auto"  # auto: bf16 on GPUs that support it, else fp16 on CUDA; on a CPU bf16 where it has native bf16 (AVX512-BF16, AMX), else fp32
    gradient_checkpointing: bool = True  # recompute activations in backward: less memory, more time
    attention: str = "auto"  # attention implementation; auto: flash-attn if importable on CUDA, else sdpa
    device: str = "auto"  # "auto" (CUDA when present), "cpu" or "cuda[:N]"
    # Under torchrun: "ddp" = every process holds the whole model and trains its share of each step;
    # "fsdp" = FSDP-QLoRA, the model's weights sharded over the processes, for models too big for one
    # card (QLoRATrainer in Python; kinfuse infuse needs "ddp": it evaluates on rank 0 alone)
    distributed: str = "ddp"
    # distributed = "fsdp": "sharded" = each process builds the model empty and reads, quantizes and keeps
    # only its shard of each weight from the safetensors files (no process holds the whole model);
    # "whole" = each process loads the whole model, then FSDP cuts it (the NF4 model must fit one card)
    fsdp_loading: str = "sharded"
    offload_activations: bool = False  # CUDA: keep checkpointed activations in CPU memory (longer blocks)
    # CPU with glibc: allocations of this many bytes or more get their own mmap and go back to the
    # OS when freed. glibc's default threshold rises during a run (up to 32 MiB), after which each
    # layer's freed activations stay in a growing heap. A low threshold (e.g. 1 << 20) lowers the
    # peak RSS but costs speed (page faults): a trade for tight memory.
    # Process-wide and kept after training; None (default) leaves malloc as it is.
    cpu_mmap_threshold: int | None = None
    # Custom kernels (kinfuse.kernels): "auto" = the Triton ops on CUDA when triton imports (faster
    # and leaner there), else "none" (on a CPU the stock modules are faster than the torch twins);
    # "none" = stock HF/peft modules (the loss still uses the fused output layer + cross-entropy
    # in torch, which is exact and leaner); "triton" = Triton only (error where it cannot run);
    # "torch" = the pure-torch twins patched in (the same path as Triton, checkable on a CPU).
    kernels: str = "auto"
    seed: int = 0  # seeds LoRA init, dropout and data order (0 to 4294967295)
    # checkpoints (output_dir/checkpoints/step-N), loss.png, tensorboard/; in an infusion run unset means out_dir
    output_dir: str | None = None
    save_every: int | None = None  # checkpoint every N optimizer steps (and always on SIGINT/SIGTERM)
    resume: bool = False  # continue from the newest complete checkpoint in output_dir, if any
    resume_from: str | None = None  # continue from this checkpoint folder
    eval_every: int | None = None  # eval loss on the held-out blocks every N steps
    tensorboard: bool = False  # also log to output_dir/tensorboard (needs the tensorboard package)
    log_every: int = 1  # optimizer steps between metrics-log lines
    progress: bool = True  # show a progress bar with loss, tokens/s and memory

    def problems(self) -> list[str]:
        return _checked(self)

    def _range_problems(self, wrong: set[str]) -> list[str]:
        p: list[str] = []
        _positive(p, "lora_r", self.lora_r)
        _positive(p, "lora_alpha", self.lora_alpha)
        if not 0.0 <= self.lora_dropout < 1.0:
            p.append(f"lora_dropout={self.lora_dropout}: must be in [0, 1)")
        if not self.target_modules:
            p.append("target_modules: give 'all-linear' or a non-empty list of module names")
        _choice(p, "quantize", self.quantize, QUANTIZE)
        _learning_rate(p, "learning_rate", self.learning_rate)
        if self.embedding_learning_rate is not None:
            _learning_rate(p, "embedding_learning_rate", self.embedding_learning_rate, " (or leave it out)")
            if not (self.train_embeddings or self.train_lm_head or {"train_embeddings", "train_lm_head"} & wrong):
                p.append("embedding_learning_rate is set but nothing uses it: also set train_embeddings "
                         "and/or train_lm_head, or drop it")
        _choice(p, "lr_schedule", self.lr_schedule, SCHEDULES)
        if self.warmup_steps < 0:
            p.append(f"warmup_steps={self.warmup_steps}: must be >= 0")
        if self.max_steps is None and not self.epochs > 0:
            p.append(f"epochs={self.epochs}: must be > 0 (or set max_steps)")
        if self.max_steps is not None:
            _positive(p, "max_steps", self.max_steps)
        _positive(p, "micro_batch_size", self.micro_batch_size)
        _positive(p, "grad_accum", self.grad_accum)
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            p.append(f"max_grad_norm={self.max_grad_norm}: must be > 0, or None to disable clipping")
        if self.weight_decay < 0:
            p.append(f"weight_decay={self.weight_decay}: must be >= 0")
        if not self.anchor_kl_weight >= 0:
            p.append(f"anchor_kl_weight={self.anchor_kl_weight}: must be >= 0")
        _choice(p, "optimizer", self.optimizer, OPTIMIZERS)
        _choice(p, "compute_dtype", self.compute_dtype, DTYPES)
        _choice(p, "attention", self.attention, ATTENTION)
        _choice(p, "kernels", self.kernels, KERNELS)
        _choice(p, "distributed", self.distributed, DISTRIBUTED)
        _choice(p, "fsdp_loading", self.fsdp_loading, FSDP_LOADING)
        if not (self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:")):
            p.append(f"device={self.device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        _positive(p, "log_every", self.log_every)
        if not 0 <= self.seed <= MAX_SEED:
            p.append(f"seed={self.seed}: must be an integer from 0 to {MAX_SEED}")
        if self.cpu_mmap_threshold is not None:
            _positive(p, "cpu_mmap_threshold", self.cpu_mmap_threshold)
        for name in ("save_every", "eval_every"):
            if getattr(self, name) is not None:
                _positive(p, name, getattr(self, name))
        if (self.save_every or self.resume or self.tensorboard) and not self.output_dir:
            p.append("save_every / resume / tensorboard need output_dir: where checkpoints and logs go "
                     "(an infusion run uses its out_dir)")
        if self.distributed == "fsdp":
            p += self._fsdp_problems()
        return p

    def _fsdp_problems(self) -> list[str]:
        """What FSDP-QLoRA (kinfuse.train.fsdp) cannot run, each with the way on."""
        p = []
        if self.train_embeddings or self.train_lm_head:
            p.append('train_embeddings / train_lm_head with distributed = "fsdp": the full embedding and '
                     'output-layer copies are not sharded here; set both False, or use distributed = "ddp"')
        if self.optimizer not in ("auto", "adamw"):
            p.append(f'optimizer = "{self.optimizer}" with distributed = "fsdp": bitsandbytes\' paged and '
                     "8-bit optimizers update whole tensors, not the shards FSDP keeps; set optimizer = \"auto\" "
                     "or \"adamw\" (torch AdamW: the LoRA optimizer state is small)")
        if self.use_dora and self.fsdp_loading == "sharded":
            p.append('use_dora with fsdp_loading = "sharded": DoRA\'s magnitude is computed from the base weights '
                     'when the adapter is made, before the sharded loader has read them; set fsdp_loading = "whole"')
        if self.kernels in ("triton", "torch"):
            # "torch" would not fail but silently run the stock forward for every projection.
            p.append(f'kernels = "{self.kernels}" with distributed = "fsdp": the NF4 LoRA op (Triton or its '
                     "torch twin) reads the quantization state from the weight, which the weight FSDP gathers "
                     'does not carry; set kernels = "auto" (the stock modules under FSDP) or "none"')
        return p

    def validate(self) -> "TrainConfig":
        _raise(self.problems(), "TrainConfig")
        return self


@dataclass
class CorpusConfig:
    """Where the knowledge comes from (Corpus)."""

    urls: list[str] = field(default_factory=list)  # web pages, fetched with httpx
    paths: list[str] = field(default_factory=list)  # files or folders (HTML, text, Markdown, JSONL)
    # Fetch URLs whose host is or resolves to a loopback, link-local, private or reserved address
    # (127.0.0.1, 169.254.169.254, 10.x, 192.168.x, ...). Off by default: a page or redirect could
    # otherwise read internal services or cloud metadata into the corpus and the adapter.
    allow_private: bool = False
    # Largest page or file kept, in bytes after decompression: one source cannot fill memory or
    # become a document a run cannot train on; a larger one is skipped with a record.
    max_bytes: int = MAX_SOURCE_BYTES
    # Seconds one URL's fetch may take in all (redirects and retries included), so a server that
    # trickles its body cannot stall the run.
    deadline: float = FETCH_DEADLINE

    def problems(self) -> list[str]:
        return _checked(self)

    def _range_problems(self, wrong: set[str]) -> list[str]:
        p = [] if self.urls or self.paths or wrong else [
            "urls / paths: both empty; give at least one (web pages or files)"]
        if "max_bytes" not in wrong and self.max_bytes < 1:
            p.append(f"max_bytes={self.max_bytes}: must be a positive number of bytes")
        if "deadline" not in wrong and self.deadline <= 0:
            p.append(f"deadline={self.deadline}: must be a positive number of seconds")
        return p


@dataclass
class DataConfig:
    """How training blocks are built (Chunker), with replay and Q&A augmentation."""

    block_size: int | None = None  # tokens per block; None: min(2048, the model's max length)
    qa_files: list[str] = field(default_factory=list)  # JSONL {"question", "answer"}: chat Q&A about the corpus
    replay_ratio: float = 0.0  # general-text tokens mixed in per corpus token (the shipped sample by default)
    replay_paths: list[str] = field(default_factory=list)  # general text for replay instead of the shipped sample
    self_distill: int = 0  # general prompts answered by the base model and trained on, to keep chat behaviour
    corpus_repeats: int = 1  # copies of the corpus text per epoch (small corpora need several)
    qa_repeats: int = 1  # copies of the Q&A rows per epoch: weight of chat answers against raw text
    # Replay text and self-distilled answers as anchors: trained to keep the base model's
    # next-token distributions (KL, TrainConfig.anchor_kl_weight) rather than as text to learn.
    anchor_kl: bool = False
    # Rule-based augmentation (kinfuse.data.synth): no writer model, every fact of the corpus. Each
    # epoch sees other wordings and variants (the rows are laid out one round per epoch).
    questions: int = 1  # questions per fact per epoch, written by rules from every sentence, table row and FAQ; 0: off
    document_variants: int = 0  # rewritten copies of each document per epoch (pronouns resolved, shuffled, by section)
    order: str = "mixed"  # "mixed": each epoch shuffles all its blocks; "qa_first": its Q&A blocks, then the rest
    # rule-written answers: "span-first" (the fact's words, then the sentence), "sentence" or "span" (words alone)
    answers: str = "span-first"
    # Augmentation (kinfuse.data.augment, opt-in), generated once and cached in out_dir/augment.json:
    paraphrases: int = 0  # rewrites per document section, one per style (at most 5), trained as text; 0: off
    generated_qa: int = 0  # question-answer pairs per document section, trained as chat; 0: off
    augment_model: str | None = None  # their writer: None = the model being trained (adapter off), or a path / HF id
    augment_section_chars: int = 1500  # longest document section in one generation prompt, in characters

    def problems(self) -> list[str]:
        return _checked(self)

    def _range_problems(self, wrong: set[str]) -> list[str]:
        p: list[str] = []
        if self.block_size is not None:
            _positive(p, "block_size", self.block_size)
        if not 0 <= self.replay_ratio <= MAX_REPLAY_RATIO:
            p.append(f"replay_ratio={self.replay_ratio}: must be from 0 to {MAX_REPLAY_RATIO:g} "
                     "(general-text tokens per corpus token)")
        if self.self_distill < 0:
            p.append(f"self_distill={self.self_distill}: must be >= 0")
        _positive(p, "corpus_repeats", self.corpus_repeats)
        _positive(p, "qa_repeats", self.qa_repeats)
        for name in ("questions", "document_variants"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_RULE_ROUNDS:
                p.append(f"{name}={value!r}: must be an integer from 0 to {MAX_RULE_ROUNDS} (0 turns it off)")
        _choice(p, "order", self.order, ORDERS)
        _choice(p, "answers", self.answers, ANSWERS)
        if not 0 <= self.paraphrases <= MAX_PARAPHRASES:
            p.append(f"paraphrases={self.paraphrases!r}: must be an integer from 0 to {MAX_PARAPHRASES} "
                     "(one rewrite per style)")
        if not 0 <= self.generated_qa <= MAX_GENERATED_QA:
            p.append(f"generated_qa={self.generated_qa!r}: must be an integer from 0 to {MAX_GENERATED_QA} "
                     "(pairs per section)")
        if self.augment_model is not None and not self.augment_model:
            p.append(f"augment_model={self.augment_model!r}: give a model path or HF id, or leave it unset "
                     "for the model being trained")
        if self.augment_section_chars < MIN_SECTION_CHARS:
            p.append(f"augment_section_chars={self.augment_section_chars!r}: must be an integer >= {MIN_SECTION_CHARS}")
        return p


@dataclass
class EvalConfig:
    """What the Evaluator asks before and after training."""

    probes: list[str] = field(default_factory=list)  # JSONL knowledge probes about the corpus
    retention: list[str] = field(default_factory=list)  # JSONL general questions the base model should keep
    perplexity: bool = True  # perplexity on the shipped general-text sample, base vs adapted
    max_new_tokens: int = 64  # answer length limit for greedy generation
    batch_size: int = 32  # answers generated per batch (kinfuse.generate.BATCH_SIZE: why 32)

    def problems(self) -> list[str]:
        return _checked(self)

    def _range_problems(self, wrong: set[str]) -> list[str]:
        p: list[str] = []
        _positive(p, "max_new_tokens", self.max_new_tokens)
        _positive(p, "batch_size", self.batch_size)
        return p


# The infusion recipe: what `InfuseConfig()` trains with where a config leaves a field out.
# The component dataclasses keep neutral defaults (a bare TrainConfig is a plain QLoRA run);
# these are the knowledge settings chosen on the demo's development probes (README, "From pages
# alone"). Speed settings (gradient checkpointing, attention) stay per machine.
def recipe_data() -> DataConfig:
    # replay and self-distilled answers as KL anchors keep general answers; 512-token blocks
    # give the short Q&A rows more optimizer steps than 2048 would
    return DataConfig(block_size=512, replay_ratio=0.5, self_distill=67, anchor_kl=True)


def recipe_train() -> TrainConfig:
    return TrainConfig(learning_rate=1e-3, warmup_steps=4, epochs=4, anchor_kl_weight=5.0)


def recipe_eval() -> EvalConfig:
    return EvalConfig(max_new_tokens=96)  # room to end a turn: within 64 the base ends few of its answers


@dataclass
class InfuseConfig:
    """One infusion run: corpus -> blocks -> training -> evaluation -> out_dir.

    Its defaults are the infusion recipe (recipe_data, recipe_train, recipe_eval); a TOML
    section, dict or command-line flag overrides the fields it names and keeps the recipe's others."""

    model: str = "default"  # Hugging Face id, local checkpoint folder, or "default" (embedded SmolLM2-135M)
    # false: use the model as a base (completion) model, without its chat template: Q&A rows
    # train as plain text ("question" newline "answer") and probes are asked as plain text
    chat: bool = True
    out_dir: str = "out"  # where the adapter, metrics.json and the training log go
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    data: DataConfig = field(default_factory=recipe_data)
    train: TrainConfig = field(default_factory=recipe_train)
    eval: EvalConfig = field(default_factory=recipe_eval)

    def validate(self) -> "InfuseConfig":
        p = _checked(self)
        for section in ("train", "corpus", "data", "eval"):
            value, kind = getattr(self, section), field_types(InfuseConfig)[section]
            if not isinstance(value, kind):
                p.append(f"{section}={value!r}: must be a {kind.__name__} (in TOML, a [{section}] table)")
                continue
            # train.output_dir defaults to out_dir, unless out_dir is itself wrong (reported above)
            checked = self.trainer_config() if section == "train" and fits(str, self.out_dir) else value
            p += [f"{section}.{x}" for x in checked.problems()]
        _raise(p, "infusion config")
        return self

    def _range_problems(self, wrong: set[str]) -> list[str]:
        p = []
        if not str(self.model).strip():
            p.append(f"model={self.model!r}: give a Hugging Face id, a local model folder or \"default\"")
        if not str(self.out_dir).strip():
            p.append(f"out_dir={self.out_dir!r}: give the folder the run writes to (default \"out\")")
        if getattr(self.train, "distributed", None) == "fsdp":
            p.append('train.distributed = "fsdp": kinfuse infuse builds the training mix and evaluates with '
                     "the model on rank 0 alone, which a model sharded over the processes cannot do; set "
                     'distributed = "ddp" (each process holds the whole model), or train a model too big for '
                     'one card with QLoRATrainer(model, TrainConfig(distributed="fsdp")) under torchrun '
                     '(README, "Bigger than one GPU")')
        return p

    def trainer_config(self) -> TrainConfig:
        """The train section as this run trains with it: without its own output_dir, the run folder
        (out_dir) holds the checkpoints, so resume, save_every and tensorboard need nothing more."""
        return dataclasses.replace(self.train, output_dir=self.train.output_dir or self.out_dir)

    @classmethod
    def from_toml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> "InfuseConfig":
        """Read a TOML file; relative paths in it are taken relative to the file's folder.
        `overrides` (see from_dict) replace the fields they name."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError([f"no such config file: {path}"], "infusion config")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError([f"{path}: not valid TOML: {e}"], "infusion config") from None
        return cls.from_dict(raw, base_dir=path.parent, overrides=overrides)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base_dir: Path | None = None,
                  overrides: dict[str, Any] | None = None) -> "InfuseConfig":
        """The recipe with the fields `raw` names replaced (relative paths in it taken from
        `base_dir`), then those `overrides` names (same shape, e.g. the command line's flags; their
        paths stay as given), validated once at the end so a flag can fix what the file lacks."""
        cfg = cls()._replaced(raw)
        if base_dir is not None:
            cfg.resolve_paths(base_dir)
        return cfg._replaced(overrides or {}).validate()

    def _replaced(self, raw: dict[str, Any]) -> "InfuseConfig":
        """A copy with the fields `raw` names replaced; unknown keys are errors, all listed at once."""
        problems: list[str] = []
        sections = ("corpus", "data", "train", "eval")
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key in sections:
                if not isinstance(value, dict):
                    problems.append(f"[{key}] must be a table")
                    continue
                kwargs[key] = _build(getattr(self, key), value, key, problems)
            elif key in ("model", "out_dir", "chat"):
                kwargs[key] = value
            else:
                problems.append(f"unknown key {key!r} (known: model, out_dir, chat, {', '.join(sections)})")
        _raise(problems, "infusion config")
        return dataclasses.replace(self, **kwargs)

    def resolve_paths(self, base: Path) -> None:
        """Relative paths taken from `base` (the TOML file's folder), so a run started from another
        folder reads the same files and writes, and resumes, the same run folder. Values of the
        wrong type are left as they are for validate() to report."""
        def fix(p: Any) -> Any:
            if not isinstance(p, str) or not p:
                return p
            return p if Path(p).is_absolute() else str((base / p).resolve())

        def fix_all(paths: Any) -> Any:
            return [fix(p) for p in paths] if isinstance(paths, list) else paths

        self.corpus.paths = fix_all(self.corpus.paths)
        self.data.qa_files = fix_all(self.data.qa_files)
        self.data.replay_paths = fix_all(self.data.replay_paths)
        self.eval.probes = fix_all(self.eval.probes)
        self.eval.retention = fix_all(self.eval.retention)
        self.out_dir = fix(self.out_dir)
        self.train.output_dir = fix(self.train.output_dir)
        self.train.resume_from = fix(self.train.resume_from)
        # a model is a Hugging Face id unless it is written as a path ("~" is the user's, not relative)
        for owner, name in ((self, "model"), (self.data, "augment_model")):
            value = getattr(owner, name)
            if isinstance(value, str) and written_as_path(value) and not value.startswith("~"):
                setattr(owner, name, fix(value))


def written_as_path(name: str) -> bool:
    """Whether a model name can only be a path (kinfuse.models.is_model_path): written from ".",
    "/" or "~", or with more than one "/", which a Hugging Face id ("name", "owner/name") never is."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def _build(default: Any, values: dict[str, Any], section: str, problems: list[str]) -> Any:
    """The section's dataclass: `default` with the fields `values` names replaced."""
    known = {f.name for f in dataclasses.fields(default)}
    unknown = sorted(set(values) - known)
    for name in unknown:
        problems.append(f"[{section}] unknown key {name!r} (known: {', '.join(sorted(known))})")
    return dataclasses.replace(default, **{k: v for k, v in values.items() if k in known})


def _checked(config: Any) -> list[str]:
    """Every problem of `config`'s own fields: each value against its annotated type, then the
    range rules (its `_range_problems`) with the fields of the wrong type at their defaults, so
    one run lists both kinds at once and a rule never compares text with a number. The rules are
    told which fields were wrong, so a rule across fields does not blame a stand-in default."""
    p, wrong = type_problems(config)
    return p + dataclasses.replace(config, **wrong)._range_problems(set(wrong))


def _learning_rate(p: list[str], name: str, value: float, alternative: str = "") -> None:
    if not 0 < value <= MAX_LEARNING_RATE:
        p.append(f"{name}={value!r}: must be > 0 and at most {MAX_LEARNING_RATE:g}{alternative}; "
                 "LoRA learning rates are usually 1e-5 to 1e-3")


def _positive(p: list[str], name: str, value: int) -> None:
    if value <= 0:
        p.append(f"{name}={value!r}: must be a positive integer")


def _choice(p: list[str], name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        p.append(f"{name}={value!r}: choose one of {', '.join(options)}")


def _raise(problems: list[str], where: str) -> None:
    if problems:
        raise ConfigError(problems, where)
