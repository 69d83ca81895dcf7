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
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..data.answers import answer_matches, is_chat_format
from ..data.probes import load_probes
from ..generate import TextGenerator
from ..progress import bar
from . import forgetting
from .results import Comparison, LoglikScore, ProbeResult


class Evaluator(TextGenerator):
    """Compare base and adapted answers on probes, with the adapter toggled in one model.

    Made like a TextGenerator: `trainer_or_model` is a QLoRATrainer or a (peft) model;
    `tokenizer` is needed with a model; `sampling` is "greedy" or "reference".
    """

    # -- log-likelihood ---------------------------------------------------------------

    def _continuation(self, probe: dict[str, Any], candidate: str) -> tuple[list[int], list[int]]:
        """Context ids and the candidate's continuation ids, as lm-evaluation-harness splits them:
        the joint text is encoded and the context's tokens cut off the front (so the candidate is
        tokenized as it would be generated); if the joint encoding merges across the boundary,
        the candidate is encoded on its own."""
        tok = self.tokenizer
        candidate = candidate.strip()
        if self.is_chat(probe):  # the answer is the assistant's turn, right after the generation prompt
            context, cont, special = self.chat_text(probe["question"]), candidate, False
        else:  # the answer follows the prompt after one space (trailing spaces move to it)
            context, cont, special = (probe.get("prompt") or probe["question"]).rstrip(), " " + candidate, True
        ctx = tok(context, add_special_tokens=special)["input_ids"]
        whole = tok(context + cont, add_special_tokens=special)["input_ids"]
        if len(whole) > len(ctx) and whole[: len(ctx)] == ctx:
            return ctx, whole[len(ctx) :]
        return ctx, tok(cont, add_special_tokens=False)["input_ids"]

    def _score(self, pairs: list[tuple[list[int], list[int]]], desc: str | None = None) -> list[float]:
        """Mean log-prob per continuation token of each (context, continuation), batched."""
        import torch

        tok, model = self.tokenizer, self.model
        limit = getattr(model.config, "max_position_embeddings", None) or 4096
        scores: list[float] = []
        device = next(model.parameters()).device
        progress = bar(len(pairs), desc, unit="answer") if desc else None
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
            if progress is not None:
                progress.update(len(batch))
        if progress is not None:
            progress.close()
        return scores

    def loglik(self, probes: str | Path | Iterable[dict[str, Any]], *, adapter: bool = True,
               desc: str | None = None) -> list[LoglikScore | None]:
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
        with self.inference(adapter):
            scores = self._score(pairs, desc)
        out: list[LoglikScore | None] = []
        for span in spans:
            if span is None:
                out.append(None)
            else:
                at, n_answers, n = span
                out.append(LoglikScore(scores[at : at + n_answers], scores[at + n_answers : at + n]))
        return out

    def compare(self, probes: str | Path | Iterable[dict[str, Any]], *, label: str = "probes") -> Comparison:
        """Ask every probe to the base model (adapter off) and the adapted one; score both
        (answer matching, chat format, and log-likelihood for probes with distractors).
        `label` names the progress bars."""
        rows = load_probes(probes)
        base = self.generate(rows, adapter=False, desc=f"{label}: base")
        adapted = self.generate(rows, adapter=True, desc=f"{label}: adapted")
        scored = any(r.get("distractors") for r in rows)
        base_ll = self.loglik(rows, adapter=False, desc=f"{label}: base likelihoods") if scored else [None] * len(rows)
        adapted_ll = (self.loglik(rows, adapter=True, desc=f"{label}: adapted likelihoods") if scored
                      else [None] * len(rows))
        results = []
        for row, (b, b_end), (a, a_end), bl, al in zip(rows, base, adapted, base_ll, adapted_ll):
            kind = "chat" if self.is_chat(row) else "completion"  # as encode() asks it
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

    # -- forgetting (kinfuse.eval.forgetting) ------------------------------------------

    def perplexity(self, texts: list[str] | None = None, *, adapter: bool = True, max_length: int = 512) -> float:
        """Perplexity over texts (default: the shipped general-text sample), per token."""
        return forgetting.perplexity(self, texts, adapter=adapter, max_length=max_length)

    def kl_divergence(self, texts: list[str] | None = None, *, chat: bool = False, max_tokens: int = 128) -> float:
        """Mean per-token KL(base || adapted) in nats (see forgetting.kl_divergence)."""
        return forgetting.kl_divergence(self, texts, chat=chat, max_tokens=max_tokens)

    def chat_behaviour(self, questions: list[str] | None = None, *, adapter: bool = True) -> dict[str, Any]:
        """Share of general answers that end their turn, are in chat format, and both."""
        return forgetting.chat_behaviour(self, questions, adapter=adapter)

    def lm_eval(self, tasks: str | list[str], *, limit: int | float | None = None,
                num_fewshot: int | None = None) -> dict[str, Any]:
        """lm-evaluation-harness tasks on the base and the adapted model (see forgetting.lm_eval)."""
        return forgetting.lm_eval(self, tasks, limit=limit, num_fewshot=num_fewshot)
