"""Chunked blocks on disk: `Chunker.save` / `Chunker.load`, so a large corpus is tokenised and
packed once. The folder holds the Arrow files and kinfuse_chunks.json (format, settings,
stats, and a fingerprint of the tokenizer, so blocks are never trained with another one)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .. import io
from ..errors import KinfuseError
from .chunker import Chunker, ChunkStats

META_FILE = "kinfuse_chunks.json"  # written next to the Arrow files
FORMAT_VERSION = 1
_FINGERPRINT_SAMPLE = "kinfuse tokenizer check: The 3,200 GPUs ran at 99.5% (2023-07-26)."


def save_blocks(chunker: Chunker, blocks: Any, path: str | Path) -> Path:
    """`Chunker.save`: the blocks the chunker made last, with their stats and settings."""
    path = Path(path)
    if len(blocks) != chunker.stats.blocks or (len(blocks) and len(blocks[0]["input_ids"]) != chunker.block_size):
        raise KinfuseError(
            f"save(blocks, {path}): these {len(blocks)} blocks are not the {chunker.stats.blocks} blocks of "
            f"{chunker.block_size} tokens this chunker made last; save right after chunking"
        )
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / META_FILE).is_file())):
        raise KinfuseError(f"save: {path} exists and is not a kinfuse chunk folder; choose another path")
    meta = {
        "format": FORMAT_VERSION,
        "block_size": chunker.block_size,
        "stride": chunker.stride,
        "tokenizer": tokenizer_fingerprint(chunker.tokenizer),
        "stats": chunker.stats.to_dict(),
    }
    # Written beside the target and swapped in, so an interrupted save never leaves half a folder.
    with io.staged_dir(path) as tmp:
        blocks.save_to_disk(str(tmp / "data"))
        for f in (tmp / "data").iterdir():
            f.rename(tmp / f.name)
        (tmp / "data").rmdir()
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
    return path


def load_blocks(path: str | Path, tokenizer: Any = None) -> tuple[Any, ChunkStats]:
    """`Chunker.load`: (blocks, stats), checked against `tokenizer` when given."""
    import datasets

    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise KinfuseError(f"{path} is not a kinfuse chunk folder (no {META_FILE}); write one with Chunker.save")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise KinfuseError(f"{path}: chunk format {meta.get('format')!r}, this kinfuse reads {FORMAT_VERSION}; "
                           "chunk the data again")
    if tokenizer is not None:
        now, then = tokenizer_fingerprint(tokenizer), meta["tokenizer"]
        diff = [f"{k}: saved {then.get(k)!r}, given {now[k]!r}" for k in now if k != "name_or_path"
                and now[k] != then.get(k)]
        if diff:
            raise KinfuseError(f"{path} was chunked with another tokenizer ({then.get('name_or_path')}): "
                               + "; ".join(diff) + "; chunk the data again with this tokenizer")
    blocks = datasets.load_from_disk(str(path))
    stats = ChunkStats.from_dict(meta["stats"])
    if len(blocks) != stats.blocks:
        raise KinfuseError(f"{path}: {len(blocks)} blocks on disk but the stats say {stats.blocks}; "
                           "the folder was changed after saving: chunk the data again")
    return blocks, stats


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any]:
    """What identifies a tokenizer for saved blocks: sizes, special ids, and a sample's ids."""
    ids = list(tokenizer(_FINGERPRINT_SAMPLE, add_special_tokens=True)["input_ids"])
    return {
        "name_or_path": str(getattr(tokenizer, "name_or_path", "") or ""),
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "sample_sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16],
    }
