"""Evaluator: ask the same probes to the base model and to the adapted one, and score both.

Base and adapted share one set of weights: the base answers come from the same model with
the LoRA adapter disabled, so nothing is loaded twice. Probes are JSONL rows
`{"question": ...}` (asked in chat form when the tokenizer has a chat template) or
`{"prompt": ...}` (plain completion), each with `answers`: accepted spans and aliases, and
optionally `distractors`: wrong answers for the log-likelihood score.

What it measures:
- knowledge gained: closed-book answers matched against the accepted answers after
  normalisation (`compare`), and, for probes with distractors, whether the best accepted
  answer is likelier than every distractor as a continuation of the prompt (`loglik`);
- knowledge lost: perplexity on general text (`perplexity`), the mean per-token
  KL(base || adapted) between next-token distributions on general text and general chat
  prompts (`kl_divergence`), retention of the general answers the base model got right
  (`Comparison.retention`), chat behaviour kept: answers that end their turn and are in chat
  format (`chat_format_problem`, `Comparison.chat_behaviour`), and optionally
  lm-evaluation-harness tasks (`lm_eval`).

`generate_probes` asks a model to write question/answer probes about a corpus (opt-in); they
go to their own JSONL, never into training rows.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .corpus import texts_with_sources
from .errors import KinfuseError

_THOUSANDS = re.compile(r"(?<=\d)[,\u202f\u00a0 ](?=\d{3}\b)")
_PUNCT = re.compile(r"[^\w\s.]|(?<!\d)\.|\.(?!\d)")

# The 2023 reference workflow's generation settings (sampling at a near-zero temperature).
REFERENCE_SAMPLING = {"max_new_tokens": 200, "top_p": 0.9, "temperature": 0.01}
# Answers generated per batch: on 2 CPU cores 32 answers of the 135M model take 51 s in one
# batch and 124 s in four of 8 (decoding reads the weights once per step for the whole batch).
BATCH_SIZE = 32
SAMPLING_MODES = ("greedy", "reference")


def normalize(text: str) -> str:
    """Lowercase, NFKC, "3,200" -> "3200", punctuation (but decimal points) -> spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _THOUSANDS.sub("", text)
    text = _PUNCT.sub(" ", text).replace("_", " ")
    return " ".join(text.split())


def answer_matches(text: str, answers: Iterable[str]) -> bool:
    """True when a normalised accepted answer occurs in the normalised text as whole words."""
    hay = f" {normalize(text)} "
    return any(f" {normalize(a)} " in hay for a in answers if normalize(a))


def load_probes(source: str | Path | Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Read probes from a JSONL file (or take a list of dicts) and check every row at once."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise KinfuseError(f"no such probes file: {path}")
        rows, problems = [], []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                problems.append(f"{path}:{n}: not JSON ({e.msg})")
        name = str(path)
    else:
        rows, problems, name = list(source), [], "probes"
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not (row.get("question") or row.get("prompt")):
            problems.append(f"{name} row {i + 1}: needs a 'question' or 'prompt'")
        elif not isinstance(row.get("answers"), list) or not row["answers"]:
            problems.append(f"{name} row {i + 1}: needs 'answers', a non-empty list of accepted answers")
        elif "distractors" in row:
            d = row["distractors"]
            if not isinstance(d, list) or not d or not all(isinstance(x, str) and x.strip() for x in d):
                problems.append(f"{name} row {i + 1}: 'distractors' must be a non-empty list of non-empty strings")
            else:
                accepted = {normalize(a) for a in row["answers"]}
                clash = [x for x in d if normalize(x) in accepted]
                if clash:
                    problems.append(f"{name} row {i + 1}: distractor {clash[0]!r} is also an accepted answer")
    if problems:
        raise KinfuseError("bad probes:\n" + "\n".join(f"  - {p}" for p in problems))
    if not rows:
        raise KinfuseError(f"{name}: no probes")
    return rows


def _split(items: list[str], split: str) -> list[str]:
    # Every third item is held out for measuring forgetting; the rest may be trained on
    # (replay, self-distillation). Measuring on text the model was trained on would hide
    # forgetting, so the two parts never overlap.
    if split == "all":
        return items
    if split not in ("eval", "train"):
        raise KinfuseError(f"split={split!r}: use 'eval' (held out), 'train' or 'all'")
    return [x for i, x in enumerate(items) if (i % 3 == 2) == (split == "eval")]


def general_texts(split: str = "eval") -> list[str]:
    """The general-text sample shipped with kinfuse (written for the project), one paragraph each.

    split: "eval" (held-out paragraphs, for perplexity and KL), "train" (for replay) or "all".
    """
    text = resources.files("kinfuse").joinpath("data/general.txt").read_text()
    return _split([p.strip() for p in text.split("\n\n") if p.strip()], split)


def general_prompts(split: str = "eval") -> list[str]:
    """The general chat prompts shipped with kinfuse (questions a chat model should keep answering).

    split: "eval" (held out, for KL and chat behaviour), "train" (for self-distillation) or "all".
    """
    text = resources.files("kinfuse").joinpath("data/general_prompts.jsonl").read_text()
    return _split([json.loads(line)["question"] for line in text.splitlines() if line.strip()], split)


# -- chat format ---------------------------------------------------------------------------

# Special tokens of common chat templates: in decoded text (special tokens skipped) any of
# these means the model wrote a role marker as plain text.
ROLE_MARKERS = (
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "[INST]", "[/INST]", "<start_of_turn>",
    "<end_of_turn>", "<s>", "</s>",
)
_ROLE_WORDS = ("user", "assistant", "system", "human")
_ROLE_LINE = re.compile(r"^\s*(?:#+\s*)?(user|assistant|system|human)\s*(?::.*)?$", re.I)
_ROLE_PREFIX = re.compile(r"^\s*(?:#+\s*)?(user|assistant|system|human)\s*:", re.I)
_CHAR_LOOP = re.compile(r"(\w{1,10}?)\1{9,}")


def chat_format_problem(text: str) -> str | None:
    """Why an answer is not in chat format, or None when it is. The check, in order:

    - empty: nothing but whitespace;
    - role marker: a chat-template token written as text (`<|im_start|>`, `[INST]`, ... see ROLE_MARKERS);
    - role at the start: the first line is a role name ("assistant", "user\\n...", "Assistant: ...");
    - new turn: a later line that is a role name alone ("user") or opens a user turn ("User: ...",
      "### Human: ..."): the model went on to write the conversation itself;
    - repetition loop: the same word 6+ times in a row, a short unit repeated 10+ times
      ("hahahaha..."), or, in 16+ words, fewer than half of the word trigrams distinct.
    """
    if not text.strip():
        return "empty"
    for marker in ROLE_MARKERS:
        if marker in text:
            return f"role marker {marker!r}"
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    first = lines[0].strip().lower().rstrip(":")
    if first in _ROLE_WORDS or _ROLE_PREFIX.match(lines[0]):
        return f"starts with a role line {lines[0].strip()[:30]!r}"
    for ln in lines[1:]:
        m = _ROLE_LINE.match(ln)
        if m and (ln.strip().lower().rstrip(":") in _ROLE_WORDS or m.group(1).lower() in ("user", "human")):
            return f"writes a new turn {ln.strip()[:30]!r}"
    words = normalize(text).split()
    run = 1
    for a, b in zip(words, words[1:]):
        run = run + 1 if a == b else 1
        if run >= 6:
            return f"repetition loop ({a!r} repeated)"
    if _CHAR_LOOP.search(text):
        return "repetition loop (a short unit repeated)"
    if len(words) >= 16:
        grams = list(zip(words, words[1:], words[2:]))
        if len(set(grams)) < 0.5 * len(grams):
            return "repetition loop (repeated phrases)"
    return None


def is_chat_format(text: str) -> bool:
    """True when `chat_format_problem` finds nothing wrong."""
    return chat_format_problem(text) is None


# -- results -------------------------------------------------------------------------------


@dataclass
class LoglikScore:
    """Length-normalised log-likelihood (mean log-prob per token) of each candidate answer."""

    answers: list[float]  # one per accepted answer
    distractors: list[float]  # one per distractor

    @property
    def correct(self) -> bool:
        """The best accepted answer beats every distractor (strictly)."""
        return max(self.answers) > max(self.distractors)

    @property
    def margin(self) -> float:
        """Best accepted answer minus best distractor, nats per token."""
        return max(self.answers) - max(self.distractors)


@dataclass
class ProbeResult:
    kind: str  # "chat" or "completion"
    prompt: str  # the question or completion prompt as written
    answers: list[str]
    base_answer: str
    adapted_answer: str
    base_correct: bool
    adapted_correct: bool
    base_ended: bool  # generation stopped with EOS / end of turn before the token limit
    adapted_ended: bool
    # chat probes only (None for completion): the answer passes chat_format_problem
    base_format_ok: bool | None = None
    adapted_format_ok: bool | None = None
    # probes with distractors only (None otherwise): log-likelihood score, base and adapted
    distractors: list[str] = field(default_factory=list)
    base_loglik_correct: bool | None = None
    adapted_loglik_correct: bool | None = None
    base_loglik_margin: float | None = None  # best answer minus best distractor, nats/token
    adapted_loglik_margin: float | None = None
    source: str | None = None  # the probe's provenance when it has one (generated probes do)


@dataclass
class Comparison:
    results: list[ProbeResult] = field(default_factory=list)

    def accuracy(self, which: str, kind: str | None = None) -> float:
        rows = [r for r in self.results if kind is None or r.kind == kind]
        if not rows:
            return float("nan")
        return sum(getattr(r, f"{which}_correct") for r in rows) / len(rows)

    @property
    def base_accuracy(self) -> float:
        return self.accuracy("base")

    @property
    def adapted_accuracy(self) -> float:
        return self.accuracy("adapted")

    def loglik_accuracy(self, which: str) -> float:
        """Share of probes with distractors where the best accepted answer is the likeliest."""
        rows = [getattr(r, f"{which}_loglik_correct") for r in self.results]
        rows = [x for x in rows if x is not None]
        return sum(rows) / len(rows) if rows else float("nan")

    def retention(self) -> float:
        """Of the probes the base model answers correctly, the share the adapted one still does."""
        kept = [r for r in self.results if r.base_correct]
        return sum(r.adapted_correct for r in kept) / len(kept) if kept else float("nan")

    def chat_behaviour(self) -> dict[str, Any]:
        """Over chat probes: the share of answers that end their turn, that are in chat format
        (`chat_format_problem`), and that do both ("ok"), base and adapted; and `end_kept`, of
        the answers whose base version ended its turn, the share whose adapted one does too
        (a base model's long answers run past a short generation limit, so the plain rate
        rewards an adapter for terseness; this one asks whether it still ends where it did)."""
        rows = [r for r in self.results if r.kind == "chat"]
        ended_base = [r for r in rows if r.base_ended]
        out: dict[str, Any] = {"n": len(rows), "end_kept": (sum(bool(r.adapted_ended) for r in ended_base)
                                                            / len(ended_base) if ended_base else float("nan"))}
        for which in ("base", "adapted"):
            ended = [getattr(r, f"{which}_ended") for r in rows]
            fmt = [bool(getattr(r, f"{which}_format_ok")) for r in rows]
            n = len(rows) or float("nan")
            out[f"{which}_ended_rate"] = sum(ended) / n
            out[f"{which}_format_rate"] = sum(fmt) / n
            out[f"{which}_ok_rate"] = sum(e and f for e, f in zip(ended, fmt)) / n
        return out

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": len(self.results)}
        for kind in sorted({r.kind for r in self.results}):
            rows = [r for r in self.results if r.kind == kind]
            out[kind] = {
                "n": len(rows),
                "base_accuracy": self.accuracy("base", kind),
                "adapted_accuracy": self.accuracy("adapted", kind),
                "base_ended_rate": sum(r.base_ended for r in rows) / len(rows),
                "adapted_ended_rate": sum(r.adapted_ended for r in rows) / len(rows),
            }
            if kind == "chat":
                b = self.chat_behaviour()
                out[kind].update({k: b[k] for k in ("base_format_rate", "adapted_format_rate",
                                                     "base_ok_rate", "adapted_ok_rate")})
        out["base_accuracy"], out["adapted_accuracy"] = self.base_accuracy, self.adapted_accuracy
        out["retention"] = self.retention()
        scored = [r for r in self.results if r.base_loglik_correct is not None]
        if scored:
            out["loglik"] = {
                "n": len(scored),
                "base_accuracy": self.loglik_accuracy("base"),
                "adapted_accuracy": self.loglik_accuracy("adapted"),
                "base_mean_margin": sum(r.base_loglik_margin for r in scored) / len(scored),
                "adapted_mean_margin": sum(r.adapted_loglik_margin for r in scored) / len(scored),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "results": [asdict(r) for r in self.results]}

    def table(self, width: int = 44) -> str:
        def cut(s: str) -> str:
            s = " ".join(s.split())
            return s if len(s) <= width else s[: width - 1] + "…"

        lines = [f"{'probe':<{width}} | {'base answer':<{width}} | adapted answer"]
        lines.append("-" * (3 * width + 6))
        for r in self.results:
            b = ("✓ " if r.base_correct else "✗ ") + cut(r.base_answer)
            a = ("✓ " if r.adapted_correct else "✗ ") + cut(r.adapted_answer)
            lines.append(f"{cut(r.prompt):<{width}} | {b:<{width}} | {a}")
        lines.append(f"accuracy: base {self.base_accuracy:.0%} -> adapted {self.adapted_accuracy:.0%}")
        if any(r.base_loglik_correct is not None for r in self.results):
            lines.append(f"log-likelihood accuracy: base {self.loglik_accuracy('base'):.0%} -> adapted "
                         f"{self.loglik_accuracy('adapted'):.0%}")
        return "\n".join(lines)


# -- the evaluator -------------------------------------------------------------------------


class Evaluator:
    """Compare base and adapted answers on probes, with the adapter toggled in one model.

    `trainer_or_model` is a QLoRATrainer or a (peft) model; `tokenizer` is needed with a model.
    `sampling="greedy"` (default) decodes greedily; `sampling="reference"` uses the 2023
    reference workflow's settings (top_p 0.9, temperature 0.01, 200 new tokens unless
    `max_new_tokens` is given), seeded with `seed` so reruns repeat.
    """

    def __init__(
        self,
        trainer_or_model: Any,
        tokenizer: Any = None,
        *,
        max_new_tokens: int | None = None,
        batch_size: int = BATCH_SIZE,
        sampling: str = "greedy",
        seed: int = 0,
    ):
        model = getattr(trainer_or_model, "model", None)
        if model is not None and hasattr(trainer_or_model, "tokenizer"):  # a QLoRATrainer
            tokenizer = tokenizer or trainer_or_model.tokenizer
        else:
            model = trainer_or_model
        if tokenizer is None:
            raise KinfuseError("Evaluator(model, tokenizer): a tokenizer is needed when passing a model")
        if sampling not in SAMPLING_MODES:
            raise KinfuseError(f"sampling={sampling!r}: choose one of {', '.join(SAMPLING_MODES)}")
        self.model, self.tokenizer = model, tokenizer
        self.sampling, self.seed = sampling, seed
        if max_new_tokens is None:
            max_new_tokens = REFERENCE_SAMPLING["max_new_tokens"] if sampling == "reference" else 64
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @contextlib.contextmanager
    def _adapter(self, enabled: bool) -> Iterator[None]:
        if enabled or not hasattr(self.model, "disable_adapter"):
            yield
        else:
            with self.model.disable_adapter():
                yield

    @contextlib.contextmanager
    def _inference(self, adapter: bool) -> Iterator[Any]:
        """Eval mode (no dropout), no gradients, adapter on or off; yields the model's device."""
        import torch

        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self._adapter(adapter):
                yield next(self.model.parameters()).device
        finally:
            self.model.train(was_training)

    def _chat(self, probe: dict[str, Any]) -> bool:
        return bool(probe.get("question") and getattr(self.tokenizer, "chat_template", None))

    def _chat_text(self, question: str) -> str:
        messages = [{"role": "user", "content": question}]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _encode(self, probe: dict[str, Any]) -> tuple[str, list[int]]:
        """The probe's kind and prompt token ids (chat template, or plain text with BOS as usual)."""
        tok = self.tokenizer
        if self._chat(probe):
            return "chat", tok(self._chat_text(probe["question"]), add_special_tokens=False)["input_ids"]
        return "completion", tok(probe.get("prompt") or probe["question"])["input_ids"]

    def _eos_ids(self) -> set[int]:
        eos = {self.tokenizer.eos_token_id} | set(_as_list(getattr(self.model.generation_config, "eos_token_id", None)))
        return {e for e in eos if e is not None}

    def generate(self, probes: list[dict[str, Any]], *, adapter: bool = True) -> list[tuple[str, bool]]:
        """Answers (text, ended-with-EOS) for each probe, in batches: greedy, or the reference
        workflow's sampling when the evaluator was made with sampling="reference"."""
        import torch

        tok, model = self.tokenizer, self.model
        eos = self._eos_ids()
        if self.sampling == "reference":
            decode = {"do_sample": True, "top_p": REFERENCE_SAMPLING["top_p"],
                      "temperature": REFERENCE_SAMPLING["temperature"]}
        else:
            decode = {"do_sample": False}
        out: list[tuple[str, bool]] = []
        with self._inference(adapter) as device:
            cuda = [device] if device.type == "cuda" else []
            # Sampling draws from a seeded RNG forked off the global one: reruns repeat, and
            # the caller's random state is left as it was.
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(self.seed)
                for start in range(0, len(probes), self.batch_size):
                    seqs = [self._encode(p)[1] for p in probes[start : start + self.batch_size]]
                    width = max(map(len, seqs))
                    # Left padding: every prompt ends at the same column, where generation starts.
                    ids = torch.tensor([[tok.pad_token_id] * (width - len(s)) + s for s in seqs], device=device)
                    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
                    gen = model.generate(
                        input_ids=ids,
                        attention_mask=mask,
                        max_new_tokens=self.max_new_tokens,
                        use_cache=True,
                        pad_token_id=tok.pad_token_id,
                        eos_token_id=sorted(eos),
                        **decode,
                    )
                    for row in gen[:, width:].tolist():
                        ended = any(t in eos for t in row)
                        if ended:
                            row = row[: next(i for i, t in enumerate(row) if t in eos)]
                        out.append((tok.decode(row, skip_special_tokens=True).strip(), ended))
        return out

    # -- log-likelihood ---------------------------------------------------------------

    def _continuation(self, probe: dict[str, Any], candidate: str) -> tuple[list[int], list[int]]:
        """Context ids and the candidate's continuation ids, as lm-evaluation-harness splits them:
        the joint text is encoded and the context's tokens cut off the front (so the candidate is
        tokenized as it would be generated); if the joint encoding merges across the boundary,
        the candidate is encoded on its own."""
        tok = self.tokenizer
        candidate = candidate.strip()
        if self._chat(probe):  # the answer is the assistant's turn, right after the generation prompt
            context, cont, special = self._chat_text(probe["question"]), candidate, False
        else:  # the answer follows the prompt after one space (trailing spaces move to it)
            context, cont, special = (probe.get("prompt") or probe["question"]).rstrip(), " " + candidate, True
        ctx = tok(context, add_special_tokens=special)["input_ids"]
        whole = tok(context + cont, add_special_tokens=special)["input_ids"]
        if len(whole) > len(ctx) and whole[: len(ctx)] == ctx:
            return ctx, whole[len(ctx) :]
        return ctx, tok(cont, add_special_tokens=False)["input_ids"]

    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[float]:
        """Mean log-prob per continuation token of each (context, continuation), batched."""
        import torch

        tok, model = self.tokenizer, self.model
        limit = getattr(model.config, "max_position_embeddings", None) or 4096
        scores: list[float] = []
        device = next(model.parameters()).device
        for start in range(0, len(pairs), self.batch_size):
            batch = []
            for ctx, cont in pairs[start : start + self.batch_size]:
                cont = cont[: limit - 1]
                ctx = ctx[max(0, len(ctx) - (limit - len(cont))) :] or [tok.pad_token_id]
                batch.append((ctx, cont))
            width = max(len(c) + len(x) for c, x in batch)
            # Right padding: positions of the real tokens start at 0 in every row.
            ids = torch.tensor([c + x + [tok.pad_token_id] * (width - len(c) - len(x)) for c, x in batch], device=device)
            mask = torch.tensor([[1] * (len(c) + len(x)) + [0] * (width - len(c) - len(x)) for c, x in batch],
                                device=device)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            for b, (ctx, cont) in enumerate(batch):
                # position t predicts token t+1: the continuation is predicted from len(ctx)-1 on
                lp = torch.log_softmax(logits[b, len(ctx) - 1 : len(ctx) + len(cont) - 1].float(), dim=-1)
                target = torch.tensor(cont, device=device).unsqueeze(-1)
                scores.append(lp.gather(-1, target).mean().item())
        return scores

    def loglik(self, probes: str | Path | Iterable[dict[str, Any]], *, adapter: bool = True) -> list[LoglikScore | None]:
        """Score each accepted answer and each distractor as a continuation of the probe's prompt
        (chat: after the generation prompt; completion: after the prompt), as the mean log-prob
        per token: deterministic, no generation. One LoglikScore per probe, None for a probe
        without `distractors`."""
        rows = load_probes(probes)
        pairs, spans = [], []
        for row in rows:
            if not row.get("distractors"):
                spans.append(None)
                continue
            cands = list(row["answers"]) + list(row["distractors"])
            spans.append((len(pairs), len(row["answers"]), len(cands)))
            pairs += [self._continuation(row, c) for c in cands]
        if not pairs:
            return [None] * len(rows)
        with self._inference(adapter):
            scores = self._score(pairs)
        out: list[LoglikScore | None] = []
        for span in spans:
            if span is None:
                out.append(None)
            else:
                at, n_answers, n = span
                out.append(LoglikScore(scores[at : at + n_answers], scores[at + n_answers : at + n]))
        return out

    def compare(self, probes: str | Path | Iterable[dict[str, Any]]) -> Comparison:
        """Ask every probe to the base model (adapter off) and the adapted one; score both
        (answer matching, chat format, and log-likelihood for probes with distractors)."""
        rows = load_probes(probes)
        base = self.generate(rows, adapter=False)
        adapted = self.generate(rows, adapter=True)
        scored = any(r.get("distractors") for r in rows)
        base_ll = self.loglik(rows, adapter=False) if scored else [None] * len(rows)
        adapted_ll = self.loglik(rows, adapter=True) if scored else [None] * len(rows)
        results = []
        for row, (b, b_end), (a, a_end), bl, al in zip(rows, base, adapted, base_ll, adapted_ll):
            kind, _ = self._encode(row)
            results.append(
                ProbeResult(
                    kind=kind,
                    prompt=row.get("question") or row["prompt"],
                    answers=list(row["answers"]),
                    base_answer=b,
                    adapted_answer=a,
                    base_correct=answer_matches(b, row["answers"]),
                    adapted_correct=answer_matches(a, row["answers"]),
                    base_ended=b_end,
                    adapted_ended=a_end,
                    base_format_ok=is_chat_format(b) if kind == "chat" else None,
                    adapted_format_ok=is_chat_format(a) if kind == "chat" else None,
                    distractors=list(row.get("distractors") or []),
                    base_loglik_correct=bl.correct if bl else None,
                    adapted_loglik_correct=al.correct if al else None,
                    base_loglik_margin=bl.margin if bl else None,
                    adapted_loglik_margin=al.margin if al else None,
                    source=row.get("source"),
                )
            )
        return Comparison(results)

    # -- forgetting -------------------------------------------------------------------

    def perplexity(self, texts: list[str] | None = None, *, adapter: bool = True, max_length: int = 512) -> float:
        """Perplexity over texts (default: the shipped general-text sample), per token."""
        import torch.nn.functional as F

        tok, model = self.tokenizer, self.model
        texts = texts or general_texts()
        nll, count = 0.0, 0
        with self._inference(adapter) as device:
            for text in texts:
                ids = tok(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"].to(device)
                if ids.shape[1] < 2:
                    continue
                logits = model(input_ids=ids, use_cache=False).logits.float()  # (1, T, V)
                nll += F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item()
                count += ids.shape[1] - 1
        if not count:
            raise KinfuseError("perplexity needs at least one text of two or more tokens")
        return math.exp(nll / count)

    def kl_divergence(self, texts: list[str] | None = None, *, chat: bool = False, max_tokens: int = 128) -> float:
        """Mean per-token KL(base || adapted), in nats, between the next-token distributions of
        the model with the adapter off and on, over every position of every text.

        Texts default to the shipped general-text paragraphs (chat=False) or the shipped
        general prompts (chat=True: each is a user turn in the chat template, generation
        prompt included, so the last position is the answer's first token). Each text is cut
        to its first `max_tokens` tokens. 0 means the adapter changed nothing there.
        """
        import torch
        import torch.nn.functional as F

        tok, model = self.tokenizer, self.model
        if chat and not getattr(tok, "chat_template", None):
            raise KinfuseError("kl_divergence(chat=True) needs a tokenizer with a chat template")
        texts = texts or (general_prompts() if chat else general_texts())
        if chat:
            seqs = [tok(self._chat_text(t), add_special_tokens=False)["input_ids"][:max_tokens] for t in texts]
        else:
            seqs = [tok(t, truncation=True, max_length=max_tokens)["input_ids"] for t in texts]
        seqs = [s for s in seqs if s]
        if not seqs:
            raise KinfuseError("kl_divergence needs at least one non-empty text")
        total, count = 0.0, 0
        for start in range(0, len(seqs), self.batch_size):
            batch = seqs[start : start + self.batch_size]
            width = max(map(len, batch))
            logits = {}
            for enabled in (False, True):
                with self._inference(enabled) as device:
                    ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in batch], device=device)
                    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in batch], device=device)
                    logits[enabled] = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            for b, s in enumerate(batch):  # one row at a time: (T, V) in fp32, never (B, T, V)
                base = torch.log_softmax(logits[False][b, : len(s)].float(), dim=-1)
                adapted = torch.log_softmax(logits[True][b, : len(s)].float(), dim=-1)
                kl = F.kl_div(adapted, base, log_target=True, reduction="none").sum(-1)  # (T,)
                total += kl.clamp_min(0).sum().item()
                count += len(s)
        return total / count

    def chat_behaviour(self, questions: list[str] | None = None, *, adapter: bool = True) -> dict[str, Any]:
        """Ask general chat questions (default: the shipped general prompts) and report the share
        of answers that end their turn, that are in chat format, and that do both."""
        questions = questions or general_prompts()
        answers = self.generate([{"question": q} for q in questions], adapter=adapter)
        n = len(answers)
        ended = [e for _, e in answers]
        fmt = [is_chat_format(a) for a, _ in answers]
        return {
            "n": n,
            "ended_rate": sum(ended) / n,
            "format_rate": sum(fmt) / n,
            "ok_rate": sum(e and f for e, f in zip(ended, fmt)) / n,
            "problems": [chat_format_problem(a) for a, _ in answers],
        }

    def lm_eval(self, tasks: str | list[str], *, limit: int | float | None = None,
                num_fewshot: int | None = None) -> dict[str, Any]:
        """Run lm-evaluation-harness tasks (its Python API) on the base and the adapted model.

        Returns {"tasks", "base": {task: {metric: value}}, "adapted": {...}}, or
        {"tasks", "skipped": why} when lm_eval is not installed or cannot run the tasks (for
        instance when their data cannot be downloaded).
        """
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        if not tasks:
            raise KinfuseError("lm_eval(tasks): name at least one task")
        try:
            import lm_eval
            from lm_eval.models.huggingface import HFLM
        except ImportError as e:
            return {"tasks": tasks, "skipped": f"lm-evaluation-harness is not installed ({e}); "
                                              "install it with: pip install 'lm-eval[hf]'"}
        out: dict[str, Any] = {"tasks": tasks}
        try:
            lm = HFLM(pretrained=self.model, tokenizer=self.tokenizer, batch_size=self.batch_size)
            for name, enabled in (("base", False), ("adapted", True)):
                with self._inference(enabled):
                    res = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit)
                if not res or not res.get("results"):
                    return {"tasks": tasks, "skipped": "lm-evaluation-harness returned no results (no data?)"}
                out[name] = {
                    task: {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                    for task, metrics in res["results"].items()
                }
        except Exception as e:  # missing datasets, no network, unknown tasks: all mean "could not run"
            return {"tasks": tasks, "skipped": f"lm-evaluation-harness could not run {', '.join(tasks)}: "
                                               f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        return out


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple, set)) else [x]


# -- probes from a corpus ------------------------------------------------------------------

PROBE_INSTRUCTION = (
    "Read the text below and write {n} questions that it answers, each about a different fact stated "
    "in it. Each answer must be short: a name, number, date or phrase of at most six words, copied "
    "from the text. Write every pair on two lines, exactly like this:\n"
    "Q: <question>\nA: <answer>\n\nText:\n{text}"
)

_LABEL = re.compile(
    r"^\s*(?:[-*•]\s*)?(?:\d+\s*[.)]\s*)?(?:\*\*|__)?\s*(?P<label>question|answer|q|a)\s*\d*\s*(?:\*\*|__)?"
    r"\s*[:.)\-–]\s*(?:\*\*|__)?\s*(?P<body>.*)$",
    re.I,
)
_INLINE_ANSWER = re.compile(r"\s(?:\*\*|__)?(?:a|answer)\s*(?:\*\*|__)?\s*:\s*", re.I)
_NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()


def _clean(text: str) -> str:
    text = re.sub(r"(\*\*|__|`)", "", text).strip()
    if len(text) >= 2 and text[0] in "\"'“‘" and text[-1] in "\"'”’":
        text = text[1:-1].strip()
    return " ".join(text.split())


def parse_qa_pairs(text: str) -> list[tuple[str, str]]:
    """Question/answer pairs from a model's reply: JSON ({"question", "answer"} objects or a list
    of them) or labelled lines ("Q:"/"A:", "Question 1:"/"Answer:", numbered, bulleted, bold,
    or "Q: ... A: ..." on one line). Unlabelled lines continue the field before them."""
    pairs: list[tuple[str, str]] = []
    decoder = json.JSONDecoder()
    for m in re.finditer(r"[\[{]", text):
        try:
            obj, _ = decoder.raw_decode(text[m.start() :])
        except json.JSONDecodeError:
            continue
        for item in obj if isinstance(obj, list) else [obj]:
            if isinstance(item, dict):
                q = item.get("question") or item.get("q")
                a = item.get("answer") or item.get("a")
                if isinstance(q, str) and isinstance(a, (str, int, float)) and not isinstance(a, bool):
                    pairs.append((_clean(q), _clean(str(a))))
    if pairs:
        return list(dict.fromkeys(pairs))
    question: str | None = None
    answer: str | None = None
    closed = False  # a blank line after an answer: nothing more belongs to it

    def flush() -> None:
        if question and answer:
            pairs.append((_clean(question), _clean(answer)))

    for line in text.splitlines():
        m = _LABEL.match(line)
        label = m.group("label").lower()[0] if m else None
        if label == "q":
            flush()
            body, answer, closed = m.group("body"), None, False
            inline = _INLINE_ANSWER.search(body)
            question, answer = (body[: inline.start()], body[inline.end() :]) if inline else (body, None)
        elif label == "a" and question is not None:
            answer, closed = m.group("body"), False
        elif not line.strip():
            closed = answer is not None
        elif question is not None and not closed:
            if answer is None:
                question += " " + line.strip()
            else:
                answer += " " + line.strip()
    flush()
    return list(dict.fromkeys(pairs))


def answer_aliases(answer: str) -> list[str]:
    """The answer and simple aliases: without a leading article or a parenthetical, the
    parenthetical itself, and numbers up to twelve as digits and as words."""
    answer = answer.strip().rstrip(".").strip()
    out = [answer]
    paren = re.match(r"^(.*?)\s*\(([^)]+)\)\s*$", answer)
    if paren:
        out += [paren.group(1), paren.group(2)]
    for a in list(out):
        bare = re.sub(r"^(the|a|an)\s+", "", a, flags=re.I)
        out.append(bare)
        key = normalize(bare)
        if key in _NUMBER_WORDS:
            out.append(str(_NUMBER_WORDS.index(key)))
        elif key.isdigit() and int(key) < len(_NUMBER_WORDS):
            out.append(_NUMBER_WORDS[int(key)])
    seen, aliases = set(), []
    for a in out:
        if normalize(a) and normalize(a) not in seen:
            seen.add(normalize(a))
            aliases.append(a.strip())
    return aliases


def _cut(text: str, chars: int) -> str:
    if len(text) <= chars:
        return text
    head = text[:chars]
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s)", head)]
    return head[: ends[-1]] if ends and ends[-1] > chars // 2 else head


def generate_probes(
    model_or_trainer: Any,
    tokenizer: Any,
    corpus: Any,
    n_per_doc: int = 3,
    *,
    writer: Callable[[str], str] | None = None,
    out: str | Path | None = None,
    max_doc_chars: int = 4000,
    max_new_tokens: int = 256,
    batch_size: int = 4,
    require_grounded: bool = True,
) -> list[dict[str, Any]]:
    """Ask a model to write question/answer probes about each document of a corpus (opt-in).

    Each document (cut to `max_doc_chars` at a sentence end) goes into PROBE_INSTRUCTION as a
    user turn in the chat template, with the adapter off; the reply is parsed by
    `parse_qa_pairs`. A pair is kept when its answer (or an alias) occurs in the document
    (`require_grounded`), its question is new, and the document has fewer than `n_per_doc`.
    Rows are probes: {"question", "answers" (aliases), "source", "generated_by"}; with `out`
    they are written there as JSONL. They are probes, not training data: their "answers" list
    is not the {"question", "answer"} shape Q&A training files need, and nothing here adds them
    to training rows.

    `writer`, when given, replaces the model: a callable from the instruction text to the reply
    text (another model, an API client, or fixed text in tests); model_or_trainer may then be None.
    """
    if n_per_doc <= 0:
        raise KinfuseError(f"n_per_doc={n_per_doc}: must be a positive integer")
    docs = texts_with_sources(corpus)
    if not docs:
        raise KinfuseError("generate_probes: the corpus has no text")
    prompts = [PROBE_INSTRUCTION.format(n=n_per_doc, text=_cut(text, max_doc_chars)) for text, _ in docs]
    if writer is not None:
        replies = [writer(p) for p in prompts]
        by = getattr(writer, "__name__", type(writer).__name__)
    else:
        evaluator = Evaluator(model_or_trainer, tokenizer, max_new_tokens=max_new_tokens, batch_size=batch_size)
        replies = [a for a, _ in evaluator.generate([{"question": p} for p in prompts], adapter=False)]
        by = str(getattr(model_or_trainer, "model_name", None)
                 or getattr(getattr(evaluator.model, "config", None), "name_or_path", "") or "model")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for (text, source), reply in zip(docs, replies):
        kept = 0
        for question, answer in parse_qa_pairs(reply or ""):
            if kept >= n_per_doc:
                break
            key = normalize(question)
            if not key or not normalize(answer) or key in seen or len(answer) > 120 or len(question) < 8:
                continue
            aliases = answer_aliases(answer)
            if require_grounded and not answer_matches(text, aliases):
                continue
            seen.add(key)
            kept += 1
            rows.append({"question": question, "answers": aliases, "source": source, "generated_by": by})
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows
