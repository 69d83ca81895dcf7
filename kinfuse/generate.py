"""Generation with a model and its tokenizer: prompts in chat form or as plain completions,
batched greedy (or seeded sampled) decoding, and the LoRA adapter switched on or off within
the same weights. The evaluator, self-distillation and augmentation's model writer all
generate through here, so a prompt is encoded one way everywhere.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from .errors import KinfuseError
from .progress import bar

# The 2023 reference workflow's generation settings (sampling at a near-zero temperature).
REFERENCE_SAMPLING = {"max_new_tokens": 200, "top_p": 0.9, "temperature": 0.01}
# Prompts decoded per batch: decoding reads the weights once per step for the whole batch, so
# larger batches are much faster on a CPU (benchmarks/README.md).
BATCH_SIZE = 32
# Prompts are left-padded to a multiple of this many tokens (`padded_length`): 32 puts the
# demo's 67 self-distillation prompts in one padded length and its 109 probes in three (16:
# two and five, and self-distillation 14% slower; benchmarks/README.md).
PAD_MULTIPLE = 32
SAMPLING_MODES = ("greedy", "reference")


class TextGenerator:
    """Answers to prompts from one model, with the adapter on (adapted) or off (base).

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
            raise KinfuseError(f"{type(self).__name__}(model, tokenizer): a tokenizer is needed when passing a model")
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
    def adapter(self, enabled: bool) -> Iterator[None]:
        """The adapter on (adapted model) or off (base model) inside the block."""
        if enabled or not hasattr(self.model, "disable_adapter"):
            yield
        else:
            with self.model.disable_adapter():
                yield

    @contextlib.contextmanager
    def inference(self, adapter: bool) -> Iterator[Any]:
        """Eval mode (no dropout), no gradients, adapter on or off; yields the model's device."""
        import torch

        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self.adapter(adapter):
                yield next(self.model.parameters()).device
        finally:
            self.model.train(was_training)

    def is_chat(self, probe: dict[str, Any]) -> bool:
        """A question (or a conversation, `messages`) is asked through the chat template when the
        tokenizer has one."""
        return bool((probe.get("question") or probe.get("messages")) and getattr(self.tokenizer, "chat_template", None))

    def chat_text(self, question: str | list[dict[str, str]]) -> str:
        """`question` as a user turn in the chat template, generation prompt included; or a whole
        conversation (role/content messages ending with the user's turn)."""
        messages = [{"role": "user", "content": question}] if isinstance(question, str) else question
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, probe: dict[str, Any]) -> tuple[str, list[int]]:
        """The probe's kind and prompt token ids (chat template, or plain text with BOS as usual)."""
        tok = self.tokenizer
        if self.is_chat(probe):
            return "chat", tok(self.chat_text(probe.get("messages") or probe["question"]),
                               add_special_tokens=False)["input_ids"]
        if probe.get("messages"):  # no chat template: the last user turn as plain text
            return "completion", tok(probe["messages"][-1]["content"])["input_ids"]
        return "completion", tok(probe.get("prompt") or probe["question"])["input_ids"]

    def eos_ids(self) -> set[int]:
        eos = {self.tokenizer.eos_token_id} | set(_as_list(getattr(self.model.generation_config, "eos_token_id", None)))
        return {e for e in eos if e is not None}

    def decoding(self, max_new_tokens: int | None = None) -> dict[str, Any]:
        """model.generate's settings for this generator: one place, so that an answer streamed to
        a terminal is the answer `generate` gives."""
        if self.sampling == "reference":
            decode: dict[str, Any] = {"do_sample": True, "top_p": REFERENCE_SAMPLING["top_p"],
                                      "temperature": REFERENCE_SAMPLING["temperature"]}
        else:
            decode = {"do_sample": False}
        return {"max_new_tokens": self.max_new_tokens if max_new_tokens is None else max_new_tokens,
                "use_cache": True, "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": sorted(self.eos_ids()),
                **decode}

    def generate(self, probes: list[dict[str, Any]], *, adapter: bool = True,
                 max_new_tokens: int | None = None, desc: str | None = None) -> list[tuple[str, bool]]:
        """Answers (text, ended-with-EOS) for each probe, in batches: greedy, or the reference
        workflow's sampling when made with sampling="reference". `max_new_tokens` overrides
        this generator's limit for this call; `desc` shows a progress bar with that label."""
        import torch

        tok, model = self.tokenizer, self.model
        eos = self.eos_ids()
        settings = self.decoding(max_new_tokens)
        out: list[tuple[str, bool] | None] = [None] * len(probes)
        progress = bar(len(probes), desc, unit="prompt") if desc else None
        with self.inference(adapter) as device:
            cuda = [device] if device.type == "cuda" else []
            # Sampling draws from a seeded RNG forked off the global one: reruns repeat, and
            # the caller's random state is left as it was.
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(self.seed)
                for batch in self.batches([self.encode(p)[1] for p in probes]):
                    ids, mask = self.padded([s for _, s in batch], device)
                    gen = model.generate(input_ids=ids, attention_mask=mask, **settings)
                    for (i, _), row in zip(batch, gen[:, ids.shape[1]:].tolist()):
                        ended = any(t in eos for t in row)
                        if ended:
                            row = row[: next(k for k, t in enumerate(row) if t in eos)]
                        out[i] = (tok.decode(row, skip_special_tokens=True).strip(), ended)
                    if progress is not None:
                        progress.update(len(batch))
        if progress is not None:
            progress.close()
        return [o for o in out if o is not None]

    def batches(self, seqs: list[list[int]]) -> list[list[tuple[int, list[int]]]]:
        """(index, ids) of the prompts in decoding batches of at most `batch_size`, each of
        prompts of one padded length (`padded_length`), longest first. A prompt is always
        left-padded to the same length, alone (`kinfuse ask`, `stream`) or in any batch, so a row
        attends over key rows of the same length and computes the same bits: padding a prompt
        to its batch's longest made decode sums round differently, and greedy decoding flipped
        on near-ties (benchmarks/README.md, "Batched answers = lone answers")."""
        by_length: dict[int, list[tuple[int, list[int]]]] = {}
        for i, s in enumerate(seqs):
            by_length.setdefault(padded_length(len(s)), []).append((i, s))
        return [group[k : k + self.batch_size] for _, group in sorted(by_length.items(), reverse=True)
                for k in range(0, len(group), self.batch_size)]

    def padded(self, seqs: list[list[int]], device: Any) -> tuple[Any, Any]:
        """input_ids and attention_mask for one batch of `batches`: every prompt left-padded
        to its `padded_length` (one length per batch), a lone prompt as two rows (`rows`)."""
        import torch

        pad = self.tokenizer.pad_token_id
        width = padded_length(max(len(s) for s in seqs))
        batch = rows(seqs)
        ids = [[pad] * (width - len(s)) + s for s in batch]
        mask = [[0] * (width - len(s)) + [1] * len(s) for s in batch]
        return torch.tensor(ids, device=device), torch.tensor(mask, device=device)

    def stream(self, probe: dict[str, Any], *, adapter: bool = True,
               max_new_tokens: int | None = None) -> Iterator[str]:
        """The answer to one probe, as pieces of text while the model writes them (the same
        tokens `generate` gives for it alone). Closing the iterator early stops the model."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        stop = threading.Event()

        class Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return stop.is_set()

        class FirstRow(TextIteratorStreamer):  # the prompt is decoded as two rows (`rows`): show the first
            def put(self, value: Any) -> None:
                super().put(value[:1])

        streamer = FirstRow(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failed: list[BaseException] = []

        def write() -> None:
            try:
                with self.inference(adapter) as device, torch.random.fork_rng(
                        devices=[device] if device.type == "cuda" else []):
                    torch.manual_seed(self.seed)
                    ids, mask = self.padded([self.encode(probe)[1]], device)
                    self.model.generate(input_ids=ids, attention_mask=mask, streamer=streamer,
                                        stopping_criteria=StoppingCriteriaList([Stop()]),
                                        **self.decoding(max_new_tokens))
            except BaseException as e:  # handed to the reading thread, which would otherwise wait forever
                failed.append(e)
                streamer.end()

        worker = threading.Thread(target=write, name="kinfuse-stream", daemon=True)
        worker.start()
        try:
            yield from streamer
        finally:
            stop.set()
            worker.join()
        if failed:
            raise failed[0]


def padded_length(n: int) -> int:
    """The length a prompt of `n` tokens is left-padded to: the next multiple of PAD_MULTIPLE
    above `n`, at least one pad, so every row takes the same masked attention path (a batch
    with no pad may skip its mask). Coarse enough that a few lengths cover an evaluation's
    prompts (decoding reads the weights once per step for a whole batch), fine enough that
    the pads cost little."""
    return PAD_MULTIPLE * (n // PAD_MULTIPLE + 1)


def rows(seqs: list[list[int]]) -> list[list[int]]:
    """The rows to decode for a batch: a lone prompt twice. A matmul over one row may take
    another kernel than over several (oneDNN's bf16 CPU gemv for a (1, 1536) input rounds some
    outputs differently from its gemm), so a prompt is always decoded beside at least one other
    row, and gets the same bits alone as in any batch (benchmarks/README.md)."""
    return seqs * 2 if len(seqs) == 1 else seqs


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple, set)) else [x]
