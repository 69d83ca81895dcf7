"""Writers of augmentation text: a callable (`FunctionGenerator`) or a causal LM
(`ModelGenerator`, batched, chat template, adapter off), and the on-disk cache of their replies."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ... import io
from ...errors import KinfuseError
from ...generate import BATCH_SIZE, TextGenerator

CACHE_VERSION = 1


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
    """A causal LM writing greedy replies in batches through `TextGenerator.generate`, with the
    LoRA adapter disabled (the base model's own words), in chat form when it has a chat template."""

    def __init__(self, model_or_trainer: Any, tokenizer: Any = None, *, batch_size: int = BATCH_SIZE, name: str | None = None):
        self.generator = TextGenerator(model_or_trainer, tokenizer, batch_size=batch_size)
        model = self.generator.model
        self.name = name or str(getattr(model_or_trainer, "model_name", None)
                                or getattr(getattr(model, "config", None), "name_or_path", "") or "model")
        self.context_tokens = getattr(getattr(model, "config", None), "max_position_embeddings", None)

    @classmethod
    def load(cls, name: str, *, batch_size: int = BATCH_SIZE) -> "ModelGenerator":
        import torch

        from ...models import load_model, load_tokenizer, resolve_model

        path = resolve_model(name)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        model = load_model(path, quantize="none", compute_dtype=dtype, device=device)
        return cls(model, load_tokenizer(path), batch_size=batch_size, name=name)

    def prompt_tokens(self, prompt: str) -> int:
        return len(self.generator.encode({"question": prompt})[1])

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[tuple[str, bool]]:
        # Prompts of similar length share a batch: less padding, and greedy replies do not
        # depend on the batch. Replies come back in the prompts' order.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        replies = self.generator.generate([{"question": prompts[i]} for i in order], adapter=False,
                                          max_new_tokens=max_new_tokens)
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
        io.write_json(self.path, {"version": CACHE_VERSION, "replies": self.replies}, indent=0)
