#!/usr/bin/env python
"""Rule-based question generation (kinfuse.data.synth): coverage, robustness and speed, and the
leakage check of a finished run.

    python benchmarks/bench_synth.py                 # examples + shared extraction pages
    python benchmarks/bench_synth.py --run out       # + accuracy by probe/training overlap

1. Coverage, per example corpus (examples/*/pages with probes): the share of probes whose
   accepted answer (any alias, after normalisation) occurs in some generated answer. A probe
   whose answer no generated answer holds can only be learned from the documents.
2. Robustness and speed: every page of the shared extraction sets (``../shared/extraction``:
   61 article pages and the 210-page WCXB dev sample, seven page types) is extracted and
   synthesised; an exception is recorded as a failure with its page, never skipped.
3. With ``--run DIR`` (a finished `kinfuse infuse` output): for each probe, the largest
   word-set Jaccard overlap between it and any generated question (the ProbeGuard measure:
   0.6 and above is dropped), and the adapted accuracy per overlap band. Accuracy that
   rises with overlap would mean the probes are answered because training nearly asked them.

Writes benchmarks/results/synth-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import random
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SHARED = REPO.parent / "shared" / "extraction"
EXAMPLES = ["aws-summit-2023", "product-docs"]
BANDS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6)


def words(text: str) -> set[str]:
    from kinfuse.data.answers import normalize

    return set(normalize(text).split())


def coverage(name: str) -> dict:
    from kinfuse import Corpus
    from kinfuse.data.answers import answer_matches
    from kinfuse.data.probes import load_probes
    from kinfuse.data.synth import synthesize

    folder = REPO / "examples" / name
    corpus = Corpus.from_paths([folder / "pages"])
    files = sorted(folder.glob("probes*.jsonl"))
    start = time.perf_counter()
    synth = synthesize(corpus, probes=[str(f) for f in files])
    seconds = time.perf_counter() - start
    answers = [g.answer for g in synth.groups]
    out = {"documents": len(corpus), "seconds": seconds, **synth.to_dict(), "coverage": {}}
    for f in files:
        probes = load_probes(f)
        covered = [p for p in probes if any(answer_matches(a, p["answers"]) for a in answers)]
        out["coverage"][f.name] = {"probes": len(probes), "covered": len(covered),
                                   "share": len(covered) / len(probes),
                                   "not_covered": [p.get("question") or p.get("prompt") for p in probes
                                                   if p not in covered]}
    rng = random.Random(0)
    rows = synth.all_rows()
    out["sample"] = [{"question": r["question"], "answer": r["answer"], "template": r["template"]}
                     for r in rng.sample(rows, min(12, len(rows)))]
    return out


def robustness() -> dict:
    from kinfuse.corpus import extract_text
    from kinfuse.data.synth import synthesize

    sets = {"articles": SHARED / "dev" / "html", "wcxb-dev-sample": SHARED / "wcxb-dev-sample" / "html"}
    out = {}
    for name, folder in sets.items():
        if not folder.is_dir():
            out[name] = {"skipped": f"{folder} not found"}
            continue
        pages = sorted(p for p in folder.rglob("*") if p.is_file())
        failures, n_words, facts, questions, seconds = [], 0, 0, 0, 0.0
        for page in pages:
            raw = page.read_bytes()
            if page.suffix == ".gz":
                import gzip

                raw = gzip.decompress(raw)
            text = extract_text(raw.decode("utf-8", "replace"))
            n_words += len(text.split())
            start = time.perf_counter()
            try:
                s = synthesize([{"text": text, "source": page.name}])
                for r in range(3):
                    s.texts(r)
            except Exception:  # recorded, with the page: a crash is a finding, not noise
                failures.append({"page": page.name, "error": traceback.format_exc(limit=3)})
                continue
            finally:
                seconds += time.perf_counter() - start
            facts += len(s.groups)
            questions += sum(len(g.questions) for g in s.groups)
        out[name] = {"pages": len(pages), "failures": failures, "words": n_words, "facts": facts,
                     "questions": questions, "facts_per_1000_words": 1000 * facts / max(n_words, 1),
                     "seconds": seconds, "words_per_second": n_words / max(seconds, 1e-9)}
        print(f"{name}: {len(pages)} pages, {len(failures)} failures, {facts} facts, {questions} questions, "
              f"{n_words / max(seconds, 1e-9):.0f} words/s")
    return out


def leakage(run: Path) -> dict:
    """Adapted accuracy of the run's probes by their overlap with the nearest generated question."""
    metrics = json.loads((run / "metrics.json").read_text())
    generated = [json.loads(line) for line in (run / "generated.jsonl").read_text().splitlines() if line.strip()]
    trained = [words(g["question"]) for g in generated if not g.get("dropped")]
    rows = []
    for r in metrics["probes"]["results"]:
        pw = words(r["prompt"])
        best = max((len(pw & g) / len(pw | g) for g in trained if pw | g), default=0.0)
        rows.append((best, r["kind"], r["adapted_correct"]))
    bands = []
    for lo, hi in zip(BANDS, BANDS[1:] + (1.01,)):
        inside = [x for x in rows if lo <= x[0] < hi]
        if inside:
            bands.append({"overlap": f"[{lo:.1f}, {min(hi, 1.0):.1f})", "probes": len(inside),
                          "chat": sum(k == "chat" for _, k, _ in inside),
                          "adapted_accuracy": sum(c for *_, c in inside) / len(inside)})
    for b in bands:
        print(f"overlap {b['overlap']}: {b['probes']} probes, adapted accuracy {b['adapted_accuracy']:.0%}")
    return {"run": str(run), "bands": bands}


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "kinfuse/synth"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty(kinfuse.data.synth)" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, action="append", default=[], help="a finished run folder (repeatable)")
    ap.add_argument("--no-shared", action="store_true", help="skip the shared extraction pages")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    result: dict = {"benchmark": "rule-based question generation (kinfuse.data.synth)",
                    "command": " ".join([Path(sys.executable).name, *sys.argv])}
    result["examples"] = {}
    for name in EXAMPLES:
        result["examples"][name] = c = coverage(name)
        cov = ", ".join(f"{f} {v['covered']}/{v['probes']} ({v['share']:.0%})" for f, v in c["coverage"].items())
        print(f"{name}: {c['questions']} questions about {c['facts']} facts in {c['seconds']:.1f} s; "
              f"probe answers covered: {cov}")
    if not args.no_shared:
        result["robustness"] = robustness()
    result["leakage"] = [leakage(run) for run in args.run]
    from importlib.metadata import version

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    result.update({
        "timestamp": stamp,
        "device": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "versions": {"python": platform.python_version(), "pysbd": version("pysbd"),
                     "lemminflect": version("lemminflect")},
        "git_commit": git_commit(),
    })
    out = args.out or RESULTS / f"synth-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
