"""Shared fixtures: a tiny random Llama-architecture checkpoint with a real BPE tokenizer
and a ChatML chat template, built from a config in seconds (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# Without a GPU the Triton kernel tests run in Triton's CPU interpreter. triton.jit reads this
# when a kernel is defined, so it must be set before any kinfuse.kernels module is imported.
if not _cuda_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TEXT = """The quick brown fox jumps over the lazy dog. A river flows from the mountains to the sea.
Paris is the capital of France. Water boils at one hundred degrees Celsius at sea level.
The new Zephyr router has four antennas and supports a mesh of up to nine nodes.
Bread is made from flour, water, salt and yeast. The moon orbits the earth every month.
What is the capital of France? How many antennas does the router have? Tell me about bread."""


def build_tiny_model(path: Path, *, layers: int = 2, hidden: int = 64, max_len: int = 512) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        [TEXT] * 4,
        trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<|im_start|>", eos_token="<|im_end|>",
        model_max_length=max_len,
    )
    fast.chat_template = CHATML
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_len,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False, initializer_range=0.2,  # larger than usual: LoRA needs leverage on a random model
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="session")
def sample_text() -> str:
    return TEXT


# ---------------------------------------------------------------------------
# One local HTTP server, for every test that fetches pages
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_handler():
    """The handler class `http_server` runs; a module or folder overrides it for other routes."""
    from local_http import PageHandler

    return PageHandler


@pytest.fixture(scope="module")
def http_pages() -> dict[str, str]:
    """Static pages (path -> HTML) `http_server` serves; a module overrides it to serve some."""
    return {}


@pytest.fixture(scope="module")
def http_server(http_handler, http_pages):
    """A real HTTP server on 127.0.0.1 (a free port), one per test module, with fresh counters."""
    from local_http import serve

    state = {**http_handler.fresh_state(), "pages": dict(http_pages)}
    with serve(type(http_handler.__name__, (http_handler,), state)) as server:
        yield server


# ---------------------------------------------------------------------------
# One finished infusion of the tiny model, for the tests that use a run folder
# ---------------------------------------------------------------------------

TINY_PROBES = [
    {"question": "Which port does Quillstore listen on by default?", "answers": ["9410"]},
    {"question": "How often does the compactor run?", "answers": ["30 minutes", "every 30 minutes"]},
    {"prompt": "Quillstore stores every value in", "answers": ["4 KB pages"]},
]


@pytest.fixture(scope="session")
def tiny_run(tiny_model, tmp_path_factory):
    """A completed `infuse` run of the tiny model on an NF4 base (as the recipe trains), with its
    probes evaluated, its summary lines kept: (run folder, probes file, echoed lines)."""
    import json

    from kinfuse import infuse
    from kinfuse.config import CorpusConfig, DataConfig, EvalConfig, InfuseConfig, TrainConfig

    root = tmp_path_factory.mktemp("tiny-run")
    page = root / "quill.txt"
    page.write_text("Quillstore is a key-value database written in Rust. It listens on port 9410 by default.\n"
                    "The compactor runs every 30 minutes. Quillstore stores every value in 4 KB pages.")
    probes = root / "probes.jsonl"
    probes.write_text("".join(json.dumps(p) + "\n" for p in TINY_PROBES))
    config = InfuseConfig(
        model=tiny_model, out_dir=str(root / "out"), corpus=CorpusConfig(paths=[str(page)]),
        data=DataConfig(block_size=64, questions=1, self_distill=3, replay_ratio=0.2, anchor_kl=True),
        train=TrainConfig(max_steps=6, learning_rate=5e-3, quantize="nf4", progress=False),
        eval=EvalConfig(probes=[str(probes)], max_new_tokens=12, perplexity=True),
    )
    lines: list[str] = []
    infuse(config, echo=lambda *a: lines.append(" ".join(map(str, a))))
    return root / "out", probes, lines
