"""Probes written by a model about a corpus (opt-in, `generate_probes`): each kept pair's answer
occurs in its document. They go to their own JSONL, never into training rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import io
from ..corpus import texts_with_sources
from ..data.answers import answer_aliases, answer_matches, normalize, parse_qa_pairs
from ..errors import KinfuseError
from ..generate import TextGenerator


# -- probes from a corpus ------------------------------------------------------------------

PROBE_INSTRUCTION = (
    "Read the text below and write {n} questions that it answers, each about a different fact stated "
    "in it. Each answer must be short: a name, number, date or phrase of at most six words, copied "
    "from the text. Write every pair on two lines, exactly like this:\n"
    "Q: <question>\nA: <answer>\n\nText:\n{text}"
)


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
        gen = TextGenerator(model_or_trainer, tokenizer, max_new_tokens=max_new_tokens, batch_size=batch_size)
        replies = [a for a, _ in gen.generate([{"question": p} for p in prompts], adapter=False)]
        by = str(getattr(model_or_trainer, "model_name", None)
                 or getattr(getattr(gen.model, "config", None), "name_or_path", "") or "model")
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
        io.write_jsonl(out, rows)
    return rows
