"""Tokenise documents and chat examples, and pack them into fixed-size training blocks.

Unlike the 2023 reference recipe (concatenate everything, cut 2048-token blocks, drop the
remainder), documents keep their boundaries: each block carries `position_ids` that restart
at every document, which transformers turns into a block-diagonal attention mask (or
flash-attn varlen), so a document never attends to an unrelated neighbour. Nothing is
dropped: long documents are split, the last block is padded (padding is masked out of the
loss), and `stats` counts every token.

Rows with `text` are continued-pretraining text (every token is a target). Rows with
`messages` (or `question` + `answer`) are chat examples rendered with the tokenizer's chat
template; only the assistant's tokens are targets, so the model learns to answer with the
new facts rather than only to continue the text.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .errors import KinfuseError

IGNORE = -100  # label value torch's cross-entropy skips


@dataclass
class ChunkStats:
    documents: int = 0  # rows tokenised (text documents and chat examples)
    skipped_empty: int = 0  # rows with no text, skipped and counted
    tokens_in: int = 0  # tokens from the tokenizer, with the BOS/EOS the chunker adds
    tokens_packed: int = 0  # real (non-padding) tokens written into blocks; equals tokens_in
    target_tokens: int = 0  # tokens the loss is computed on
    padding: int = 0  # padding tokens filling the ends of blocks
    blocks: int = 0
    split_documents: int = 0  # documents longer than a block, split into pieces

    @property
    def padding_fraction(self) -> float:
        total = self.tokens_packed + self.padding
        return self.padding / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "padding_fraction": round(self.padding_fraction, 4)}


class Chunker:
    """Turn a Corpus, a datasets.Dataset or a list of rows into packed training blocks.

    `Chunker(tokenizer, block_size=None)(data)` returns a `datasets.Dataset` with
    `input_ids`, `labels`, `position_ids` (restarting per document), `doc_lengths` (the
    segment lengths, padding last, for cu_seqlens) and `num_tokens` (real tokens per block).
    """

    def __init__(self, tokenizer: Any, block_size: int | None = None):
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
        if self.block_size < 2:
            raise KinfuseError(f"block_size={self.block_size}: must be at least 2 tokens")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.stats = ChunkStats()

    # -- tokenisation ---------------------------------------------------------------

    def _rows(self, data: Any) -> Iterable[Mapping[str, Any]]:
        if isinstance(data, (list, tuple)) and data and not isinstance(data[0], Mapping):
            for part in data:  # a list of corpora / datasets
                yield from self._rows(part)
            return
        if hasattr(data, "to_dataset") and hasattr(data, "documents"):  # a Corpus
            for doc in data.documents:
                yield {"text": doc.text}
            return
        yield from data  # a datasets.Dataset or a list of dicts

    def _encode_text(self, texts: list[str]) -> list[tuple[list[int], list[int]]]:
        tok = self.tokenizer
        out = []
        for start in range(0, len(texts), 512):
            batch = tok(texts[start : start + 512], add_special_tokens=True)["input_ids"]
            for ids in batch:
                ids = list(ids) + [tok.eos_token_id]  # EOS ends every document
                out.append((ids, list(ids)))
        return out

    def _encode_chat(self, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            raise KinfuseError(
                "chat examples (messages / question+answer rows) need a tokenizer with a chat template; "
                "use a chat model, or pass the Q&A as plain text rows ({'text': ...})"
            )
        ids: list[int] = []
        labels: list[int] = []
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
            context = tok(prompt[len(rendered) :], add_special_tokens=False)["input_ids"]
            answer = tok(upto[len(prompt) :], add_special_tokens=False)["input_ids"]
            ids += context + answer
            labels += [IGNORE] * len(context) + list(answer)
            rendered = upto
        if not labels or all(x == IGNORE for x in labels):
            raise KinfuseError(f"chat example without an assistant answer: {messages!r}")
        return ids, labels

    def encode(self, data: Any) -> list[tuple[list[int], list[int]]]:
        """Tokenise every row into (input_ids, labels); empty rows are skipped and counted."""
        texts: list[str] = []
        encoded: list[tuple[list[int], list[int]]] = []
        for row in self._rows(data):
            if "messages" in row and row["messages"]:
                encoded.append(self._encode_chat(list(row["messages"])))
            elif row.get("question") and row.get("answer"):
                msgs = [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]
                encoded.append(self._encode_chat(msgs))
            elif isinstance(row.get("text"), str) and row["text"].strip():
                texts.append(row["text"])
            elif "text" in row or "messages" in row or "question" in row:
                self.stats.skipped_empty += 1
            else:
                raise KinfuseError(
                    f"row has none of the columns kinfuse trains on (text, messages, question+answer): "
                    f"keys {sorted(row)}"
                )
        encoded += self._encode_text(texts)
        self.stats.documents += len(encoded)
        return encoded

    # -- packing --------------------------------------------------------------------

    def __call__(self, data: Any) -> Any:
        import datasets

        self.stats = ChunkStats()
        pieces = self._split(self.encode(data))
        blocks = self._pack(pieces)
        columns: dict[str, list[Any]] = {
            "input_ids": [], "labels": [], "position_ids": [], "doc_lengths": [], "num_tokens": []
        }
        for block in blocks:
            ids: list[int] = []
            labels: list[int] = []
            positions: list[int] = []
            lengths: list[int] = []
            for piece_ids, piece_labels in block:
                ids += piece_ids
                # The first token of a segment has nothing before it in this block to predict
                # it from, so it is no target (the model shifts labels left by one).
                labels += [IGNORE] + piece_labels[1:]
                positions += range(len(piece_ids))
                lengths.append(len(piece_ids))
            pad = self.block_size - len(ids)
            if pad:
                ids += [self.pad_id] * pad
                labels += [IGNORE] * pad
                positions += range(pad)  # its own segment, so real tokens never attend to padding
                lengths.append(pad)
            self.stats.padding += pad
            self.stats.tokens_packed += self.block_size - pad
            self.stats.target_tokens += sum(x != IGNORE for x in labels)
            columns["input_ids"].append(ids)
            columns["labels"].append(labels)
            columns["position_ids"].append(positions)
            columns["doc_lengths"].append(lengths)
            columns["num_tokens"].append(self.block_size - pad)
        self.stats.blocks = len(blocks)
        if not blocks:
            raise KinfuseError("nothing to train on: every row was empty (see Chunker.stats.skipped_empty)")
        return datasets.Dataset.from_dict(columns)

    def _split(self, encoded: list[tuple[list[int], list[int]]]) -> list[tuple[list[int], list[int]]]:
        pieces = []
        n = self.block_size
        for ids, labels in encoded:
            self.stats.tokens_in += len(ids)
            if len(ids) > n:
                self.stats.split_documents += 1
            for start in range(0, len(ids), n):
                pieces.append((ids[start : start + n], labels[start : start + n]))
        return pieces

    def _pack(self, pieces: list[tuple[list[int], list[int]]]) -> list[list[tuple[list[int], list[int]]]]:
        # Best-fit decreasing: each piece goes into the fullest block it still fits in, so
        # blocks stay nearly full and short chat examples are never cut in two.
        order = sorted(range(len(pieces)), key=lambda i: (-len(pieces[i][0]), i))
        blocks: list[list[tuple[list[int], list[int]]]] = []
        free: list[tuple[int, int]] = []  # sorted (space left, block index)
        for i in order:
            size = len(pieces[i][0])
            j = bisect.bisect_left(free, (size, -1))
            if j < len(free):
                space, b = free.pop(j)
            else:
                space, b = self.block_size, len(blocks)
                blocks.append([])
            blocks[b].append(pieces[i])
            if space - size > 0:
                bisect.insort(free, (space - size, b))
        return blocks
