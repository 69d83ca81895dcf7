"""What an evaluation found: per-probe results (base and adapted answers, matched or not, in
chat format or not, log-likelihood margins) and their comparison (accuracies, retention,
chat behaviour, the printed table)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
