"""Knowledge lost: what the adapter changed outside the corpus. Perplexity on general text,
KL(base || adapted) between next-token distributions, the chat behaviour kept (answers that
end their turn in chat format), and lm-evaluation-harness tasks, each base vs adapted in one
model with the adapter switched off and on.
"""

from __future__ import annotations

import math
from typing import Any

from ..data.answers import chat_format_problem, is_chat_format
from ..data.probes import general_prompts, general_texts
from ..errors import KinfuseError
from ..generate import TextGenerator
from ..progress import bar


def perplexity(gen: TextGenerator, texts: list[str] | None = None, *, adapter: bool = True, max_length: int = 512) -> float:
    """Perplexity over texts (default: the shipped general-text sample), per token."""
    import torch.nn.functional as F

    tok, model = gen.tokenizer, gen.model
    texts = texts or general_texts()
    nll, count = 0.0, 0
    progress = bar(len(texts), f"perplexity: {'adapted' if adapter else 'base'}", unit="text")
    with gen.inference(adapter) as device, progress:
        for text in texts:
            progress.update()
            ids = tok(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"].to(device)
            if ids.shape[1] < 2:
                continue
            logits = model(input_ids=ids, use_cache=False).logits.float()  # (1, T, V)
            nll += F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item()
            count += ids.shape[1] - 1
    if not count:
        raise KinfuseError("perplexity needs at least one text of two or more tokens")
    return math.exp(nll / count)

def kl_divergence(gen: TextGenerator, texts: list[str] | None = None, *, chat: bool = False, max_tokens: int = 128) -> float:
    """Mean per-token KL(base || adapted), in nats, between the next-token distributions of
    the model with the adapter off and on, over every position of every text.

    Texts default to the shipped general-text paragraphs (chat=False) or the shipped
    general prompts (chat=True: each is a user turn in the chat template, generation
    prompt included, so the last position is the answer's first token). Each text is cut
    to its first `max_tokens` tokens. 0 means the adapter changed nothing there.
    """
    import torch
    import torch.nn.functional as F

    tok, model = gen.tokenizer, gen.model
    if chat and not getattr(tok, "chat_template", None):
        raise KinfuseError("kl_divergence(chat=True) needs a tokenizer with a chat template")
    texts = texts or (general_prompts() if chat else general_texts())
    if chat:
        seqs = [tok(gen.chat_text(t), add_special_tokens=False)["input_ids"][:max_tokens] for t in texts]
    else:
        seqs = [tok(t, truncation=True, max_length=max_tokens)["input_ids"] for t in texts]
    seqs = [s for s in seqs if s]
    if not seqs:
        raise KinfuseError("kl_divergence needs at least one non-empty text")
    total, count = 0.0, 0
    progress = bar(len(seqs), f"KL: general {'chat' if chat else 'text'}", unit="text")
    for start in range(0, len(seqs), gen.batch_size):
        batch = seqs[start : start + gen.batch_size]
        width = max(map(len, batch))
        logits = {}
        for enabled in (False, True):
            with gen.inference(enabled) as device:
                ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in batch], device=device)
                mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in batch], device=device)
                logits[enabled] = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        for b, s in enumerate(batch):  # one row at a time: (T, V) in fp32, never (B, T, V)
            base = torch.log_softmax(logits[False][b, : len(s)].float(), dim=-1)
            adapted = torch.log_softmax(logits[True][b, : len(s)].float(), dim=-1)
            kl = F.kl_div(adapted, base, log_target=True, reduction="none").sum(-1)  # (T,)
            total += kl.clamp_min(0).sum().item()
            count += len(s)
        progress.update(len(batch))
    progress.close()
    return total / count

def chat_behaviour(gen: TextGenerator, questions: list[str] | None = None, *, adapter: bool = True) -> dict[str, Any]:
    """Ask general chat questions (default: the shipped general prompts) and report the share
    of answers that end their turn, that are in chat format, and that do both."""
    questions = questions or general_prompts()
    answers = gen.generate([{"question": q} for q in questions], adapter=adapter)
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

def lm_eval(gen: TextGenerator, tasks: str | list[str], *, limit: int | float | None = None,
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
        lm = HFLM(pretrained=gen.model, tokenizer=gen.tokenizer, batch_size=gen.batch_size)
        for name, enabled in (("base", False), ("adapted", True)):
            with gen.inference(enabled):
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
