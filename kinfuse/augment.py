"""Knowledge augmentation (opt-in): paraphrases of each document and question-answer pairs
about it, written by a model.

A fact seen in one phrasing is memorised but hard to retrieve by a question (Allen-Zhu & Li,
Physics of Language Models 3.1); rewordings of the same text and questions about it make it
extractable. This module asks a *generator* for both:

- **paraphrases**: K rewrites of each section of each document, one per style in
  PARAPHRASE_STYLES (a different instruction each, so greedy decoding still gives K
  different texts), trained on as continued-pretraining text rows `{"text"}`;
- **Q&A**: N question-answer pairs per section, rendered as chat rows
  `{"question", "answer"}` (the Chunker trains on the answer tokens only).

The generator is, by default, the model being trained, through its chat template with the
LoRA adapter disabled (`Generator.from_spec(None, trainer=...)`), or any Hugging Face
model path / id, or a callable `fn(prompt: str) -> str` (an API client, a rule-based
rewriter in tests). Long documents are cut into sections at paragraph and sentence ends so
that each prompt fits the generator's context.

Every reply is checked, and what is dropped is reported with its reason (`AugmentResult.dropped`,
`AugmentResult.report()`): empty or malformed output, text cut off by the token limit,
numbers or capitalised names the source does not contain, answers whose content words mostly do not occur in
the section, questions that do not end with "?", duplicates, and any generated question that
matches an evaluation probe after normalisation or overlaps one heavily (word-set Jaccard
>= `probe_overlap`), so training never sees the probes.

Replies are cached in a JSON file keyed by the prompt (the section text, the style or pair
count), the generator's identity and the token limit: reruns do not regenerate, and the
checks (including probe exclusion) run again on the cached replies, so a changed probe file
takes effect without new generation. Every kept row carries its provenance: `source`
(document), `section`, `kind` ("paraphrase" or "qa"), `style` (paraphrases) and `generator`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import MAX_GENERATED_QA, MAX_PARAPHRASES, MIN_SECTION_CHARS
from .corpus import texts_with_sources
from .errors import KinfuseError
from .evaluator import BATCH_SIZE, chat_format_problem, load_probes, normalize, parse_qa_pairs

CACHE_VERSION = 1
SAVE_EVERY = 32  # prompts generated between cache writes
_FACTS = "Keep every fact, name, number and date exactly as they are, and add nothing that is not in the text."
PARAPHRASE_STYLES: tuple[tuple[str, str], ...] = (
    ("rewrite", "Rewrite the text below in your own words. " + _FACTS + "\n\nText:\n{text}"),
    ("news", "Rewrite the text below as a short news report. " + _FACTS + "\n\nText:\n{text}"),
    ("explain", "Explain the text below to a colleague in plain, simple sentences. " + _FACTS + "\n\nText:\n{text}"),
    ("facts", "List the facts stated in the text below, one complete sentence per line. " + _FACTS
     + "\n\nText:\n{text}"),
    ("formal", "Rewrite the text below in the formal style of an encyclopedia article. " + _FACTS
     + "\n\nText:\n{text}"),
)
assert len(PARAPHRASE_STYLES) == MAX_PARAPHRASES, "config.MAX_PARAPHRASES bounds data.paraphrases: one per style"
QA_INSTRUCTION = (
    "Read the text below and write {n} questions that it answers, each about a different fact stated in it. "
    "Answer each question with one short sentence that uses the words of the text. "
    "Write every pair on two lines, exactly like this:\nQ: <question>\nA: <answer>\n\nText:\n{text}"
)
_STOP = set(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that "
    "these those there their they them he she his her we our you your i me my do does did has have had not no "
    "so than then which who whom whose what when where why how can could will would shall should may might "
    "also about into over under after before up out more most some any each other such only own same very just "
    "one all both".split()
)
_PREAMBLE = re.compile(r"^\s*(sure|certainly|here is|here's|here are|rewritten|rewrite|paraphrase|news report|"
                       r"explanation|facts|the text|below)\b[^\n]{0,80}:\s*\n", re.I)


# -- text helpers --------------------------------------------------------------------------


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def content_words(text: str) -> list[str]:
    """Normalised words of a text without stop words (numbers kept), lightly stemmed."""
    return [_stem(w) for w in normalize(text).split() if w not in _STOP and (len(w) > 1 or w.isdigit())]


def grounding(text: str, source: str | set[str]) -> tuple[float, list[str]]:
    """(share of the text's content words found in the source, numbers absent from the source)."""
    known = source if isinstance(source, set) else set(content_words(source))
    words = content_words(text)
    if not words:
        return 0.0, []
    missing_numbers = sorted({w for w in words if any(c.isdigit() for c in w) and w not in known})
    return sum(w in known for w in words) / len(words), missing_numbers


def invented_names(text: str, source: str | set[str]) -> list[str]:
    """Capitalised words inside a sentence (names: "Amazon Echo", "Lions") that the source lacks:
    the small models' commonest invention, which the share of grounded words can miss."""
    known = source if isinstance(source, set) else set(content_words(source))
    out: list[str] = []
    for sentence in re.split(r"(?<=[.!?:])\s+|\n+", text):
        for word in re.findall(r"\b[A-Z][\w'-]*", sentence)[1:] if sentence[:1].isupper() else \
                re.findall(r"\b[A-Z][\w'-]*", sentence):
            key = content_words(word)
            if key and key[0] not in known and word not in out:
                out.append(word)
    return out


def split_sections(text: str, max_chars: int) -> list[str]:
    """Cut a document into sections of at most `max_chars` characters at paragraph ends, then
    sentence ends, then word ends; a short last section joins the one before."""
    units: list[str] = []
    for para in (p.strip() for p in re.split(r"\n\s*\n|\n", text)):
        if not para:
            continue
        if len(para) <= max_chars:
            units.append(para)
            continue
        for sentence in re.split(r"(?<=[.!?])\s+", para):
            while len(sentence) > max_chars:  # a "sentence" longer than a section: cut at a space
                cut = sentence.rfind(" ", 0, max_chars)
                cut = cut if cut > max_chars // 2 else max_chars
                units.append(sentence[:cut].strip())
                sentence = sentence[cut:].strip()
            if sentence:
                units.append(sentence)
    sections: list[str] = []
    for unit in units:
        if sections and len(sections[-1]) + 1 + len(unit) <= max_chars:
            sections[-1] += "\n" + unit
        else:
            sections.append(unit)
    if len(sections) > 1 and len(sections[-1]) < max_chars // 4:
        last = sections.pop()  # popped before the join: `sections[-2] += ... pop()` indexes a list it shrinks
        sections[-1] += "\n" + last
    return sections


def whole_sentences(text: str, min_share: float = 0.0) -> str:
    """`text` up to its last whole sentence; "" when there is none, or when what is left is
    no more than `min_share` of the text (too little of an answer cut off by a token limit)."""
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[: ends[-1]].strip() if ends and ends[-1] > len(text) * min_share else ""


def _trim_tail(text: str, known: set[str], min_share: float) -> str:
    """The text without trailing sentences that are not grounded in the source (a small model's
    "I hope this helps!" or a line of chatter after its answer); the first sentence always stays."""
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    while len(sentences) > 1:
        share, invented = grounding(sentences[-1], known)
        if share >= min_share and not invented:
            break
        sentences.pop()
    return " ".join(sentences)


def _ngrams(words: list[str], n: int = 4) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


# -- probes --------------------------------------------------------------------------------


class ProbeGuard:
    """Evaluation probe questions, and a test of whether a generated question is one of them:
    equal after normalisation, one containing the other, or word-set Jaccard >= `overlap`."""

    def __init__(self, probes: Iterable[Any] = (), overlap: float = 0.6):
        self.overlap = overlap
        self.questions: list[tuple[str, set[str], str]] = []
        for item in probes:
            if isinstance(item, Path) or (isinstance(item, str) and (item.endswith(".jsonl") or Path(item).is_file())):
                rows = load_probes(item)
            elif isinstance(item, dict):
                rows = [item]
            elif isinstance(item, str):
                rows = [{"question": item}]
            else:
                raise KinfuseError(f"probes: expected JSONL paths, probe dicts or question strings, got {item!r}")
            for row in rows:
                q = row.get("question") or row.get("prompt") or ""
                if normalize(q):
                    self.questions.append((normalize(q), set(normalize(q).split()), q))

    def match(self, question: str) -> tuple[str, float] | None:
        """(the probe question, overlap) that `question` is too close to, or None."""
        norm = normalize(question)
        words = set(norm.split())
        best: tuple[str, float] | None = None
        for pnorm, pwords, original in self.questions:
            contained = f" {pnorm} " in f" {norm} " or f" {norm} " in f" {pnorm} "  # as whole words
            if norm == pnorm or (min(len(norm), len(pnorm)) >= 20 and contained):
                return original, 1.0
            score = len(words & pwords) / len(words | pwords) if words | pwords else 0.0
            if score >= self.overlap and (best is None or score > best[1]):
                best = (original, round(score, 3))
        return best


# -- generators ----------------------------------------------------------------------------


class Generator:
    """Writes a reply to each prompt. Subclasses: FunctionGenerator (a callable) and
    ModelGenerator (a causal LM, batched, chat template, adapter off)."""

    name: str = "generator"
    context_tokens: int | None = None  # prompt + reply token limit, when known

    def cache_id(self) -> str:
        """What identifies this generator's replies in the cache."""
        return self.name

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[tuple[str, bool]]:
        """(reply, ended on its own rather than at the token limit) per prompt."""
        raise NotImplementedError

    def prompt_tokens(self, prompt: str) -> int | None:
        """Tokens the prompt takes in the generator's context, when it has one."""
        return None

    @staticmethod
    def from_spec(spec: Any, *, trainer: Any = None, batch_size: int = BATCH_SIZE, name: str | None = None) -> "Generator":
        """A Generator from None (the model being trained: `trainer`, adapter off), a Generator,
        a callable `fn(prompt) -> str`, a QLoRATrainer or (model, tokenizer) pair, or a Hugging
        Face model path / id (loaded without quantization)."""
        if isinstance(spec, Generator):
            return spec
        if spec is None:
            if trainer is None:
                raise KinfuseError("augmentation needs a generator: pass the trainer (the model being trained), "
                                   "a model path, or a callable fn(prompt) -> str")
            return ModelGenerator(trainer, batch_size=batch_size, name=name)
        if isinstance(spec, tuple) and len(spec) == 2:
            return ModelGenerator(spec[0], spec[1], batch_size=batch_size, name=name)
        if hasattr(spec, "model") and hasattr(spec, "tokenizer"):
            return ModelGenerator(spec, batch_size=batch_size, name=name)
        if isinstance(spec, (str, os.PathLike)):
            return ModelGenerator.load(str(spec), batch_size=batch_size)
        if callable(spec):
            return FunctionGenerator(spec, name=name)
        raise KinfuseError(f"augment generator {spec!r}: give a model path or id, a callable fn(prompt) -> str, "
                           "or None for the model being trained")


class FunctionGenerator(Generator):
    """A callable `fn(prompt: str) -> str`, called once per prompt; its replies count as ended."""

    def __init__(self, fn: Callable[[str], str], name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", None) or type(fn).__name__

    def cache_id(self) -> str:
        # A changed function body gives new replies, so its code is part of the key.
        try:
            code = inspect.getsource(self.fn)
        except (OSError, TypeError):
            code = ""
        return f"{self.name}:{hashlib.sha256(code.encode()).hexdigest()[:12]}"

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[tuple[str, bool]]:
        out = []
        for p in prompts:
            reply = self.fn(p)
            if not isinstance(reply, str):
                raise KinfuseError(f"augment generator {self.name} returned {type(reply).__name__}, not str")
            out.append((reply, True))
        return out


class ModelGenerator(Generator):
    """A causal LM writing greedy replies in batches through `Evaluator.generate`, with the LoRA
    adapter disabled (the base model's own words), in chat form when it has a chat template."""

    def __init__(self, model_or_trainer: Any, tokenizer: Any = None, *, batch_size: int = BATCH_SIZE, name: str | None = None):
        from .evaluator import Evaluator

        self.evaluator = Evaluator(model_or_trainer, tokenizer, batch_size=batch_size)
        model = self.evaluator.model
        self.name = name or str(getattr(model_or_trainer, "model_name", None)
                                or getattr(getattr(model, "config", None), "name_or_path", "") or "model")
        self.context_tokens = getattr(getattr(model, "config", None), "max_position_embeddings", None)

    @classmethod
    def load(cls, name: str, *, batch_size: int = BATCH_SIZE) -> "ModelGenerator":
        import torch

        from .models import load_model, load_tokenizer, resolve_model

        path = resolve_model(name)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        model = load_model(path, quantize="none", compute_dtype=dtype, device=device)
        return cls(model, load_tokenizer(path), batch_size=batch_size, name=name)

    def prompt_tokens(self, prompt: str) -> int:
        return len(self.evaluator._encode({"question": prompt})[1])

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[tuple[str, bool]]:
        ev = self.evaluator
        # Prompts of similar length share a batch: less padding, and greedy replies do not
        # depend on the batch. Replies come back in the prompts' order.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        limit, ev.max_new_tokens = ev.max_new_tokens, max_new_tokens
        try:
            replies = ev.generate([{"question": prompts[i]} for i in order], adapter=False)
        finally:
            ev.max_new_tokens = limit
        out: list[tuple[str, bool]] = [("", False)] * len(prompts)
        for i, reply in zip(order, replies):
            out[i] = reply
        return out


# -- the cache -----------------------------------------------------------------------------


class ReplyCache:
    """Generated replies on disk, keyed by prompt + generator + token limit (JSON, written atomically)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.replies: dict[str, dict[str, Any]] = {}
        if self.path and self.path.is_file():
            try:
                saved = json.loads(self.path.read_text())
            except json.JSONDecodeError as e:
                raise KinfuseError(f"augment cache {self.path} is not valid JSON ({e.msg}); delete it to regenerate") \
                    from None
            if saved.get("version") == CACHE_VERSION:
                self.replies = saved.get("replies", {})

    @staticmethod
    def key(generator: Generator, prompt: str, max_new_tokens: int) -> str:
        blob = json.dumps([generator.cache_id(), max_new_tokens, prompt], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def save(self) -> None:
        if not self.path:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"version": CACHE_VERSION, "replies": self.replies}, f, ensure_ascii=False, indent=0)
        os.replace(tmp, self.path)


# -- the result ----------------------------------------------------------------------------


@dataclass
class AugmentResult:
    rows: list[dict[str, Any]] = field(default_factory=list)  # training rows, each with provenance
    dropped: list[dict[str, Any]] = field(default_factory=list)  # {"kind", "source", "section", "reason", "item"}
    generated: Counter = field(default_factory=Counter)  # items written by the generator, per kind
    trimmed: Counter = field(default_factory=Counter)  # kept items whose ungrounded last sentences were cut, per kind
    replies_cached: int = 0  # replies read from the cache
    replies_generated: int = 0  # replies generated in this run
    generator: str = ""
    sections: int = 0  # document sections sent to the generator

    def kept(self, kind: str) -> int:
        return sum(r["kind"] == kind for r in self.rows)

    def drop_reasons(self, kind: str) -> Counter:
        return Counter(d["reason"].split(":")[0] for d in self.dropped if d["kind"] == kind)

    def to_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "sections": self.sections,
            "replies_cached": self.replies_cached,
            "replies_generated": self.replies_generated,
            **{kind: {"generated": self.generated[kind], "kept": self.kept(kind), "trimmed": self.trimmed[kind],
                      "dropped": dict(self.drop_reasons(kind))} for kind in ("paraphrase", "qa")},
            "dropped_items": self.dropped,
        }

    def report(self) -> str:
        if not self.generator:
            return "augmentation: off"
        lines = [f"augmentation by {self.generator}: {self.sections} sections, {self.replies_generated} replies "
                 f"generated, {self.replies_cached} from the cache"]
        for kind, label in (("paraphrase", "paraphrases"), ("qa", "Q&A pairs")):
            if self.generated[kind] or self.drop_reasons(kind):
                why = ", ".join(f"{n} {reason}" for reason, n in self.drop_reasons(kind).most_common())
                lines.append(f"  {label}: {self.kept(kind)} kept of {self.generated[kind]} written"
                             + (f" (dropped: {why})" if why else "")
                             + (f"; ungrounded last sentences cut from {self.trimmed[kind]}" if self.trimmed[kind] else ""))
        return "\n".join(lines)


# -- augmentation --------------------------------------------------------------------------


def augment(
    documents: Any,
    generator: Any,
    *,
    paraphrases: int = 0,
    qa_pairs: int = 0,
    probes: Iterable[Any] = (),
    cache: str | Path | None = None,
    section_chars: int = 1500,
    max_new_tokens: int = 512,
    min_grounding: float = 0.6,
    min_paraphrase_grounding: float = 0.5,
    probe_overlap: float = 0.6,
    trainer: Any = None,
) -> AugmentResult:
    """Write `paraphrases` rewrites and `qa_pairs` question-answer pairs per section of each
    document, check them, and return the kept training rows and the report of what was dropped.

    `documents`: a Corpus, Documents, dicts with "text" (and "source") or strings.
    `generator`: see `Generator.from_spec` (None: `trainer`'s model with the adapter off).
    `probes`: probe JSONL paths, probe dicts or question strings that no generated question
    may match. `cache`: JSON file of replies (reused on reruns). `section_chars`: longest
    section sent in one prompt (a section whose prompt and reply overflow a model
    generator's context is split further). `max_new_tokens`: reply limit for paraphrases
    (Q&A replies get 48 tokens per pair plus 64; a reply never more than half the context).
    `min_grounding`: share of an answer's content words that must occur in its section;
    `min_paraphrase_grounding`: the same for a paraphrase; `probe_overlap`: word-set Jaccard
    with a probe question from which a generated question is dropped.
    """
    problems = []
    if not isinstance(paraphrases, int) or not 0 <= paraphrases <= MAX_PARAPHRASES:
        problems.append(f"paraphrases={paraphrases!r}: must be an integer in [0, {MAX_PARAPHRASES}] "
                        f"(one per style: {', '.join(s for s, _ in PARAPHRASE_STYLES)})")
    if not isinstance(qa_pairs, int) or not 0 <= qa_pairs <= MAX_GENERATED_QA:
        problems.append(f"qa_pairs={qa_pairs!r}: must be an integer in [0, {MAX_GENERATED_QA}]")
    if not isinstance(section_chars, int) or section_chars < MIN_SECTION_CHARS:
        problems.append(f"section_chars={section_chars!r}: must be an integer >= {MIN_SECTION_CHARS}")
    for name, value in (("min_grounding", min_grounding), ("min_paraphrase_grounding", min_paraphrase_grounding),
                        ("probe_overlap", probe_overlap)):
        if not 0.0 <= value <= 1.0:
            problems.append(f"{name}={value!r}: must be in [0, 1]")
    if problems:
        raise KinfuseError("bad augmentation settings:\n" + "\n".join(f"  - {p}" for p in problems))
    result = AugmentResult()
    if not paraphrases and not qa_pairs:
        return result
    gen = Generator.from_spec(generator, trainer=trainer)
    result.generator = gen.name
    guard = ProbeGuard(probes, overlap=probe_overlap)
    para_limit, qa_limit = max_new_tokens, 64 + 48 * qa_pairs
    if gen.context_tokens:  # a reply may take at most half the context; the prompt the rest
        para_limit, qa_limit = min(para_limit, gen.context_tokens // 2), min(qa_limit, gen.context_tokens // 2)
    templates = [t for _, t in PARAPHRASE_STYLES[:paraphrases]] + ([QA_INSTRUCTION] if qa_pairs else [])
    longest = max(templates, key=len).replace("{n}", str(qa_pairs))

    jobs: list[dict[str, Any]] = []  # one prompt each
    for text, source in texts_with_sources(documents):
        sections = _fit(split_sections(text, section_chars), gen, longest,
                        max(para_limit if paraphrases else 0, qa_limit if qa_pairs else 0))
        for s, section in enumerate(sections):
            result.sections += 1
            for style, template in PARAPHRASE_STYLES[:paraphrases]:
                jobs.append({"kind": "paraphrase", "source": source, "section": s, "text": section, "style": style,
                             "prompt": template.format(text=section), "limit": para_limit})
            if qa_pairs:
                jobs.append({"kind": "qa", "source": source, "section": s, "text": section,
                             "prompt": QA_INSTRUCTION.format(n=qa_pairs, text=section), "limit": qa_limit})

    store = ReplyCache(cache)
    for job in jobs:
        job["key"] = ReplyCache.key(gen, job["prompt"], job["limit"])
    # Identical sections (boilerplate repeated across pages) give identical prompts: generated once.
    todo = list({j["key"]: j for j in jobs if j["key"] not in store.replies}.values())
    result.replies_cached = len({j["key"] for j in jobs}) - len(todo)
    for limit in sorted({j["limit"] for j in todo}):  # prompts with one token limit go in batches
        same = [j for j in todo if j["limit"] == limit]
        for start in range(0, len(same), SAVE_EVERY):
            group = same[start : start + SAVE_EVERY]
            for job, (reply, ended) in zip(group, gen.generate([j["prompt"] for j in group], limit)):
                store.replies[job["key"]] = {"reply": reply, "ended": ended, "generator": gen.name,
                                             "kind": job["kind"], "source": job["source"], "section": job["section"]}
            result.replies_generated += len(group)
            store.save()  # after each group, so an interrupted run keeps what it generated

    seen_text: set[str] = set()
    seen_questions: set[str] = set()
    for job in jobs:
        saved = store.replies[job["key"]]
        if job["kind"] == "paraphrase":
            _check_paraphrase(job, saved["reply"], saved["ended"], gen.name, guard, min_paraphrase_grounding,
                              seen_text, result)
        else:
            _check_qa(job, saved["reply"], saved["ended"], gen.name, guard, qa_pairs, min_grounding,
                      seen_questions, result)
    return result


def _fit(sections: list[str], gen: Generator, template: str, reply_tokens: int) -> list[str]:
    """Sections whose prompt plus reply fit the generator's context: one that does not is
    split again at half its length (down to 200 characters)."""
    if not gen.context_tokens:
        return sections
    out: list[str] = []
    for section in sections:
        used = gen.prompt_tokens(template.format(text=section))
        if used is not None and used + reply_tokens > gen.context_tokens and len(section) > 200:
            out += _fit(split_sections(section, max(200, len(section) // 2)), gen, template, reply_tokens)
        else:
            out.append(section)
    return out


def _drop(result: AugmentResult, job: dict[str, Any], reason: str, item: Any) -> None:
    result.dropped.append({"kind": job["kind"], "source": job["source"], "section": job["section"],
                           "reason": reason, "item": item})


def _check_paraphrase(job: dict[str, Any], reply: str, ended: bool, by: str, guard: ProbeGuard, min_share: float,
                      seen: set[str], result: AugmentResult) -> None:
    result.generated["paraphrase"] += 1
    text = _PREAMBLE.sub("", reply.strip(), count=1).strip()
    if not ended:  # cut at the token limit: keep the whole sentences
        text = whole_sentences(text)
        if not text:
            return _drop(result, job, "cut off: no whole sentence before the token limit", reply[:300])
    if not text:
        return _drop(result, job, "empty", reply[:300])
    problem = chat_format_problem(text)
    if problem:
        return _drop(result, job, f"malformed: {problem}", text[:300])
    words, source_words = content_words(text), content_words(job["text"])
    trimmed = _trim_tail(text, set(source_words), 0.01)
    if trimmed != text:
        result.trimmed["paraphrase"] += 1
        text, words = trimmed, content_words(trimmed)
    if len(words) < 0.25 * len(source_words):
        return _drop(result, job, f"too short: {len(words)} content words for a section of {len(source_words)}",
                     text[:300])
    share, invented = grounding(text, set(source_words))
    if invented:
        return _drop(result, job, f"invented numbers: {', '.join(invented[:5])}", text[:300])
    names = invented_names(text, set(source_words))
    if names:
        return _drop(result, job, f"invented names: {', '.join(names[:5])}", text[:300])
    if share < min_share:
        return _drop(result, job, f"not grounded: {share:.0%} of its content words are in the section "
                                  f"(min {min_share:.0%})", text[:300])
    grams, source_grams = _ngrams(normalize(text).split()), _ngrams(normalize(job["text"]).split())
    if grams and len(grams & source_grams) >= 0.8 * len(grams):
        return _drop(result, job, "copies the section: 80%+ of its 4-word runs are the section's", text[:300])
    key = normalize(text)
    if key in seen:
        return _drop(result, job, "duplicate of another paraphrase", text[:300])
    for pnorm, _, original in guard.questions:
        if len(pnorm) >= 20 and pnorm in key:
            return _drop(result, job, f"contains probe question: {original}", text[:300])
    seen.add(key)
    result.rows.append({"text": text, "kind": "paraphrase", "style": job["style"], "source": job["source"],
                        "section": job["section"], "generator": by})


def _check_qa(job: dict[str, Any], reply: str, ended: bool, by: str, guard: ProbeGuard, n: int, min_share: float,
              seen: set[str], result: AugmentResult) -> None:
    pairs = parse_qa_pairs(reply or "")
    if not ended and pairs:  # the last pair may have been cut mid-answer
        result.generated["qa"] += 1
        _drop(result, job, "cut off at the token limit", {"question": pairs[-1][0], "answer": pairs[-1][1]})
        pairs = pairs[:-1]
    if not pairs:
        return _drop(result, job, "no Q/A pairs found in the reply", (reply or "")[:300])
    source_words = set(content_words(job["text"]))
    kept = 0
    for question, answer in pairs:
        result.generated["qa"] += 1
        trimmed = _trim_tail(answer, source_words, min_share)
        if trimmed != answer:
            result.trimmed["qa"] += 1
            answer = trimmed
        item = {"question": question, "answer": answer}
        q_words = content_words(question)
        share, invented = grounding(answer, source_words)
        match = guard.match(question)
        if not answer.strip():
            _drop(result, job, "empty answer", item)
        elif not question.rstrip().endswith("?"):
            _drop(result, job, "question does not end with '?'", item)
        elif len(normalize(question).split()) < 3:
            _drop(result, job, "question under 3 words", item)
        elif problem := chat_format_problem(answer):
            _drop(result, job, f"malformed answer: {problem}", item)
        elif not content_words(answer):
            _drop(result, job, "answer has no content words", item)
        elif normalize(answer) == normalize(question) or set(content_words(answer)) <= set(q_words):
            _drop(result, job, "answer only repeats the question", item)
        elif invented:
            _drop(result, job, f"invented numbers: {', '.join(invented[:5])}", item)
        elif names := invented_names(answer, source_words):
            _drop(result, job, f"invented names: {', '.join(names[:5])}", item)
        elif answer.rstrip().endswith((":", ",", ";")):
            _drop(result, job, "answer is incomplete (ends with a colon or comma)", item)
        elif share < min_share:
            _drop(result, job, f"not grounded: {share:.0%} of the answer's content words are in the section "
                               f"(min {min_share:.0%})", item)
        elif match:
            _drop(result, job, f"matches probe (overlap {match[1]:.2f}): {match[0]}", item)
        elif normalize(question) in seen:
            _drop(result, job, "duplicate question", item)
        elif kept >= n:
            _drop(result, job, f"over the {n} pairs asked", item)
        else:
            kept += 1
            seen.add(normalize(question))
            result.rows.append({"question": question, "answer": answer, "kind": "qa", "source": job["source"],
                                "section": job["section"], "generator": by})


def augment_for_infusion(config: Any, corpus: Any, trainer: Any, cache: str | Path,
                         echo: Callable[[str], Any] = print) -> AugmentResult:
    """The pipeline's call: `config.data.paraphrases` / `generated_qa` per section of the corpus,
    written by `config.data.augment_model` (None: the model being trained, adapter off),
    never matching `config.eval.probes` or `config.eval.retention` questions."""
    data = config.data
    if not (data.paraphrases or data.generated_qa):
        return AugmentResult()
    result = augment(
        corpus,
        Generator.from_spec(data.augment_model, trainer=trainer, batch_size=config.eval.batch_size),
        paraphrases=data.paraphrases,
        qa_pairs=data.generated_qa,
        probes=list(config.eval.probes) + list(config.eval.retention),
        cache=cache,
        section_chars=data.augment_section_chars,
    )
    echo(result.report())
    return result


__all__ = [
    "AugmentResult", "FunctionGenerator", "Generator", "ModelGenerator", "PARAPHRASE_STYLES", "ProbeGuard",
    "QA_INSTRUCTION", "ReplyCache", "augment", "augment_for_infusion", "content_words", "grounding",
    "invented_names", "split_sections",
]
