"""A finished run, loaded to use: the base model and the adapter as they were trained, the
tokenizer, and an Evaluator over them.

    run = kinfuse.load_run("out")                    # a run folder, or an exported adapter folder
    print(run.ask("When was the AWS Summit in New York?"))
    print(run.ask("When was the AWS Summit in New York?", adapter=False))   # the base model
    comparison = run.evaluator().compare("probes.jsonl")

"As trained" means what the run's record (run.json, kinfuse.run.RunRecord) says: the base
weights quantized the same way (NF4 or not) in the same compute dtype, the adapter's weights in
fp32 as the trainer held them, and the same forwards patched in (kinfuse.train.setup). Answers
are decoded as the Evaluator decoded them at the end of `infuse`: greedy, the run's
`eval.max_new_tokens`, the chat template unless the run trained without it (`chat = false`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import TrainConfig, recipe_eval
from .errors import KinfuseError, ModelError
from .eval.evaluator import Evaluator
from .export import META_FILE
from .export.source import Source, load_source
from .run import RunRecord


@dataclass
class InfusedRun:
    """A run's model (base + adapter, one set of weights: `adapter=False` asks the base) and
    tokenizer, with the settings its evaluation used."""

    model: Any  # a peft model: the base with the LoRA adapter
    tokenizer: Any
    path: Path  # the run folder, or the adapter folder given
    adapter_dir: Path
    base: str  # the base model loaded (a local folder or a hub id)
    record: RunRecord | None  # None for an adapter folder without a run
    quantize: str  # "nf4" or "none"
    compute_dtype: str
    device: str
    chat: bool  # questions go through the chat template
    max_new_tokens: int
    batch_size: int
    config: dict[str, Any] = dataclasses.field(default_factory=dict)  # the run's InfuseConfig, as a dict

    def evaluator(self, **kwargs: Any) -> Evaluator:
        """An Evaluator over this model with the run's generation settings (`kwargs` override
        them: max_new_tokens, batch_size, sampling, seed)."""
        settings = {"max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size, **kwargs}
        return Evaluator(self.model, self.tokenizer, **settings)

    def ask(self, question: str, *, adapter: bool = True, max_new_tokens: int | None = None) -> str:
        """The answer to one question: the adapted model's, or the base model's with
        `adapter=False`; the answer the Evaluator gives for it in a probe file."""
        ((answer, _),) = self.evaluator().generate([{"question": question}], adapter=adapter,
                                                   max_new_tokens=max_new_tokens)
        return answer

    def stream(self, question: str | list[dict[str, str]], *, adapter: bool = True,
               max_new_tokens: int | None = None) -> Iterator[str]:
        """The answer as it is written, piece by piece. `question` may be a conversation: a list
        of {"role", "content"} messages ending with the user's turn."""
        probe = {"question": question} if isinstance(question, str) else {"messages": question}
        return self.evaluator().stream(probe, adapter=adapter, max_new_tokens=max_new_tokens)


def load_run(path: str | os.PathLike, *, base: str | None = None, allow_incomplete: bool = False,
             device: str = "auto", quantize: str | None = None) -> InfusedRun:
    """Load a run folder (run.json + adapter/) or an adapter folder (adapter_config.json, e.g. a
    `kinfuse export --format tgi-adapter` folder) with its base model, as it was trained.

    base: the base model, when the one the run names has moved (or for an adapter folder that
    names none). allow_incomplete: load a run whose training was interrupted or failed (refused
    by default, as export refuses it: its adapter is partial). device: "auto", "cpu" or "cuda[:N]".
    quantize: "nf4" or "none", for an adapter folder whose training is not recorded (default
    "nf4", how kinfuse trains); a run's record decides for a run.
    """
    import torch

    from .models import load_tokenizer
    from .train.setup import pick_device, pick_dtype

    src = load_source(path, base, allow_incomplete=allow_incomplete)
    record = src.record
    config = record.config if record is not None and isinstance(record.config, dict) else {}
    evals = config.get("eval") if isinstance(config.get("eval"), dict) else {}
    recipe = recipe_eval()
    dev = pick_device(device)
    if record is not None:
        quant, dtype = record.quantize, getattr(torch, record.compute_dtype)
    else:
        quant = quantize or _exported_quantize(src) or "nf4"
        dtype = pick_dtype("auto", dev)
    if quant not in ("nf4", "none"):
        raise KinfuseError(f"quantize={quant!r}: choose nf4 or none")
    base_path = src.base_path()  # names the model and --base when it cannot be found
    train = _train_config(config)
    try:
        tokenizer = load_tokenizer(src.tokenizer_dir(base_path))
        model = _load_model(src, base_path, train, quant, dtype, dev)
    except ModelError as e:
        raise ModelError(f"base model of {src.adapter_dir}: {e} (pass --base PATH, or base=, to point at it)") from e
    chat = record.chat if record is not None else bool(getattr(tokenizer, "chat_template", None))
    if not chat:  # trained and evaluated as a base (completion) model: questions as plain text
        tokenizer.chat_template = None
    return InfusedRun(
        model=model, tokenizer=tokenizer, path=Path(path), adapter_dir=src.adapter_dir, base=base_path, record=record,
        quantize=quant, compute_dtype=str(dtype).removeprefix("torch."), device=str(dev), chat=chat,
        max_new_tokens=int(evals.get("max_new_tokens") or recipe.max_new_tokens),
        batch_size=int(evals.get("batch_size") or recipe.batch_size), config=config,
    )


def _exported_quantize(src: Source) -> str | None:
    """How an exported adapter's run trained, from the export's own record (kinfuse_export.json)."""
    meta = src.adapter_dir / META_FILE
    try:
        value = json.loads(meta.read_text(encoding="utf-8")).get("trained_quantize") if meta.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return value if value in ("nf4", "none") else None


def _train_config(config: dict[str, Any]) -> TrainConfig:
    """The run's train section (the kernels and attention it trained with), its unknown keys ignored."""
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return dataclasses.replace(TrainConfig(), **{k: v for k, v in train.items() if k in known})


def _load_model(src: Source, base_path: str, train: TrainConfig, quantize: str, dtype: Any, device: Any) -> Any:
    """The base loaded as the trainer loads it, the LoRA wrapped around it as the trainer wraps
    it (adapter weights in fp32), the saved weights put in, and the trainer's forwards."""
    from peft import PeftConfig, get_peft_model
    from peft.utils import set_peft_model_state_dict

    from .export.source import adapter_weights
    from .models import load_model
    from .train.setup import patch_forwards, pick_attention

    model = load_model(base_path, quantize=quantize, compute_dtype=dtype, device=device,
                       attention=pick_attention(train.attention, device))
    peft_config = PeftConfig.from_pretrained(str(src.adapter_dir))
    peft_config.inference_mode = True
    model = get_peft_model(model, peft_config)
    for name, p in model.named_parameters():
        if "lora_" in name or ".modules_to_save." in name:
            p.data = p.data.float()  # as QLoRATrainer holds them: fp32 master weights
    try:
        loaded = set_peft_model_state_dict(model, adapter_weights(src.adapter_dir))
    except RuntimeError as e:  # a tensor of the wrong shape: another base model
        raise ModelError(f"the adapter in {src.adapter_dir} does not fit {base_path}: "
                         f"{str(e).splitlines()[0]}") from None
    unexpected = [k for k in getattr(loaded, "unexpected_keys", []) if "lora_" in k or "modules_to_save" in k]
    if unexpected:
        raise ModelError(f"the adapter in {src.adapter_dir} does not fit {base_path}: it has weights for modules the "
                         f"model lacks ({unexpected[0]}, ...)")
    for p in model.parameters():
        p.requires_grad_(False)
    full = bool(getattr(peft_config, "modules_to_save", None))
    patch_forwards(model, train, device, dtype, full_modules=full)
    model.eval()
    return model
