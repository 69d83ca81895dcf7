#!/usr/bin/env python
"""Chunking speed: kinfuse.Chunker against the bare batched tokenizer, on the same text, in one run.

1. builds a text corpus of `--mb` megabytes (default 20) deterministically from the shipped
   general-text sample (`kinfuse/data/general.txt`) and the demo pages
   (`examples/aws-summit-2023/pages`): each document is a seeded draw of paragraphs with
   variation (sentences reordered, numbers redrawn, some words swapped), so no two documents
   are the same text;
2. times (wall clock and this process's CPU time), alternating which goes first, `--repeats` passes of
   - **bare**: `tokenizer(batch, add_special_tokens=True, return_attention_mask=False)` over
     batches of 1000 texts (the call the chunker makes; the default call, which also builds
     attention masks, is timed once for reference), and
   - **chunker**: `Chunker(tokenizer, block_size)(rows)`: tokenising, EOS, splitting,
     best-fit packing and the Arrow dataset, everything up to the returned blocks;
3. checks tokens out == tokens in: the blocks' real tokens equal the bare tokenizer's
   tokens plus the EOS the chunker appends (count and id checksum);
4. writes `benchmarks/results/chunker-<UTC time>.json` and prints the ratios
   (chunker time / bare time, median wall, best-pass wall and median CPU; the target is <= 1.25).

`--parallel` also times `Chunker(num_proc=N)` (datasets.map in N processes) against the
in-process path, on the whole corpus and on a small slice, which is how the chunker's
PARALLEL_MIN_* thresholds were chosen.

    python benchmarks/bench_chunker.py                 # default model's tokenizer, 20 MB
    python benchmarks/bench_chunker.py --mb 5 --repeats 3 --parallel

Timings on a shared machine are noisy: both sides run in the same process, interleaved, and
the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PAGES = REPO / "examples" / "aws-summit-2023" / "pages"
TARGET_RATIO = 1.25
BATCH = 1000

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from provenance import cpu_name, git_commit, version  # noqa: E402


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# -- the corpus ----------------------------------------------------------------------------

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_NUMBER = re.compile(r"\b\d[\d,]*\b")
_SWAPS = [("large", "big"), ("small", "little"), ("people", "residents"), ("city", "town"), ("often", "frequently"),
          ("new", "recent"), ("about", "roughly"), ("customers", "users"), ("model", "system"), ("built", "made")]


def source_paragraphs() -> list[str]:
    from kinfuse import Corpus
    from kinfuse.data.probes import general_texts

    paras = general_texts()
    for doc in Corpus.from_paths([str(PAGES)]):
        paras += [p.strip() for p in doc.text.split("\n") if len(p.strip()) > 80]
    return paras


def build_corpus(megabytes: float, seed: int = 0) -> list[str]:
    """Documents of 2-40 paragraphs, varied, until they add up to `megabytes` of text."""
    paras = source_paragraphs()
    rng = random.Random(seed)
    docs, total, limit = [], 0, int(megabytes * 1_000_000)
    while total < limit:
        out = []
        for _ in range(rng.randint(2, 40)):
            sentences = _SENTENCE.split(rng.choice(paras))
            if len(sentences) > 2 and rng.random() < 0.5:
                rng.shuffle(sentences)
            text = " ".join(sentences)
            text = _NUMBER.sub(lambda m: f"{rng.randint(1, 99_999):,}" if rng.random() < 0.5 else m.group(0), text)
            for a, b in rng.sample(_SWAPS, 3):
                text = re.sub(rf"\b{a}\b", b, text)
            out.append(text)
        doc = "\n\n".join(out)
        docs.append(doc)
        total += len(doc)
    return docs


# -- the timings ---------------------------------------------------------------------------


def bare_tokenize(tok: Any, texts: list[str], *, attention_mask: bool = False, checksum: bool = False) -> tuple[int, int]:
    """Token count (and, untimed, id sum) of every text, tokenised in batches the way the chunker
    calls the tokenizer."""
    count = total = 0
    for start in range(0, len(texts), BATCH):
        kw = {} if attention_mask else {"return_attention_mask": False}
        batch = tok(texts[start : start + BATCH], add_special_tokens=True, verbose=False, **kw)["input_ids"]
        count += sum(map(len, batch))
        if checksum:
            total += sum(map(sum, batch))
    return count, total


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def timed_cpu(fn: Any) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, all its threads, result). On a shared machine
    CPU time is the steadier measure: time spent waiting for a core is not counted."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def real_tokens(blocks: Any) -> tuple[int, int]:
    """Count and id sum of the non-padding tokens of the blocks (padding sits at each block's end)."""
    import numpy as np

    table = blocks.data
    ids = table.column("input_ids").combine_chunks().flatten().to_numpy().astype(np.int64)
    fill = table.column("num_tokens").to_numpy()
    n = ids.size // len(fill)
    mask = np.arange(n)[None, :] < fill[:, None]
    return int(mask.sum()), int(ids.reshape(len(fill), n)[mask].sum())


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    from kinfuse import Chunker, default_model

    model = default_model() if args.model == "default" else args.model
    tok = AutoTokenizer.from_pretrained(model)
    t_build, docs = timed(lambda: build_corpus(args.mb, args.seed))
    chars = sum(map(len, docs))
    rows = [{"text": d} for d in docs]
    print(f"corpus: {len(docs)} documents, {chars / 1e6:.1f} MB (built in {t_build:.1f} s); load {load_average()}")

    # Warm-up on a slice (tokenizer caches, lazy imports), not timed.
    bare_tokenize(tok, docs[:200])
    Chunker(tok, args.block_size)(rows[:200])

    bare_times, chunk_times, bare_cpu, chunk_cpu = [], [], [], []
    bare_out = chunk_stats = blocks = None
    for r in range(args.repeats):
        order = ("bare", "chunker") if r % 2 == 0 else ("chunker", "bare")
        for which in order:
            if which == "bare":
                t, c, bare_out = timed_cpu(lambda: bare_tokenize(tok, docs))
                bare_times.append(t)
                bare_cpu.append(c)
            else:
                chunker = Chunker(tok, args.block_size)
                blocks = None  # free the previous pass's blocks before timing the next
                t, c, blocks = timed_cpu(lambda: chunker(rows))
                chunk_times.append(t)
                chunk_cpu.append(c)
                chunk_stats = chunker.stats
            print(f"  pass {r + 1} {which}: {t:.2f} s wall, {c:.2f} s CPU; load {load_average()}")
    t_default = timed(lambda: bare_tokenize(tok, docs, attention_mask=True))[0] if args.default_call else None

    tokens_in, checksum_in = bare_tokenize(tok, docs, checksum=True)  # untimed: the id sum costs Python time
    assert tokens_in == bare_out[0]
    eos = tok.eos_token_id
    out_count, out_checksum = real_tokens(blocks)
    expected_count = tokens_in + chunk_stats.eos_added - chunk_stats.duplicate_bos_removed
    bos = tok.bos_token_id or 0
    expected_checksum = checksum_in + eos * chunk_stats.eos_added - bos * chunk_stats.duplicate_bos_removed
    bare_s, chunk_s = statistics.median(bare_times), statistics.median(chunk_times)
    report: dict[str, Any] = {
        "benchmark": "chunker",
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": cpu_name(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "tokenizers": version("tokenizers"),
        "datasets": version("datasets"),
        "numpy": version("numpy"),
        "git_commit": git_commit(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM"),
        "load_average_before": args.load_before,
        "load_average_after": load_average(),
        "model": str(model),
        "tokenizer_class": type(tok).__name__,
        "corpus": {"documents": len(docs), "chars": chars, "seed": args.seed,
                   "sha256": hashlib.sha256("\x00".join(docs).encode()).hexdigest()[:16]},
        "block_size": args.block_size,
        "bare_seconds": [round(t, 4) for t in bare_times],
        "chunker_seconds": [round(t, 4) for t in chunk_times],
        "bare_cpu_seconds": [round(t, 4) for t in bare_cpu],
        "chunker_cpu_seconds": [round(t, 4) for t in chunk_cpu],
        "bare_default_call_seconds": t_default and round(t_default, 4),  # with attention masks, for reference
        "bare_median_s": round(bare_s, 4),
        "chunker_median_s": round(chunk_s, 4),
        "bare_tokens_per_s": round(tokens_in / bare_s),
        "chunker_tokens_per_s": round(chunk_stats.tokens_packed / chunk_s),
        "ratio": round(chunk_s / bare_s, 4),  # median wall time, chunker / bare
        "ratio_min_wall": round(min(chunk_times) / min(bare_times), 4),  # best pass of each
        "ratio_cpu": round(statistics.median(chunk_cpu) / statistics.median(bare_cpu), 4),  # median CPU time
        "target_ratio": TARGET_RATIO,
        "meets_target": chunk_s / bare_s <= TARGET_RATIO,
        "meets_target_cpu": statistics.median(chunk_cpu) / statistics.median(bare_cpu) <= TARGET_RATIO,
        "tokens": {
            "bare_tokens": tokens_in,
            "eos_added": chunk_stats.eos_added,
            "duplicate_bos_removed": chunk_stats.duplicate_bos_removed,
            "expected_out": expected_count,
            "blocks_real_tokens": out_count,
            "tokens_in_stat": chunk_stats.tokens_in,
            "tokens_packed_stat": chunk_stats.tokens_packed,
            "checksum_ok": out_checksum == expected_checksum,
            "ok": out_count == expected_count == chunk_stats.tokens_packed == chunk_stats.tokens_in
            and out_checksum == expected_checksum,
        },
        "chunk_stats": chunk_stats.to_dict(),
    }
    if args.parallel:
        report["parallel"] = parallel_timings(tok, rows, args)
    return report


def parallel_timings(tok: Any, rows: list[dict[str, str]], args: argparse.Namespace) -> dict[str, Any]:
    """In-process vs datasets.map(num_proc) tokenisation, on the whole corpus and a small slice."""
    from kinfuse.data import chunker as chunker_mod

    out: dict[str, Any] = {"num_proc": args.num_proc}
    saved = chunker_mod.PARALLEL_MIN_DOCS, chunker_mod.PARALLEL_MIN_CHARS
    try:
        chunker_mod.PARALLEL_MIN_DOCS = chunker_mod.PARALLEL_MIN_CHARS = 0  # force the process path
        for name, part in (("all", rows), ("small_200_docs", rows[:200])):
            simple = timed(lambda: chunker_mod.Chunker(tok, args.block_size)(part))[0]
            procs = timed(lambda: chunker_mod.Chunker(tok, args.block_size, num_proc=args.num_proc)(part))[0]
            out[name] = {"in_process_s": round(simple, 4), "processes_s": round(procs, 4),
                         "chars": sum(len(r["text"]) for r in part)}
            print(f"  {name}: in-process {simple:.2f} s, num_proc={args.num_proc} {procs:.2f} s")
    finally:
        chunker_mod.PARALLEL_MIN_DOCS, chunker_mod.PARALLEL_MIN_CHARS = saved
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="tokenizer: 'default' (SmolLM2-135M-Instruct) or a path/id")
    p.add_argument("--mb", type=float, default=20.0, help="corpus size in megabytes of text")
    p.add_argument("--block-size", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3, help="timed passes of each side (median reported)")
    p.add_argument("--seed", type=int, default=0, help="seed of the corpus draw")
    p.add_argument("--parallel", action="store_true", help="also time Chunker(num_proc=...) (datasets.map)")
    p.add_argument("--num-proc", type=int, default=2)
    p.add_argument("--no-default-call", dest="default_call", action="store_false",
                   help="skip timing the tokenizer's default call (with attention masks), a reference only")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/chunker-<time>.json)")
    args = p.parse_args(argv)
    args.load_before = load_average()
    report = run(args)
    path = Path(args.out) if args.out else RESULTS / f"chunker-{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"bare tokenizer {report['bare_median_s']:.2f} s, chunker {report['chunker_median_s']:.2f} s: "
          f"ratio {report['ratio']:.3f} wall (best passes {report['ratio_min_wall']:.3f}), "
          f"{report['ratio_cpu']:.3f} CPU time (target <= {TARGET_RATIO}); tokens ok: {report['tokens']['ok']}")
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
