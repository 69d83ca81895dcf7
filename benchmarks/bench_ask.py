"""Does `kinfuse ask` (kinfuse.load_run) answer as the evaluation at the end of `infuse` does?

On a finished run, for every probe of its probe and retention files (chat and completion),
base and adapted, greedy with the run's settings:
  evaluator: the answers as `Evaluator.compare` generates them (kinfuse.generate: every prompt
             left-padded to its own padded length, batches of one padded length), timed;
  padded:    the answers of the batching before it (left-padded batches of eval.batch_size in
             file order, the same loop as kinfuse.generate had), timed: the "before";
  alone:     each prompt on its own, as `kinfuse ask` asks it;
and how many evaluator / padded answers are identical to the lone ones, and (for the record)
to the answers in the run's metrics.json.

    python benchmarks/bench_ask.py --run DIR [--probes F --retention F] [--limit N] [--every N] [--modes alone]
        [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import cpu_name, git_commit, version, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def padded(evaluator, rows, adapter):
    """kinfuse.generate's batching before this benchmark's fix: left padding to the longest."""
    import torch

    tok, out = evaluator.tokenizer, []
    eos = evaluator.eos_ids()
    with evaluator.inference(adapter) as device:
        for start in range(0, len(rows), evaluator.batch_size):
            seqs = [evaluator.encode(p)[1] for p in rows[start : start + evaluator.batch_size]]
            width = max(map(len, seqs))
            ids = torch.tensor([[tok.pad_token_id] * (width - len(s)) + s for s in seqs], device=device)
            mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
            gen = evaluator.model.generate(input_ids=ids, attention_mask=mask, **evaluator.decoding())
            for row in gen[:, width:].tolist():
                ended = any(t in eos for t in row)
                if ended:
                    row = row[: next(i for i, t in enumerate(row) if t in eos)]
                out.append((tok.decode(row, skip_special_tokens=True).strip(), ended))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a completed run folder with metrics.json")
    parser.add_argument("--probes", help="probe file (default: the run's, else the example's)")
    parser.add_argument("--retention", help="retention file (default: the run's, else the example's)")
    parser.add_argument("--limit", type=int, help="first N rows of each file only (development)")
    parser.add_argument("--every", type=int, default=1, help="every Nth row of each file only (a spread subset)")
    parser.add_argument("--modes", default="evaluator,padded,alone",
                        help="which answers to generate (alone is always included): e.g. 'alone' only compares "
                             "lone asks with the answers the run's metrics.json recorded")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()
    modes = set(args.modes.split(",")) | {"alone"}

    import kinfuse
    from kinfuse.data.probes import load_probes

    run_dir = Path(args.run)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    evals = metrics["config"]["eval"]
    example = ROOT / "examples" / "aws-summit-2023"

    def pick(given, listed, name):
        path = Path(given or (listed[0] if listed else example / name))
        return path if path.is_file() else example / name

    files = {"probes": pick(args.probes, evals.get("probes"), "probes.jsonl"),
             "retention": pick(args.retention, evals.get("retention"), "retention.jsonl")}
    started = time.perf_counter()
    run = kinfuse.load_run(run_dir)
    load_seconds = time.perf_counter() - started
    evaluator = run.evaluator()
    report = {"benchmark": "ask", "run": str(run_dir.absolute()), "model": run.base, "quantize": run.quantize,
              "compute_dtype": run.compute_dtype, "device": run.device, "cpu": cpu_name(),
              "batch_size": run.batch_size, "max_new_tokens": run.max_new_tokens, "load_seconds": load_seconds,
              "files": {}}
    for key, path in files.items():
        rows = load_probes(path)[: args.limit][:: args.every]
        recorded = {r["prompt"]: r for r in (metrics.get(key) or {}).get("results", [])}
        entry = {"file": str(path), "every": args.every, "n": len(rows), "chat": sum(evaluator.is_chat(r) for r in rows)}
        for adapter, side in ((False, "base"), (True, "adapted")):
            answers: dict[str, list] = {}
            seconds: dict[str, float] = {}
            for mode, make in (("evaluator", lambda: evaluator.generate(rows, adapter=adapter)),
                               ("padded", lambda: padded(evaluator, rows, adapter)),
                               ("alone", lambda: [evaluator.generate([r], adapter=adapter)[0] for r in rows])):
                if mode in modes:
                    t = time.perf_counter()
                    answers[mode] = make()
                    seconds[mode] = time.perf_counter() - t
            alone = answers["alone"]
            asked = [(r.get("question") or r["prompt"]) for r in rows]
            in_metrics = [recorded.get(q, {}).get(f"{side}_answer") for q in asked]
            entry[side] = {"metrics_json_identical_to_alone": sum(m == a for m, (a, _) in zip(in_metrics, alone)),
                           "seconds": seconds}
            for mode in ("evaluator", "padded"):
                if mode in answers:
                    entry[side][f"{mode}_identical_to_alone"] = sum(a == b for a, b in zip(answers[mode], alone))
            if "padded" in answers:
                entry[side]["metrics_json_identical_to_padded"] = sum(
                    m == a for m, (a, _) in zip(in_metrics, answers["padded"]))
            print(key, side, json.dumps(entry[side]), flush=True)
        report["files"][key] = entry
    report.update(git_commit=git_commit(), versions={"python": platform.python_version(), **{
        p: version(p) for p in ("torch", "transformers", "peft", "bitsandbytes")}})
    path = write_result(report, args.out, "ask")
    print(json.dumps(report["files"], indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
