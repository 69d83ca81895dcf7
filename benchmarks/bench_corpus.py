#!/usr/bin/env python
"""Main-text extraction: kinfuse.corpus.extract_text against trafilatura, quality and speed.

One run, one process pinned to one CPU core (so pages/s is single-core throughput, not
parallelism):

  1. loads every page of the extraction dev set (``<repo>/../shared/extraction`` by default,
     ``--dev`` to point elsewhere) into memory, decoded once, the same string for both tools;
  2. extracts every page with each tool once (warm-up; these outputs are scored with the dev
     set's own ``score.py``, imported with importlib, so F1 is the benchmark's metric exactly);
  3. times ``--repeats`` full passes of each tool, alternating which goes first, and reports
     pages/s from the median pass (background load on a shared machine hits both alike);
  4. with ``--wcxb DIR`` (a WCXB split: ``ground-truth/<id>.json`` and ``html/<id>.html.gz``),
     does 2. and 3. again on those pages: word F1 overall and per page type with WCXB's own
     metric (``wcxb_score.py``'s ``word_f1`` and ``page_type``, imported, not copied), and
     pages/s of each tool on them;
  5. writes ``benchmarks/results/corpus-<timestamp>.json``.

    python benchmarks/bench_corpus.py                     # dev set beside the repo
    python benchmarks/bench_corpus.py --dev /data/extraction --repeats 7
    python benchmarks/bench_corpus.py --wcxb /data/wcxb/dev --repeats 3

Only WCXB's ``dev/`` split is for development: its ``test/`` split is the held-out measure, and
``--wcxb`` refuses a folder named ``test``.

trafilatura is a benchmark-only dependency, not a kinfuse one: ``pip install trafilatura
lxml_html_clean`` (with lxml >= 5.2, trafilatura's justext import needs lxml_html_clean).
It is called as ``trafilatura.extract(html, url=..., include_comments=False)``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
# shared/ lies beside the main clone; worktrees sit one level deeper (<root>/wt/<name>).
DEFAULT_DEV = next(
    (p / "shared" / "extraction" for p in (REPO.parent, REPO.parent.parent) if (p / "shared" / "extraction").is_dir()),
    REPO.parent / "shared" / "extraction",
)

Extractor = Callable[[str, str], str]


def pin_to_one_core() -> int:
    """Run on the first allowed core only: pages/s then means one core's throughput."""
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def resolve_dev(path: Path) -> tuple[Path, Path]:
    """(folder with score.py, folder with ground-truth.json and html/) from --dev.

    --dev may name the extraction folder (holding score.py and dev/) or dev/ itself.
    """
    path = path.resolve()
    if (path / "score.py").exists() and (path / "dev" / "ground-truth.json").exists():
        return path, path / "dev"
    if (path / "ground-truth.json").exists() and (path.parent / "score.py").exists():
        return path.parent, path
    raise SystemExit(f"no extraction dev set at {path} (want score.py and dev/ground-truth.json)")


def load_pages(dev: Path) -> tuple[dict, list[tuple[str, str, str]]]:
    """The ground truth and (page id, url, html) for every page, decoded once up front."""
    truth = json.loads((dev / "ground-truth.json").read_text(encoding="utf-8"))
    pages = []
    for page_id, item in truth.items():
        raw = gzip.decompress((dev / "html" / f"{page_id}.html.gz").read_bytes())
        pages.append((page_id, item.get("url") or "", raw.decode("utf-8", "replace")))
    return truth, pages


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.exists():
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_wcxb(split: Path, wcxb_score: ModuleType) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str, str]]]:
    """({page id: (page type, main_content)}, [(page id, url, html)]) of one WCXB split."""
    split = split.resolve()
    if split.name == "test":
        raise SystemExit(f"{split} is WCXB's held-out test split: develop and benchmark on dev/ only")
    files = sorted((split / "ground-truth").glob("*.json"))
    if not files:
        raise SystemExit(f"no WCXB ground truth at {split / 'ground-truth'} (want <id>.json files and html/<id>.html.gz)")
    truth, pages = {}, []
    for gt_file in files:
        gt = json.loads(gt_file.read_text(encoding="utf-8"))
        page_id = gt_file.stem
        html_file = split / "html" / f"{page_id}.html.gz"
        if not html_file.exists():
            raise SystemExit(f"{gt_file} has no page {html_file}")
        truth[page_id] = (wcxb_score.page_type(gt), gt["ground_truth"].get("main_content") or "")
        html = gzip.decompress(html_file.read_bytes()).decode("utf-8", "replace")
        pages.append((page_id, gt.get("url") or "", html))
    return truth, pages


def score_wcxb(truth: dict[str, tuple[str, str]], out: dict[str, str], wcxb_score: ModuleType) -> dict:
    """Mean word F1 over pages, overall and per page type (WCXB's evaluate.py definition)."""
    per_page = {page_id: wcxb_score.word_f1(out.get(page_id, ""), ref) for page_id, (_, ref) in truth.items()}
    by_type: dict[str, list[float]] = {}
    for page_id, (ptype, _) in truth.items():
        by_type.setdefault(ptype, []).append(per_page[page_id])
    return {
        "f1": statistics.fmean(per_page.values()),
        "f1_by_type": {t: statistics.fmean(v) for t, v in sorted(by_type.items())},
        "pages_by_type": {t: len(v) for t, v in sorted(by_type.items())},
        "f1_per_page": {page_id: round(f, 4) for page_id, f in per_page.items()},
    }


def time_tools(tools: dict[str, Extractor], pages: list[tuple[str, str, str]], repeats: int, label: str) -> dict:
    """Seconds per full pass of each tool (alternating who goes first) and pages/s of the median pass."""
    times: dict[str, list[float]] = {name: [] for name in tools}
    order = list(tools)
    for rep in range(repeats):
        for name in order if rep % 2 == 0 else order[::-1]:  # alternate who goes first
            seconds, _ = run_pass(tools[name], pages)
            times[name].append(seconds)
        print(f"{label} repeat {rep + 1}/{repeats}: " + "  ".join(f"{n} {times[n][-1]:.3f}s" for n in order))
    pps = {name: len(pages) / statistics.median(t) for name, t in times.items()}
    for name in order:
        print(f"{label} {name:12s} {pps[name]:8.1f} pages/s (median of {repeats} passes over {len(pages)} pages)")
    ratio = pps["kinfuse"] / pps["trafilatura"]
    print(f"{label} speed ratio kinfuse/trafilatura: {ratio:.2f}x")
    return {"seconds_per_pass": times, "pages_per_s": pps, "speed_ratio_kinfuse_over_trafilatura": ratio}


def kinfuse_extractor() -> Extractor:
    from kinfuse.corpus import extract_text

    return lambda html, url: extract_text(html, url)


def trafilatura_extractor() -> Extractor:
    import trafilatura

    return lambda html, url: trafilatura.extract(html, url=url or None, include_comments=False) or ""


def run_pass(extract: Extractor, pages: list[tuple[str, str, str]]) -> tuple[float, dict[str, str]]:
    out: dict[str, str] = {}
    start = time.perf_counter()
    for page_id, url, html in pages:
        out[page_id] = extract(html, url)
    return time.perf_counter() - start, out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "kinfuse/corpus"],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    # The extractor under test is kinfuse/corpus/: say when it differs from the commit.
    return sha + ("+dirty(kinfuse/corpus)" if dirty else "")


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


TARGETS = {"wcxb_f1": 0.88, "wcxb_min_type_f1": 0.70, "article_dev_f1": 0.97, "speed_ratio": 5.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev", type=Path, default=DEFAULT_DEV, help=f"extraction dev set (default {DEFAULT_DEV})")
    ap.add_argument("--wcxb", type=Path, default=None, help="a WCXB split (dev/) to score and time as well")
    ap.add_argument(
        "--wcxb-score", type=Path, default=None,
        help="WCXB's metric, wcxb_score.py (default: beside the --dev set's score.py)",
    )
    ap.add_argument("--repeats", type=int, default=5, help="timed passes per tool (default 5)")
    ap.add_argument("--out", type=Path, default=None, help="result file (default benchmarks/results/corpus-<ts>.json)")
    args = ap.parse_args()
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")

    commit = git_commit()  # now: the code this process imports, whatever is committed while it runs
    core = pin_to_one_core()
    root, dev = resolve_dev(args.dev)
    scorer = load_module(root / "score.py", "extraction_score")
    truth, pages = load_pages(dev)
    wcxb_score = wcxb_truth = wcxb_pages = None
    if args.wcxb is not None:
        wcxb_score = load_module(args.wcxb_score or root / "wcxb_score.py", "wcxb_score")
        wcxb_truth, wcxb_pages = load_wcxb(args.wcxb, wcxb_score)
    tools: dict[str, Extractor] = {"kinfuse": kinfuse_extractor(), "trafilatura": trafilatura_extractor()}
    # kinfuse.corpus must not drag torch in: it would cost memory and import time, not
    # extraction time, but the claim is "extraction alone on one core".
    assert "torch" not in sys.modules, "torch got imported; the benchmark measures extraction only"

    f1: dict[str, dict] = {}
    for name, extract in tools.items():  # warm-up pass, scored
        _, out = run_pass(extract, pages)
        f1[name] = scorer.score(truth, {k: {"articleBody": v} for k, v in out.items()})
        print(f"{name:12s} F1 {f1[name]['f1']:.4f}  P {f1[name]['precision']:.4f}  R {f1[name]['recall']:.4f}")
    timing = time_tools(tools, pages, args.repeats, "articles")

    wcxb: dict | None = None
    if wcxb_pages is not None:
        wf1 = {}
        for name, extract in tools.items():  # warm-up pass, scored
            _, out = run_pass(extract, wcxb_pages)
            wf1[name] = score_wcxb(wcxb_truth, out, wcxb_score)
            types = "  ".join(f"{t} {v:.3f}" for t, v in wf1[name]["f1_by_type"].items())
            print(f"wcxb {name:12s} F1 {wf1[name]['f1']:.4f}  {types}")
        wtiming = time_tools(tools, wcxb_pages, args.repeats, "wcxb")
        first = next(iter(wf1.values()))
        wcxb = {
            "path": str(args.wcxb.resolve()),
            "pages": len(wcxb_pages),
            "pages_by_type": first["pages_by_type"],
            "metric": "word F1 (wcxb_score.word_f1), mean over pages",
            "f1": {name: m["f1"] for name, m in wf1.items()},
            "f1_by_type": {name: m["f1_by_type"] for name, m in wf1.items()},
            **wtiming,
            "f1_per_page": {name: m["f1_per_page"] for name, m in wf1.items()},
        }

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    result = {
        "benchmark": "corpus extraction (extract_text vs trafilatura)",
        "timestamp": stamp,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "pinned_core": core,
            "load_avg_at_end": os.getloadavg(),
        },
        "versions": {
            "python": platform.python_version(),
            "selectolax": version("selectolax"),
            "trafilatura": version("trafilatura"),
            "lxml": version("lxml"),
        },
        "git_commit": commit,
        "dev_set": {"path": str(dev), "pages": len(pages), "metric": "shingle F1 (score.py)"},
        "repeats": args.repeats,
        "f1": {name: m["f1"] for name, m in f1.items()},
        "precision": {name: m["precision"] for name, m in f1.items()},
        "recall": {name: m["recall"] for name, m in f1.items()},
        **timing,
    }
    met = {
        "article_dev_f1": f1["kinfuse"]["f1"] >= TARGETS["article_dev_f1"],
        "article_dev_speed_ratio": timing["speed_ratio_kinfuse_over_trafilatura"] >= TARGETS["speed_ratio"],
    }
    if wcxb is not None:
        result["wcxb"] = wcxb
        met["wcxb_f1"] = wcxb["f1"]["kinfuse"] >= TARGETS["wcxb_f1"]
        met["wcxb_min_type_f1"] = min(wcxb["f1_by_type"]["kinfuse"].values()) >= TARGETS["wcxb_min_type_f1"]
        met["wcxb_speed_ratio"] = wcxb["speed_ratio_kinfuse_over_trafilatura"] >= TARGETS["speed_ratio"]
    result["targets"] = TARGETS
    result["targets_met"] = met
    print("targets met: " + "  ".join(f"{k} {'yes' if v else 'NO'}" for k, v in met.items()))
    out = args.out or RESULTS / f"corpus-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
