"""Evaluation probes and the general material shipped with kinfuse.

A probe is a JSONL row `{"question": ...}` (asked in chat form when the tokenizer has a chat
template) or `{"prompt": ...}` (plain completion), with `answers`: accepted spans and aliases,
and optionally `distractors`: wrong answers for the log-likelihood score. `ProbeGuard` keeps
every training row away from them. `general_texts` / `general_prompts` split the shipped
general sample into a held-out part (forgetting is measured on it) and a part that may be
trained on (replay, self-distillation).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import KinfuseError
from .answers import normalize


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


def guard_sources(config: Any) -> list[str]:
    """The evaluation files (probes and retention) whose questions no training row may restate."""
    return list(config.eval.probes) + list(config.eval.retention)
