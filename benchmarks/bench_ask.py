"""Does `kinfuse ask` (kinfuse.load_run) answer as the evaluation at the end of `infuse` did?

Two measures on a finished run, against the answers in its metrics.json:
  batched: the probe file's first batch (eval.batch_size rows) generated as the evaluation
           batched it, base and adapted: tests the loading (quantization, dtype, adapter, forwards);
  alone:   the first N chat probes asked one at a time, as `kinfuse ask` asks them.

    python benchmarks/bench_ask.py --run DIR [--alone 6] [--out benchmarks/results]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a completed run folder with metrics.json")
    parser.add_argument("--alone", type=int, default=6, help="chat probes asked one at a time")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()

    import kinfuse
    from kinfuse.data.probes import load_probes

    run_dir = Path(args.run)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    results = metrics["probes"]["results"]
    started = time.perf_counter()
    run = kinfuse.load_run(run_dir)
    load_seconds = time.perf_counter() - started
    evaluator = run.evaluator()
    rows = load_probes(metrics["config"]["eval"]["probes"][0])[: run.batch_size]
    t = time.perf_counter()
    base = [a for a, _ in evaluator.generate(rows, adapter=False)]
    adapted = [a for a, _ in evaluator.generate(rows, adapter=True)]
    batched = {"n": len(rows), "seconds": time.perf_counter() - t,
               "base_identical": sum(a == r["base_answer"] for a, r in zip(base, results)),
               "adapted_identical": sum(a == r["adapted_answer"] for a, r in zip(adapted, results))}
    chat = [r for r in results if r["kind"] == "chat"][: args.alone]
    t = time.perf_counter()
    alone = {"n": len(chat),
             "base_identical": sum(run.ask(r["prompt"], adapter=False) == r["base_answer"] for r in chat),
             "adapted_identical": sum(run.ask(r["prompt"]) == r["adapted_answer"] for r in chat)}
    alone["seconds"] = time.perf_counter() - t
    report = {
        "benchmark": "ask", "run": str(run_dir.absolute()), "model": run.base, "quantize": run.quantize,
        "compute_dtype": run.compute_dtype, "device": run.device, "cpu": cpu_name(), "load_seconds": load_seconds,
        "batched": batched, "alone": alone, "git_commit": git_commit(),
        "versions": {"python": platform.python_version(), **{p: version(p) for p in
                     ("torch", "transformers", "peft", "bitsandbytes")}},
    }
    path = write_result(report, args.out, "ask")
    print(json.dumps({k: report[k] for k in ("batched", "alone", "load_seconds")}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
