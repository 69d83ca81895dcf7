#!/usr/bin/env python
"""Main-text extraction time against page size: is it linear?

A hostile or merely huge page must not stall a run, so extraction must cost
about the same per megabyte whatever the page's size and shape. Three shapes,
each at several sizes (``--sizes``, in MB):

  deep   one paragraph inside N nested ``<div class="share">`` (chrome classes,
         so every level is checked), the shape that once took minutes;
  wide   N sibling ``<div>`` blocks of a paragraph each (a long flat page);
  real   the body of a real page of the extraction dev set, repeated N times.

Each (shape, size) is extracted ``--repeats`` times in this one process; the
fastest run gives seconds per MB (other load on a shared machine only adds time). The verdict fits log(time) against log(size)
per shape: a slope near 1 is linear, 2 quadratic; the shape passes when the
slope is at most ``--max-slope`` (n log n over this range stays well below
1.2). Writes ``benchmarks/results/extract-scaling-<timestamp>.json`` with the
machine, versions and commit.

    python benchmarks/bench_extract_scaling.py
    python benchmarks/bench_extract_scaling.py --sizes 0.1 0.2 0.4 --kinfuse /path/to/old/checkout
"""

from __future__ import annotations

import argparse
import gzip
import math
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from provenance import cpu_name, git_commit, version, write_result  # noqa: E402

_PARA = "<p>Extraction must stay linear in the size of the page, whatever its shape, so that one page cannot stall a run.</p>"


def deep_page(mb: float) -> str:
    n = int(mb * 1e6 / len('<div class="share"></div>'))
    return "<html><body>" + '<div class="share">' * n + _PARA + "</div>" * n + "</body></html>"


def wide_page(mb: float) -> str:
    block = f'<div class="block">{_PARA}</div>'
    return "<html><body>" + block * int(mb * 1e6 / len(block)) + "</body></html>"


def real_page(mb: float, html: str) -> str:
    start = html.lower().find("<body")
    start = html.find(">", start) + 1 if start >= 0 else 0
    stop = html.lower().rfind("</body>")
    body = html[start : stop if stop > start else len(html)]
    return html[:start] + body * max(1, round(mb * 1e6 / len(body))) + "</body></html>"


def first_real_page(dev: Path) -> tuple[str, str]:
    for f in sorted((dev / "dev" / "html").glob("*.html.gz")):
        raw = gzip.decompress(f.read_bytes())
        if 30_000 < len(raw) < 300_000:
            return f.name, raw.decode("utf-8", "replace")
    raise SystemExit(f"no page of 30-300 kB under {dev}/dev/html: pass --dev pointing at the extraction set")


def slope(sizes: list[float], times: list[float]) -> float:
    xs, ys = [math.log(s) for s in sizes], [math.log(max(t, 1e-6)) for t in times]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.3], help="page sizes in MB")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-slope", type=float, default=1.2)
    ap.add_argument("--dev", type=Path, default=REPO.parent.parent / "shared" / "extraction")
    ap.add_argument("--kinfuse", type=Path, default=REPO, help="checkout whose kinfuse is measured")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    if not args.dev.is_dir():
        args.dev = Path("/work/shared/extraction")
    sys.path.insert(0, str(args.kinfuse))
    from kinfuse.corpus.extract import extract_text

    page_name, page = first_real_page(args.dev)
    shapes = {"deep": deep_page, "wide": wide_page, "real": lambda mb: real_page(mb, page)}
    rows = []
    verdict = {}
    for shape, make in shapes.items():
        sizes, times = [], []
        for mb in sorted(args.sizes):
            html = make(mb)
            size = len(html.encode("utf-8")) / 1e6
            runs = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                text = extract_text(html)
                runs.append(time.perf_counter() - t0)
            sec = min(runs)  # the least disturbed run: other load on the machine only adds time
            sizes.append(size)
            times.append(sec)
            row = {"shape": shape, "mb": round(size, 3), "seconds": round(sec, 4),
                   "seconds_per_mb": round(sec / size, 4), "chars_out": len(text)}  # fmt: skip
            rows.append(row)
            print(f"{shape:5} {size:6.2f} MB  {sec:8.3f} s  {sec / size:7.3f} s/MB  {len(text)} chars", flush=True)
        k = slope(sizes, times)
        verdict[shape] = {"slope": round(k, 3), "linear": k <= args.max_slope}
        print(f"{shape:5} slope of log(time) on log(size): {k:.2f} -> {'linear' if k <= args.max_slope else 'NOT linear'}")
    report = {
        "benchmark": "extract_scaling",
        "device": cpu_name(),
        "python": platform.python_version(),
        "versions": {"selectolax": version("selectolax")},
        "commit": git_commit() if args.kinfuse == REPO else f"kinfuse from {args.kinfuse}",
        "real_page": page_name,
        "repeats": args.repeats,
        "max_slope": args.max_slope,
        "rows": rows,
        "verdict": verdict,
        "linear": all(v["linear"] for v in verdict.values()),
    }
    path = write_result(report, args.out, "extract-scaling")
    print(f"{'linear' if report['linear'] else 'NOT linear'}; wrote {path}")


if __name__ == "__main__":
    main()
