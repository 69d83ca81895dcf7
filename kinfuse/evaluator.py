"""Evaluator: ask the same probes to the base model and to the adapted one, and score both.

Base and adapted share one set of weights: the base answers come from the same model with
the LoRA adapter disabled, so nothing is loaded twice. Probes are JSONL rows
`{"question": ...}` (asked in chat form when the tokenizer has a chat template) or
`{"prompt": ...}` (plain completion), each with `answers`: accepted spans and aliases.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import KinfuseError

_THOUSANDS = re.compile(r"(?<=\d)[,\u202f\u00a0 ](?=\d{3}\b)")
_PUNCT = re.compile(r"[^\w\s.]|(?<!\d)\.|\.(?!\d)")


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
    if problems:
        raise KinfuseError("bad probes:\n" + "\n".join(f"  - {p}" for p in problems))
    if not rows:
        raise KinfuseError(f"{name}: no probes")
    return rows


def general_texts() -> list[str]:
    """The general-text sample shipped with kinfuse (written for the project), one paragraph each."""
    text = resources.files("kinfuse").joinpath("data/general.txt").read_text()
    return [p.strip() for p in text.split("\n\n") if p.strip()]


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

    def retention(self) -> float:
        """Of the probes the base model answers correctly, the share the adapted one still does."""
        kept = [r for r in self.results if r.base_correct]
        return sum(r.adapted_correct for r in kept) / len(kept) if kept else float("nan")

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
        out["base_accuracy"], out["adapted_accuracy"] = self.base_accuracy, self.adapted_accuracy
        out["retention"] = self.retention()
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
        return "\n".join(lines)


class Evaluator:
    """Compare base and adapted answers on probes, with the adapter toggled in one model.

    `trainer_or_model` is a QLoRATrainer or a (peft) model; `tokenizer` is needed with a model.
    """

    def __init__(self, trainer_or_model: Any, tokenizer: Any = None, *, max_new_tokens: int = 64, batch_size: int = 8):
        model = getattr(trainer_or_model, "model", None)
        if model is not None and hasattr(trainer_or_model, "tokenizer"):  # a QLoRATrainer
            tokenizer = tokenizer or trainer_or_model.tokenizer
        else:
            model = trainer_or_model
        if tokenizer is None:
            raise KinfuseError("Evaluator(model, tokenizer): a tokenizer is needed when passing a model")
        self.model, self.tokenizer = model, tokenizer
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

    def _encode(self, probe: dict[str, Any]) -> tuple[str, list[int]]:
        """The probe's kind and prompt token ids (chat template, or plain text with BOS as usual)."""
        tok = self.tokenizer
        if probe.get("question") and getattr(tok, "chat_template", None):
            messages = [{"role": "user", "content": probe["question"]}]
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return "chat", tok(text, add_special_tokens=False)["input_ids"]
        return "completion", tok(probe.get("prompt") or probe["question"])["input_ids"]

    def generate(self, probes: list[dict[str, Any]], *, adapter: bool = True) -> list[tuple[str, bool]]:
        """Greedy answers (text, ended-with-EOS) for each probe, in batches."""
        import torch

        tok, model = self.tokenizer, self.model
        device = next(model.parameters()).device
        eos = {tok.eos_token_id} | set(_as_list(getattr(model.generation_config, "eos_token_id", None)))
        out: list[tuple[str, bool]] = []
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), self._adapter(adapter):
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
                        do_sample=False,
                        use_cache=True,
                        pad_token_id=tok.pad_token_id,
                        eos_token_id=sorted(e for e in eos if e is not None),
                    )
                    for row in gen[:, width:].tolist():
                        ended = any(t in eos for t in row)
                        if ended:
                            row = row[: next(i for i, t in enumerate(row) if t in eos)]
                        out.append((tok.decode(row, skip_special_tokens=True).strip(), ended))
        finally:
            model.train(was_training)
        return out

    def compare(self, probes: str | Path | Iterable[dict[str, Any]]) -> Comparison:
        """Ask every probe to the base model (adapter off) and the adapted one; score both."""
        rows = load_probes(probes)
        base = self.generate(rows, adapter=False)
        adapted = self.generate(rows, adapter=True)
        results = []
        for row, (b, b_end), (a, a_end) in zip(rows, base, adapted):
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
                )
            )
        return Comparison(results)

    def perplexity(self, texts: list[str] | None = None, *, adapter: bool = True, max_length: int = 512) -> float:
        """Perplexity over texts (default: the shipped general-text sample), per token."""
        import torch
        import torch.nn.functional as F

        tok, model = self.tokenizer, self.model
        texts = texts or general_texts()
        device = next(model.parameters()).device
        nll, count = 0.0, 0
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), self._adapter(adapter):
                for text in texts:
                    ids = tok(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"].to(device)
                    if ids.shape[1] < 2:
                        continue
                    logits = model(input_ids=ids, use_cache=False).logits.float()  # (1, T, V)
                    nll += F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item()
                    count += ids.shape[1] - 1
        finally:
            model.train(was_training)
        if not count:
            raise KinfuseError("perplexity needs at least one text of two or more tokens")
        return math.exp(nll / count)


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple, set)) else [x]
