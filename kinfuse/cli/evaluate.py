"""`kinfuse eval RUN --probes F.jsonl [--retention F.jsonl] [--out DIR]`: the comparison that ends
`infuse` (base vs adapted on the probes, retention, perplexity and KL), its tables and
report.html, for any finished run and any probe file. It runs kinfuse.pipeline's own
evaluate_and_report on the run loaded as trained, so both give the same numbers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import KinfuseError
from .ask import add_run_arguments


def add(sub: Any) -> None:
    e = sub.add_parser("eval", help="score a run on probe files: the tables and report.html that end `infuse`")
    add_run_arguments(e)
    e.add_argument("--probes", nargs="+", action="extend", required=True, metavar="F.jsonl",
                   help="knowledge probes (JSONL rows with question or prompt, and answers)")
    e.add_argument("--retention", nargs="+", action="extend", default=[], metavar="F.jsonl",
                   help="general questions the base model should keep answering")
    e.add_argument("--out", help="where report.json and report.html go (default: RUN/eval)")
    e.add_argument("--perplexity", action=argparse.BooleanOptionalAction,
                   help="also general-text perplexity and KL (default: as the run was evaluated)")
    e.set_defaults(handler=run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    from ..config import EvalConfig, InfuseConfig
    from ..data.probes import load_probes
    from ..pipeline import InfuseResult, evaluate_and_report, writable_dir
    from .ask import load

    for path in [*args.probes, *args.retention]:  # every file checked before a model loads
        load_probes(path)
    if args.out is None and not (Path(args.source) / "run.json").is_file():
        raise KinfuseError(f"{args.source} is not a run folder: pass --out DIR for the report")
    out = writable_dir(Path(args.out) if args.out else Path(args.source) / "eval")
    run = load(args)
    recorded = run.config.get("eval") if isinstance(run.config.get("eval"), dict) else {}
    perplexity = args.perplexity if args.perplexity is not None else bool(recorded.get("perplexity", True))
    config = InfuseConfig(eval=EvalConfig(probes=list(args.probes), retention=list(args.retention),
                                          perplexity=perplexity, max_new_tokens=run.max_new_tokens,
                                          batch_size=run.batch_size))
    result = InfuseResult(out_dir=out, train=None)  # type: ignore[arg-type]  (evaluate fills the rest)
    _, _, (json_path, html_path) = evaluate_and_report(
        config, run.evaluator(), result, out, model=run.base, train=training(Path(args.source)),
        title=f"kinfuse eval: {Path(args.source).absolute().name} on {', '.join(Path(p).name for p in args.probes)}",
        echo=print)
    print(f"wrote {html_path} and {json_path.name}", file=sys.stderr)
    return 0


def training(run_dir: Path) -> dict[str, Any] | None:
    """What the run's training reported (steps, losses) and its loss history, for the report."""
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        return None
    try:
        train = dict(json.loads(metrics.read_text(encoding="utf-8")).get("train") or {})
        log = run_dir / "train_log.jsonl"
        if log.is_file():
            train["history"] = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None  # the report goes without the training section rather than fail on it
    return train
