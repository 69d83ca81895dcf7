"""The training losses over (B, T) blocks: summed next-token cross-entropy on target tokens,
and the KL to the base model that anchor blocks train on instead.

Both run the output layer only on positions that have a target: prompts of chat rows and
padding cost no vocabulary projection. Sums, not means: the loop normalises by the target
tokens of the whole optimizer step.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable


def autocast(device: Any, compute_dtype: Any) -> Any:
    """The fp32 LoRA weights run their matmuls in the compute dtype (bf16/fp16, on a GPU or a
    CPU with native bf16); the fp32 copies stay the optimizer's master weights."""
    import torch

    if compute_dtype != torch.float32:
        return torch.autocast(device.type, dtype=compute_dtype)
    return contextlib.nullcontext()


def has_plain_head(base: Any) -> bool:
    """Whether the logits of `base` are a plain linear map of its decoder's last hidden state,
    as for most causal LMs; models that post-process them (soft-capping, scaling) take the
    full path through the model."""
    c = base.config
    return (
        hasattr(base, "get_decoder")
        and base.get_output_embeddings() is not None
        and not getattr(c, "final_logit_softcapping", None)
        and getattr(c, "logit_scale", None) in (None, 1, 1.0)
        and getattr(c, "logits_scaling", None) in (None, 1, 1.0)
    )


def target_hidden(model: Any, ids: Any, pos: Any, keep: Any, *, plain_head: bool) -> tuple[Any, Any]:
    """(hidden (N, H), output layer) of the peft `model` at the positions `keep` marks, or, for
    heads with soft-capping or scaling that only the model applies, (logits (N, V), None)."""
    if plain_head:
        base = model.get_base_model()
        hidden = base.get_decoder()(input_ids=ids, position_ids=pos, use_cache=False).last_hidden_state  # (B, T, H)
        return hidden[:, :-1][keep], base.get_output_embeddings()
    return model(input_ids=ids, position_ids=pos, use_cache=False).logits[:, :-1][keep], None


def loss_sum(model: Any, ids: Any, labels: Any, pos: Any, *, plain_head: bool, fused_ce: Callable | None) -> Any:
    """Summed next-token cross-entropy over target tokens, for (B, T) ids/labels/positions.
    With `fused_ce` (the fused output layer + cross-entropy) the full logits are never built."""
    import torch
    import torch.nn.functional as F

    targets = labels[:, 1:]  # (B, T-1): position t predicts token t+1
    keep = targets != -100  # (B, T-1)
    hidden, head = target_hidden(model, ids, pos, keep, plain_head=plain_head)
    # A trained head (peft wrapper) or one with a bias keeps the plain path.
    if fused_ce is not None and type(head) is torch.nn.Linear and head.bias is None:
        return fused_ce(hidden, head.weight, targets[keep], reduction="sum")
    logits = head(hidden) if head is not None else hidden  # (N, V)
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum")


def kl_sum(model: Any, ids: Any, labels: Any, pos: Any, *, plain_head: bool) -> Any:
    """Summed KL(base || adapted) of the next-token distributions at the target positions
    of (B, T) blocks: how far the adapter has moved the model on this text. The base is
    the same model with the adapter off (no gradient, no second copy in memory).

    Builds (N, V) logits twice (N = target positions), so anchor blocks cost one extra
    forward pass and, at a large vocabulary, memory that plain blocks do not.
    """
    import torch
    import torch.nn.functional as F

    keep = labels[:, 1:] != -100  # (B, T-1)

    def log_probs() -> Any:  # (N, V)
        hidden, head = target_hidden(model, ids, pos, keep, plain_head=plain_head)
        return F.log_softmax((head(hidden) if head is not None else hidden).float(), dim=-1)

    with torch.no_grad(), model.disable_adapter():
        base = log_probs()
    return F.kl_div(log_probs(), base, log_target=True, reduction="sum")
