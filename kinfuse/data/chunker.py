"""Tokenise documents and chat examples, and pack them into fixed-size training blocks.

Unlike the 2023 reference recipe (concatenate everything, cut 2048-token blocks, drop the
remainder), documents keep their boundaries: each block carries `position_ids` that restart
at every document, which transformers turns into a block-diagonal attention mask (or
flash-attn varlen), so a document never attends to an unrelated neighbour. Nothing is
dropped: long documents are split (optionally with `stride` tokens of overlap, which are
context only), the last block is padded (padding is masked out of the loss), and `stats`
counts every token: `tokens_packed == tokens_in + overlap_tokens`.

Rows with `text` are continued-pretraining text (every token is a target). Rows with
`messages` (or `question` + `answer`) are chat examples rendered with the tokenizer's chat
template; only the assistant's tokens are targets, so the model learns to answer with the
new facts rather than only to continue the text.

Special tokens follow the model's own convention: text is tokenised with the tokenizer's
special tokens (a BOS where the tokenizer adds one, as Llama's does, none where it does not,
as SmolLM2's and GPT-2's), a BOS the text itself already starts with is not doubled, and EOS
ends every document unless the tokenizer (or the text) already ends it with EOS.

The output is a pure function of the tokenizer, the rows and the settings: nothing is
randomised (best-fit-decreasing packing breaks ties by input order; `num_proc` only changes
speed), so no seed is needed; the trainer shuffles blocks with its own seed.

Internally every column is a flat numpy array with per-document offsets, never a Python
list per token: chunking costs little more than the tokenizer itself (benchmarks/bench_chunker.py).
"""

from __future__ import annotations

import bisect
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import KinfuseError

IGNORE = -100  # label value torch's cross-entropy skips

# datasets.map(num_proc=...) starts processes and writes Arrow shards: below these sizes the
# in-process batched tokenizer is faster (measured in benchmarks/bench_chunker.py --parallel).
PARALLEL_MIN_DOCS = 256
PARALLEL_MIN_CHARS = 4_000_000


@dataclass
class ChunkStats:
    documents: int = 0  # rows tokenised (text documents and chat examples)
    skipped_empty: int = 0  # rows with no text, skipped and counted
    tokens_in: int = 0  # tokens from the tokenizer, with the BOS/EOS the chunker adds
    tokens_packed: int = 0  # real (non-padding) tokens written into blocks: tokens_in + overlap_tokens
    overlap_tokens: int = 0  # tokens repeated as context at the start of a split piece (stride), never targets
    target_tokens: int = 0  # tokens the loss is computed on
    padding: int = 0  # padding tokens filling the ends of blocks
    blocks: int = 0
    split_documents: int = 0  # documents longer than a block, split into pieces
    eos_added: int = 0  # EOS tokens the chunker appended (documents the tokenizer or text did not end with EOS)
    duplicate_bos_removed: int = 0  # texts that began with BOS themselves while the tokenizer also adds one

    @property
    def padding_fraction(self) -> float:
        total = self.tokens_packed + self.padding
        return self.padding / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "padding_fraction": round(self.padding_fraction, 4)}

    def __add__(self, other: "ChunkStats") -> "ChunkStats":
        """The counts of two chunking runs together (blocks built in two calls, one dataset)."""
        return ChunkStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ChunkStats":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _tokenize_batch(batch: dict[str, list[str]], tokenizer: Any) -> dict[str, Any]:
    """datasets.map worker: token ids of a batch of texts, with the tokenizer's special tokens."""
    ids = tokenizer(batch["text"], add_special_tokens=True, return_attention_mask=False, verbose=False)["input_ids"]
    return {"input_ids": ids}


class Chunker:
    """Turn a Corpus, a datasets.Dataset or a list of rows into packed training blocks.

    `Chunker(tokenizer, block_size=None, stride=0, num_proc=None)(data)` returns a
    `datasets.Dataset` with `input_ids`, `labels`, `position_ids` (restarting per document),
    `doc_lengths` (the segment lengths, padding last, for cu_seqlens) and `num_tokens` (real
    tokens per block); `stats` describes the last call. `save(blocks, path)` /
    `Chunker.load(path)` keep blocks and stats together on disk.

    - `stride`: tokens of overlap between consecutive pieces of a document longer than a
      block. Each piece after the first starts with the last `stride` tokens of the one
      before, as context only (label -100), so no token is trained twice and every token
      after the first piece is predicted with context. 0 (default): no overlap, and the
      first token of each later piece is no target.
    - `num_proc`: processes for tokenising text with `datasets.map(batched=True)`; used when
      it is over 1 and the input is large (PARALLEL_MIN_DOCS documents and
      PARALLEL_MIN_CHARS characters), else the in-process batched tokenizer (faster on small
      inputs; a fast tokenizer already uses several threads there unless
      TOKENIZERS_PARALLELISM=false).
    - `batch_size`: texts per tokenizer call.
    """

    def __init__(
        self,
        tokenizer: Any,
        block_size: int | None = None,
        *,
        stride: int = 0,
        num_proc: int | None = None,
        batch_size: int = 1000,
    ):
        if tokenizer.eos_token_id is None:
            raise KinfuseError(
                "the tokenizer has no EOS token, which kinfuse puts between documents; "
                "set one, e.g. tokenizer.eos_token = '</s>' (a token the model knows)"
            )
        self.tokenizer = tokenizer
        max_len = getattr(tokenizer, "model_max_length", None)
        if not isinstance(max_len, int) or max_len > 1_000_000:  # HF's "unknown" sentinel is huge
            max_len = 2048
        self.block_size = block_size or min(2048, max_len)
        problems = []
        if not isinstance(self.block_size, int) or self.block_size < 2:
            problems.append(f"block_size={self.block_size!r}: must be an integer of at least 2 tokens")
        elif not isinstance(stride, int) or not 0 <= stride < self.block_size:
            problems.append(f"stride={stride!r}: must be an integer in [0, block_size={self.block_size}); "
                            "it is the overlap between pieces of a long document")
        if num_proc is not None and (not isinstance(num_proc, int) or num_proc < 1):
            problems.append(f"num_proc={num_proc!r}: must be a positive integer or None (in-process)")
        if not isinstance(batch_size, int) or batch_size < 1:
            problems.append(f"batch_size={batch_size!r}: must be a positive integer")
        if problems:
            raise KinfuseError("bad Chunker settings:\n" + "\n".join(f"  - {p}" for p in problems))
        self.stride, self.num_proc, self.batch_size = stride, num_proc, batch_size
        # Padding is masked out of the loss and is its own attention segment, so its id only
        # has to be a valid token: without a pad token, EOS serves.
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_id = int(tokenizer.eos_token_id)
        self.bos_prefix = self._special_prefix()
        self.stats = ChunkStats()

    def _special_prefix(self) -> int | None:
        """The BOS id when the tokenizer puts one in front of every text by itself, else None."""
        tok = self.tokenizer
        sample = "Hello world"
        plain = list(tok(sample, add_special_tokens=False)["input_ids"])
        with_special = list(tok(sample, add_special_tokens=True)["input_ids"])
        n = len(with_special) - len(plain)
        if n >= 1 and with_special[n:n + len(plain)] == plain and with_special[n - 1] == tok.bos_token_id:
            return int(tok.bos_token_id)
        return None

    # -- rows -----------------------------------------------------------------------

    def _rows(self, data: Any) -> Iterable[Mapping[str, Any]]:
        if isinstance(data, (list, tuple)) and data and not isinstance(data[0], Mapping):
            for part in data:  # a list of corpora / datasets
                yield from self._rows(part)
            return
        if hasattr(data, "to_dataset") and hasattr(data, "documents"):  # a Corpus
            for doc in data.documents:
                yield {"text": doc.text}
            return
        if _is_text_dataset(data):  # a text-only datasets.Dataset: one column read, no row dicts
            for text in data["text"]:
                yield {"text": text}
            return
        yield from data  # a datasets.Dataset or a list of dicts

    def _classify(self, data: Any) -> tuple[list[str], list[list[dict[str, str]]]]:
        """Split rows into texts and chat conversations; empty rows are counted and skipped."""
        texts: list[str] = []
        chats: list[list[dict[str, str]]] = []
        for row in self._rows(data):
            if "messages" in row and row["messages"]:
                chats.append(list(row["messages"]))
            elif row.get("question") and row.get("answer"):
                chats.append([{"role": "user", "content": row["question"]},
                              {"role": "assistant", "content": row["answer"]}])
            elif isinstance(row.get("text"), str) and row["text"].strip():
                texts.append(row["text"])
            elif "text" in row or "messages" in row or "question" in row:
                self.stats.skipped_empty += 1
            else:
                raise KinfuseError(
                    f"row has none of the columns kinfuse trains on (text, messages, question+answer): "
                    f"keys {sorted(row)}"
                )
        return texts, chats

    # -- tokenisation ---------------------------------------------------------------

    def _uses_processes(self, texts: list[str]) -> bool:
        return (self.num_proc or 1) > 1 and len(texts) >= PARALLEL_MIN_DOCS and \
            sum(map(len, texts)) >= PARALLEL_MIN_CHARS

    def _tokenize_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """All texts' token ids (the tokenizer's special tokens included), flat, and their lengths."""
        if not texts:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        if self._uses_processes(texts):
            return self._tokenize_parallel(texts)
        tok = self.tokenizer
        parts, lengths = [], []
        for start in range(0, len(texts), self.batch_size):
            batch = tok(texts[start : start + self.batch_size], add_special_tokens=True,
                        return_attention_mask=False, verbose=False)["input_ids"]
            sizes = np.fromiter(map(len, batch), np.int64, len(batch))
            parts.append(np.fromiter(chain.from_iterable(batch), np.int32, int(sizes.sum())))
            lengths.append(sizes)
        return np.concatenate(parts), np.concatenate(lengths)

    def _tokenize_parallel(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        import datasets
        import pyarrow.compute as pc

        ds = datasets.Dataset.from_dict({"text": texts})
        with tempfile.TemporaryDirectory(prefix="kinfuse-chunk-") as tmp:
            # Shards go to a temporary folder, not the datasets cache: they are read back at once.
            out = ds.map(
                _tokenize_batch, batched=True, batch_size=self.batch_size, num_proc=self.num_proc,
                remove_columns=["text"], fn_kwargs={"tokenizer": self.tokenizer},
                cache_file_name=str(Path(tmp) / "tokens.arrow"), desc="tokenising", load_from_cache_file=False,
            )
            column = out.data.column("input_ids")  # order is preserved across processes
            ids = np.concatenate([c.flatten().to_numpy(zero_copy_only=False) for c in column.chunks]).astype(np.int32)
            lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
            del out, column  # release the memory-mapped shards before the folder goes
        return ids, lengths

    def _finish_texts(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Drop a doubled BOS and append EOS where missing, for all documents at once."""
        if not len(lengths):
            return ids, lengths
        ends = np.cumsum(lengths)
        starts = ends - lengths
        drop = np.zeros(len(lengths), bool)
        if self.bos_prefix is not None:
            # The text began with the BOS string and the tokenizer added its own in front.
            two = lengths >= 2
            drop[two] = (ids[starts[two]] == self.bos_prefix) & (ids[starts[two] + 1] == self.bos_prefix)
            if drop.any():
                keep = np.ones(len(ids), bool)
                keep[starts[drop] + 1] = False
                ids, lengths = ids[keep], lengths - drop
                ends = np.cumsum(lengths)
        last = ids[np.maximum(ends - 1, 0)] if len(ids) else np.zeros(len(lengths), np.int32)
        need_eos = (lengths == 0) | (last != self.eos_id)
        ids = np.insert(ids, ends[need_eos], np.int32(self.eos_id))
        self.stats.eos_added += int(need_eos.sum())
        self.stats.duplicate_bos_removed += int(drop.sum())
        return ids.astype(np.int32, copy=False), lengths + need_eos

    def _encode_chats(self, chats: list[list[dict[str, str]]]) -> list[tuple[list[int], list[int]]]:
        """Chat examples as (ids, labels): every segment of every conversation in one batched call."""
        if not chats:
            return []
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            raise KinfuseError(
                "chat examples (messages / question+answer rows) need a tokenizer with a chat template; "
                "use a chat model, or pass the Q&A as plain text rows ({'text': ...})"
            )
        segments: list[tuple[int, str, bool]] = []  # (conversation, text, is the assistant's)
        for c, messages in enumerate(chats):
            rendered = ""
            for i, msg in enumerate(messages):
                if msg.get("role") != "assistant":
                    continue
                prompt = tok.apply_chat_template(messages[:i], add_generation_prompt=True, tokenize=False)
                upto = tok.apply_chat_template(messages[: i + 1], tokenize=False)
                if not prompt.startswith(rendered) or not upto.startswith(prompt):
                    raise KinfuseError(
                        "this tokenizer's chat template rewrites earlier turns, so assistant tokens cannot be "
                        "located; pass single-turn examples or plain text rows instead"
                    )
                segments.append((c, prompt[len(rendered) :], False))
                segments.append((c, upto[len(prompt) :], True))
                rendered = upto
        encoded = tok([s for _, s, _ in segments], add_special_tokens=False, return_attention_mask=False,
                      verbose=False)["input_ids"] if segments else []
        out: list[tuple[list[int], list[int]]] = [([], []) for _ in chats]
        for (c, _, target), seg in zip(segments, encoded):
            out[c][0].extend(seg)
            out[c][1].extend(seg if target else [IGNORE] * len(seg))
        for messages, (_, labels) in zip(chats, out):
            if all(x == IGNORE for x in labels):
                raise KinfuseError(f"chat example without an assistant answer: {messages!r}")
        return out

    def _tokenize(self, data: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, labels, lengths) of every document, flat: texts first, then chat examples."""
        texts, chats = self._classify(data)
        ids, lengths = self._finish_texts(*self._tokenize_texts(texts))
        labels = ids.copy()  # every text token is a target (segment starts are masked when packing)
        chat = self._encode_chats(chats)
        if chat:
            ids = np.concatenate([ids, np.fromiter(chain.from_iterable(i for i, _ in chat), np.int32)])
            labels = np.concatenate([labels, np.fromiter(chain.from_iterable(lab for _, lab in chat), np.int32)])
            lengths = np.concatenate([lengths, np.array([len(i) for i, _ in chat], np.int64)])
        self.stats.documents += len(lengths)
        self.stats.tokens_in += int(lengths.sum())
        return ids, labels, lengths

    def encode(self, data: Any) -> list[tuple[list[int], list[int]]]:
        """Tokenise every row into (input_ids, labels), texts first then chat examples; empty rows
        are skipped and counted in `stats`. (Packing works on flat arrays; this is for inspection.)"""
        ids, labels, lengths = self._tokenize(data)
        ends = np.cumsum(lengths).tolist()
        return [(ids[e - n : e].tolist(), labels[e - n : e].tolist()) for e, n in zip(ends, lengths.tolist())]

    # -- packing --------------------------------------------------------------------

    def __call__(self, data: Any) -> Any:
        self.stats = ChunkStats()
        ids, labels, lengths = self._tokenize(data)
        src, size, overlap = self._split(lengths)
        block, offset, fill = self._pack(size)
        if not len(fill):
            raise KinfuseError("nothing to train on: every row was empty (see Chunker.stats.skipped_empty)")
        return self._build(ids, labels, src, size, overlap, block, offset, fill)

    def chunk(self, data: Any, *, anchor: bool | None = None) -> tuple[Any, ChunkStats]:
        """(blocks, their stats) for `data`; with `anchor`, every block gets an `anchor` column
        with that value (anchor blocks train on KL to the base model instead of cross-entropy)."""
        blocks = self(data)
        if anchor is not None:
            blocks = blocks.add_column("anchor", [anchor] * len(blocks))
        return blocks, self.stats

    def _split(self, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pieces of at most block_size tokens: (start in the flat arrays, length, overlap), in
        document order. Consecutive pieces of a document start `block_size - stride` apart."""
        n, s = self.block_size, self.stride
        step = n - s
        counts = np.where(lengths > n, 1 + -(-(lengths - n) // step), 1)  # ceil division
        doc = np.repeat(np.arange(len(lengths)), counts)
        first = np.cumsum(counts) - counts  # index of each document's first piece
        k = np.arange(len(doc)) - first[doc]  # piece number within its document
        begin = k * step
        size = np.minimum(n, lengths[doc] - begin)
        starts = np.cumsum(lengths) - lengths
        overlap = np.where(k > 0, s, 0)
        self.stats.split_documents += int((counts > 1).sum())
        self.stats.overlap_tokens += int(overlap.sum())
        return starts[doc] + begin, size, overlap

    def _pack(self, size: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Best-fit decreasing: each piece goes into the fullest block it still fits in, so
        blocks stay nearly full and short chat examples are never cut in two.
        Returns each piece's block and offset in it, and each block's real tokens."""
        n = self.block_size
        block = np.empty(len(size), np.int64)
        offset = np.empty(len(size), np.int64)
        order = np.argsort(-size, kind="stable")  # longest first, ties in input order
        full = int((size == n).sum())  # full pieces each fill a block: no search needed
        block[order[:full]] = np.arange(full)
        offset[order[:full]] = 0
        fills: list[int] = [n] * full
        free: list[tuple[int, int]] = []  # sorted (space left, block index)
        rest = order[full:]
        rest_sizes = size[rest].tolist()
        rest_block, rest_offset = [], []
        for length in rest_sizes:
            j = bisect.bisect_left(free, (length, -1))
            if j < len(free):
                space, b = free.pop(j)
            else:
                space, b = n, len(fills)
                fills.append(0)
            rest_block.append(b)
            rest_offset.append(fills[b])
            fills[b] += length
            if space - length > 0:
                bisect.insort(free, (space - length, b))
        block[rest] = rest_block
        offset[rest] = rest_offset
        return block, offset, np.array(fills, np.int64)

    def _build(self, ids: np.ndarray, labels: np.ndarray, src: np.ndarray, size: np.ndarray, overlap: np.ndarray,
               block: np.ndarray, offset: np.ndarray, fill: np.ndarray) -> Any:
        import datasets
        import pyarrow as pa
        from datasets.table import InMemoryTable

        n, nb = self.block_size, len(fill)
        pad = n - fill
        # Segments: the pieces, then one padding segment per block that is not full.
        padded = np.flatnonzero(pad)
        seg_block = np.concatenate([block, padded])
        seg_offset = np.concatenate([offset, fill[padded]])
        seg_size = np.concatenate([size, pad[padded]])
        seg_first = np.cumsum(seg_size) - seg_size
        within = np.arange(int(seg_size.sum())) - np.repeat(seg_first, seg_size)  # position in its segment
        dest = np.repeat(seg_block * n + seg_offset, seg_size) + within
        real = len(within) - int(pad.sum())  # the pieces' tokens come first
        out_ids = np.full(nb * n, self.pad_id, np.int32)
        out_labels = np.full(nb * n, IGNORE, np.int32)
        out_pos = np.empty(nb * n, np.int32)
        source = np.repeat(src, size) + within[:real]
        out_ids[dest[:real]] = ids[source]
        lab = labels[source]
        # The first token of a segment has nothing before it in this block to predict it from
        # (the model shifts labels left by one), and overlap tokens were targets in the piece before.
        lab[within[:real] < np.repeat(np.maximum(overlap, 1), size)] = IGNORE
        out_labels[dest[:real]] = lab
        out_pos[dest] = within  # restarts per segment, padding included: real tokens never attend to it
        # Segment lengths per block in order, padding last (it sits at the end of each block).
        order = np.lexsort((seg_offset, seg_block))
        per_block = np.bincount(seg_block, minlength=nb)
        doc_offsets = np.concatenate([[0], np.cumsum(per_block)]).astype(np.int32)

        def rows(flat: np.ndarray) -> pa.Array:
            if nb * n < 2**31:
                return pa.ListArray.from_arrays(pa.array(np.arange(0, nb * n + 1, n, dtype=np.int32)), pa.array(flat))
            # Over 2^31 tokens the 32-bit list offsets would overflow.
            return pa.LargeListArray.from_arrays(pa.array(np.arange(0, nb * n + 1, n, dtype=np.int64)), pa.array(flat))

        table = pa.table({
            "input_ids": rows(out_ids),
            "labels": rows(out_labels),
            "position_ids": rows(out_pos),
            "doc_lengths": pa.ListArray.from_arrays(pa.array(doc_offsets), pa.array(seg_size[order].astype(np.int32))),
            "num_tokens": pa.array(fill.astype(np.int32)),
        })
        st = self.stats
        st.blocks, st.padding = nb, int(pad.sum())
        st.tokens_packed = int(fill.sum())
        st.target_tokens = int((out_labels != IGNORE).sum())
        return datasets.Dataset(InMemoryTable(table))

    # -- save / load (kinfuse.data.saved_blocks) --------------------------------------

    def tokenizer_fingerprint(self) -> dict[str, Any]:
        from .saved_blocks import tokenizer_fingerprint

        return tokenizer_fingerprint(self.tokenizer)

    def save(self, blocks: Any, path: str | Path) -> Path:
        """Write blocks (from this chunker's last call) and their stats and settings to a folder;
        `Chunker.load(path)` reads both back. An existing chunk folder at `path` is replaced."""
        from .saved_blocks import save_blocks

        return save_blocks(self, blocks, path)

    @staticmethod
    def load(path: str | Path, tokenizer: Any = None) -> tuple[Any, ChunkStats]:
        """(blocks, stats) saved by `Chunker.save`. With `tokenizer`, check that it is the one the
        blocks were made with (vocabulary size, special tokens, and a sample's token ids)."""
        from .saved_blocks import load_blocks

        return load_blocks(path, tokenizer)


def _is_text_dataset(data: Any) -> bool:
    names = getattr(data, "column_names", None)
    return isinstance(names, list) and "text" in names and not {"messages", "question"} & set(names)
