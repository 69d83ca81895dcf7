"""Reports of one infusion: report.json, a self-contained report.html, and a terminal summary.

The HTML page has no external assets: CSS is inline and the charts are SVG written here by
hand (no JavaScript). It shows the metrics (knowledge gained against knowledge lost), a bar
chart of accuracy before and after, the training loss curve, and the base and adapted
answers side by side, as in the 2023 reference workflow.

    report = build_report(probes=comparison, retention=..., perplexity=..., kl=..., train=train_result)
    write_report(report, "out")          # out/report.json, out/report.html
    print(summary(report))
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path
from typing import Any

from .. import io
from .results import Comparison


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN and infinities become null (json.dumps would write invalid JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _history(train: Any) -> list[dict[str, Any]]:
    if train is None:
        return []
    if isinstance(train, list):
        rows = train
    elif isinstance(train, dict):
        rows = train.get("history") or []
    else:
        rows = getattr(train, "history", None) or []
    keep = ("step", "loss", "eval_loss", "lr", "tokens", "seconds")
    return [{k: r[k] for k in keep if k in r} for r in rows if "step" in r and "loss" in r]


def build_report(
    *,
    probes: Comparison | None = None,
    retention: Comparison | None = None,
    perplexity: dict[str, float] | None = None,
    kl: dict[str, float] | None = None,
    train: Any = None,
    model: str | None = None,
    lm_eval: dict[str, Any] | None = None,
    title: str = "kinfuse report",
) -> dict[str, Any]:
    """Gather one run's results into the report dict (what report.json holds).

    `train` is a TrainResult, its to_dict(), or its history (rows with step and loss).
    """
    metrics: dict[str, Any] = {}
    if probes is not None and probes.results:
        s = probes.summary()
        metrics["probes"] = {
            "n": s["n"],
            "base_accuracy": s["base_accuracy"],
            "adapted_accuracy": s["adapted_accuracy"],
            "by_kind": {k: v for k, v in s.items() if isinstance(v, dict) and k != "loglik"},
        }
        if "loglik" in s:
            metrics["loglik"] = s["loglik"]
    if retention is not None and retention.results:
        metrics["retention"] = {
            "n": len(retention.results),
            "base_accuracy": retention.base_accuracy,
            "adapted_accuracy": retention.adapted_accuracy,
            "base_correct": sum(r.base_correct for r in retention.results),
            "retention": retention.retention(),
        }
    if perplexity:
        metrics["perplexity"] = dict(perplexity)
    if kl:
        metrics["kl"] = dict(kl)
    chat = Comparison([r for c in (probes, retention) if c is not None for r in c.results])
    if any(r.kind == "chat" for r in chat.results):
        metrics["chat"] = chat.chat_behaviour()
        # Knowledge answers are short; general ones can run past the token limit, base included.
        metrics["chat"]["by_set"] = {
            name: {k: b[k] for k in ("n", "base_ended_rate", "adapted_ended_rate", "end_kept")}
            for name, c in (("probes", probes), ("retention", retention))
            if c is not None and (b := c.chat_behaviour())["n"]}
    if lm_eval:
        metrics["lm_eval"] = lm_eval
    answers = []
    for name, comp in (("probes", probes), ("retention", retention)):
        for r in comp.results if comp is not None else []:
            row = {"set": name, "kind": r.kind, "prompt": r.prompt, "answers": r.answers,
                   "base_answer": r.base_answer, "adapted_answer": r.adapted_answer,
                   "base_correct": r.base_correct, "adapted_correct": r.adapted_correct,
                   "base_ended": r.base_ended, "adapted_ended": r.adapted_ended}
            if r.base_loglik_correct is not None:
                row.update(base_loglik_correct=r.base_loglik_correct, adapted_loglik_correct=r.adapted_loglik_correct)
            if r.source:
                row["source"] = r.source
            answers.append(row)
    history = _history(train)
    train_info: dict[str, Any] = {"history": history}
    if train is not None and not isinstance(train, list):
        d = train if isinstance(train, dict) else train.to_dict() if hasattr(train, "to_dict") else {}
        train_info.update({k: d[k] for k in ("steps", "first_loss", "final_loss", "tokens", "seconds",
                                              "tokens_per_second", "device") if k in d})
    return _clean({
        "title": title,
        "model": model,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "metrics": metrics,
        "train": train_info,
        "answers": answers,
    })


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write out_dir/report.json and out_dir/report.html; returns both paths."""
    out = Path(out_dir)
    json_path, html_path = out / "report.json", out / "report.html"
    io.write_text(json_path, json.dumps(_clean(report), indent=2, allow_nan=False, default=str))
    io.write_text(html_path, render_html(report))
    return json_path, html_path


# -- formatting ----------------------------------------------------------------------------


def _pct(x: Any) -> str:
    x = _finite(x)
    return "n/a" if x is None else f"{x:.0%}"


def _num(x: Any, fmt: str = ".3f") -> str:
    x = _finite(x)
    return "n/a" if x is None else format(x, fmt)


def _arrow(before: Any, after: Any, f: Any = _pct) -> str:
    return f"{f(before)} -> {f(after)}"


def metric_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(group, metric, base, adapted-or-value) rows, shared by the HTML and the terminal summary."""
    m = report.get("metrics", {})
    rows: list[tuple[str, str, str, str]] = []
    if "probes" in m:
        p = m["probes"]
        rows.append(("gained", f"probe accuracy (n={p['n']})", _pct(p["base_accuracy"]), _pct(p["adapted_accuracy"])))
        for kind, k in sorted(p.get("by_kind", {}).items()):
            rows.append(("gained", f"  {kind} probes (n={k['n']})", _pct(k["base_accuracy"]), _pct(k["adapted_accuracy"])))
    if "loglik" in m:
        ll = m["loglik"]
        rows.append(("gained", f"log-likelihood accuracy (n={ll['n']})", _pct(ll["base_accuracy"]),
                     _pct(ll["adapted_accuracy"])))
        rows.append(("gained", "  mean margin, nats/token", _num(ll["base_mean_margin"]), _num(ll["adapted_mean_margin"])))
    if "retention" in m:
        r = m["retention"]
        rows.append(("lost", f"general questions (n={r['n']})", _pct(r["base_accuracy"]), _pct(r["adapted_accuracy"])))
        rows.append(("lost", f"retention of the {r['base_correct']} the base got right", "", _pct(r["retention"])))
    if "perplexity" in m:
        pp = m["perplexity"]
        change = _finite(pp.get("change"))
        rows.append(("lost", "general-text perplexity", _num(pp.get("base"), ".2f"),
                     _num(pp.get("adapted"), ".2f") + ("" if change is None else f" ({change:+.1%})")))
    if "kl" in m:
        for name, value in m["kl"].items():
            rows.append(("lost", f"KL(base || adapted), {name}, nats/token", "", _num(value, ".4f")))
    if "chat" in m:
        c = m["chat"]
        rows.append(("lost", f"chat answers ending their turn (n={c['n']})", _pct(c["base_ended_rate"]),
                     _pct(c["adapted_ended_rate"])))
        if "end_kept" in c:
            rows.append(("lost", "of those the base ended, still ending", "100%", _pct(c["end_kept"])))
        rows.append(("lost", "chat answers in chat format", _pct(c["base_format_rate"]), _pct(c["adapted_format_rate"])))
        rows.append(("lost", "chat answers ending their turn in chat format", _pct(c["base_ok_rate"]),
                     _pct(c["adapted_ok_rate"])))
    if "lm_eval" in m:
        le = m["lm_eval"]
        if "skipped" in le:
            rows.append(("lost", "lm-evaluation-harness", "", "skipped: " + str(le["skipped"])))
        else:
            for task, metrics in (le.get("adapted") or {}).items():
                for key, value in metrics.items():
                    if "stderr" not in key:
                        base = (le.get("base") or {}).get(task, {}).get(key)
                        rows.append(("lost", f"{task} {key}", _num(base), _num(value)))
    return rows


def summary(report: dict[str, Any]) -> str:
    """A few lines for the terminal: knowledge gained, knowledge lost, chat behaviour."""
    m = report.get("metrics", {})
    gained, lost = [], []
    if "probes" in m:
        p = m["probes"]
        kinds = ", ".join(f"{k} {_arrow(v['base_accuracy'], v['adapted_accuracy'])}" for k, v in sorted(p["by_kind"].items()))
        gained.append(f"probe accuracy {_arrow(p['base_accuracy'], p['adapted_accuracy'])} ({kinds}; n={p['n']})")
    if "loglik" in m:
        ll = m["loglik"]
        gained.append(f"log-likelihood accuracy {_arrow(ll['base_accuracy'], ll['adapted_accuracy'])} (n={ll['n']})")
    if "retention" in m:
        r = m["retention"]
        lost.append(f"keeps {_pct(r['retention'])} of the {r['base_correct']}/{r['n']} general answers the base got right")
    if "perplexity" in m:
        pp = m["perplexity"]
        change = _finite(pp.get("change"))
        lost.append(f"perplexity {_num(pp.get('base'), '.2f')} -> {_num(pp.get('adapted'), '.2f')}"
                    + ("" if change is None else f" ({change:+.1%})"))
    if "kl" in m:
        lost.append("KL(base||adapted) " + ", ".join(f"{k} {_num(v, '.4f')}" for k, v in m["kl"].items()) + " nats/token")
    lines = []
    if gained:
        lines.append("knowledge gained: " + "; ".join(gained))
    if lost:
        lines.append("knowledge lost:   " + "; ".join(lost))
    if "chat" in m:
        c = m["chat"]
        lines.append(f"chat behaviour:   adapted ends {_pct(c['adapted_ended_rate'])} of turns "
                     f"(base {_pct(c['base_ended_rate'])}; {_pct(c.get('end_kept'))} of those the base ended), "
                     f"in chat format {_pct(c['adapted_format_rate'])} "
                     f"(base {_pct(c['base_format_rate'])}), both {_pct(c['adapted_ok_rate'])} "
                     f"(base {_pct(c['base_ok_rate'])}; n={c['n']})")
        for name, b in c.get("by_set", {}).items():
            lines.append(f"  {name + ':':<16}adapted ends {_pct(b['adapted_ended_rate'])} of {b['n']} "
                         f"(base {_pct(b['base_ended_rate'])}; {_pct(b['end_kept'])} of those the base ended)")
    if "lm_eval" in m and "skipped" in m["lm_eval"]:
        lines.append(f"lm-eval:          skipped ({m['lm_eval']['skipped']})")
    t = report.get("train") or {}
    if t.get("steps") is not None:
        lines.append(f"training:         {t['steps']} steps, loss {_num(t.get('first_loss'))} -> {_num(t.get('final_loss'))}")
    return "\n".join(lines) if lines else "nothing was evaluated"


# -- SVG charts ----------------------------------------------------------------------------


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _tick_label(x: float) -> str:
    return f"{x:g}" if abs(x) >= 0.01 or x == 0 else f"{x:.1e}"


def loss_chart_svg(history: list[dict[str, Any]], *, width: int = 640, height: int = 300) -> str:
    """The training loss (and eval loss when measured) against the optimizer step, as inline SVG."""
    pts = [(float(r["step"]), float(r["loss"])) for r in history if _finite(r.get("loss")) is not None]
    evals = [(float(r["step"]), float(r["eval_loss"])) for r in history if _finite(r.get("eval_loss")) is not None]
    if not pts:
        return '<p class="empty">No training history.</p>'
    if len(pts) > 1000:  # a path of at most ~1000 points: every k-th, and always the last
        k = math.ceil(len(pts) / 1000)
        pts = pts[::k] + ([pts[-1]] if (len(pts) - 1) % k else [])
    left, right, top, bottom = 56, 16, 16, 40
    xs = [p[0] for p in pts + evals]
    ys = [p[1] for p in pts + evals]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pad = (y1 - y0) * 0.05 or max(abs(y1) * 0.05, 0.05)
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    parts = [f'<svg id="loss-chart" class="chart" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="training loss by step">']
    for y in _ticks(y0, y1):
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}"/>'
                     f'<text class="tick" x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{_tick_label(y)}</text>')
    for x in _ticks(x0, x1, 6):
        parts.append(f'<text class="tick" x="{sx(x):.1f}" y="{height - bottom + 16}" text-anchor="middle">'
                     f'{_tick_label(x)}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{height - bottom}"/>'
                 f'<line class="axis" x1="{left}" x2="{width - right}" y1="{height - bottom}" y2="{height - bottom}"/>')
    d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(pts))
    parts.append(f'<path class="loss-line" d="{d}"/>')
    if len(pts) == 1:
        parts.append(f'<circle class="loss-point" cx="{sx(pts[0][0]):.1f}" cy="{sy(pts[0][1]):.1f}" r="3"/>')
    if evals:
        d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(evals))
        parts.append(f'<path class="eval-line" d="{d}"/>')
        parts += [f'<circle class="eval-point" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3"/>' for x, y in evals]
    parts.append(f'<text class="label" x="{left + pw / 2:.1f}" y="{height - 6}" text-anchor="middle">optimizer step</text>')
    parts.append(f'<text class="label" x="14" y="{top + ph / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + ph / 2:.1f})">loss per target token</text>')
    legend = '<rect class="legend-train" x="{x}" y="{y}" width="12" height="3"/><text class="tick" x="{tx}" y="{ty}">train loss</text>'
    parts.append(legend.format(x=width - right - 150, y=top + 4, tx=width - right - 134, ty=top + 9))
    if evals:
        parts.append(f'<rect class="legend-eval" x="{width - right - 150}" y="{top + 20}" width="12" height="3"/>'
                     f'<text class="tick" x="{width - right - 134}" y="{top + 25}">eval loss</text>')
    parts.append("</svg>")
    return "".join(parts)


def accuracy_groups(report: dict[str, Any]) -> list[tuple[str, float | None, float | None]]:
    """(label, base, adapted) accuracies for the bar chart."""
    m = report.get("metrics", {})
    groups: list[tuple[str, float | None, float | None]] = []
    if "probes" in m:
        p = m["probes"]
        groups.append(("probes", _finite(p["base_accuracy"]), _finite(p["adapted_accuracy"])))
        if len(p.get("by_kind", {})) > 1:
            for kind, k in sorted(p["by_kind"].items()):
                groups.append((f"{kind} probes", _finite(k["base_accuracy"]), _finite(k["adapted_accuracy"])))
    if "loglik" in m:
        groups.append(("log-likelihood", _finite(m["loglik"]["base_accuracy"]), _finite(m["loglik"]["adapted_accuracy"])))
    if "retention" in m:
        r = m["retention"]
        groups.append(("general questions", _finite(r["base_accuracy"]), _finite(r["adapted_accuracy"])))
    if "chat" in m:
        groups.append(("chat turns ok", _finite(m["chat"]["base_ok_rate"]), _finite(m["chat"]["adapted_ok_rate"])))
    return groups


def accuracy_chart_svg(groups: list[tuple[str, float | None, float | None]], *, width: int = 640,
                       height: int = 280) -> str:
    """Grouped bars, base vs adapted, on a 0-100% scale, as inline SVG."""
    if not groups:
        return '<p class="empty">No accuracy measured.</p>'
    left, right, top, bottom = 48, 16, 28, 48
    pw, ph = width - left - right, height - top - bottom
    slot = pw / len(groups)
    bar = min(48.0, slot * 0.35)
    parts = [f'<svg id="accuracy-chart" class="chart" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="accuracy before and after">']
    for v in (0, 0.25, 0.5, 0.75, 1.0):
        y = top + (1 - v) * ph
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.0%}</text>')
    for i, (label, base, adapted) in enumerate(groups):
        cx = left + slot * (i + 0.5)
        for which, value, x in (("base", base, cx - bar - 2), ("adapted", adapted, cx + 2)):
            v = 0.0 if value is None else max(0.0, min(1.0, value))
            h = v * ph
            title = f"{label}, {which}: {_pct(value)}"
            parts.append(f'<rect class="bar {which}" x="{x:.1f}" y="{top + ph - h:.1f}" width="{bar:.1f}" '
                         f'height="{max(h, 0.0):.1f}"><title>{html.escape(title)}</title></rect>')
            parts.append(f'<text class="value" x="{x + bar / 2:.1f}" y="{top + ph - h - 4:.1f}" '
                         f'text-anchor="middle">{_pct(value)}</text>')
        parts.append(f'<text class="tick" x="{cx:.1f}" y="{height - bottom + 16}" text-anchor="middle">'
                     f'{html.escape(label)}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + ph}" y2="{top + ph}"/>')
    parts.append(f'<rect class="bar base" x="{left}" y="6" width="12" height="10"/>'
                 f'<text class="tick" x="{left + 16}" y="15">base</text>'
                 f'<rect class="bar adapted" x="{left + 64}" y="6" width="12" height="10"/>'
                 f'<text class="tick" x="{left + 80}" y="15">adapted</text>')
    parts.append("</svg>")
    return "".join(parts)


# -- HTML ----------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d232a;margin:24px auto;max-width:1100px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2e7;padding-bottom:4px}
.meta{color:#5b6670;margin:0 0 12px}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #dde2e7;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
#metrics{width:auto;min-width:60%}tr.group-gained td:first-child{border-left:4px solid #2e7d32}
tr.group-lost td:first-child{border-left:4px solid #c62828}
#answers td{max-width:340px;word-wrap:break-word;white-space:pre-wrap}
.mark{font-weight:bold;margin-right:4px}.ok{color:#2e7d32}.bad{color:#c62828}.cut{color:#8a6d00;font-size:12px}
.accepted{color:#5b6670;font-size:12px}
.chart{display:block;margin:8px 0;background:#fff}.chart .grid{stroke:#e6e9ec;stroke-width:1}
.chart .axis{stroke:#5b6670;stroke-width:1}.chart .tick,.chart .label,.chart .value{font-size:11px;fill:#3b444c}
.chart .loss-line{fill:none;stroke:#1565c0;stroke-width:2}.chart .eval-line{fill:none;stroke:#ef6c00;stroke-width:2}
.chart .loss-point{fill:#1565c0}.chart .eval-point{fill:#ef6c00}.chart .legend-train{fill:#1565c0}.chart .legend-eval{fill:#ef6c00}
.chart .bar.base{fill:#90a4ae}.chart .bar.adapted{fill:#1565c0}
.empty{color:#5b6670;font-style:italic}
"""


def _mark(ok: bool) -> str:
    return '<span class="mark ok">✓</span>' if ok else '<span class="mark bad">✗</span>'


def _answers_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="empty">No probes were asked.</p>'
    e = html.escape
    out = ['<table id="answers"><thead><tr><th>set</th><th>question</th><th>base answer</th>'
           '<th>adapted answer</th></tr></thead><tbody>']
    for r in rows:
        cells = []
        for which in ("base", "adapted"):
            cut = "" if r.get(f"{which}_ended", True) else ' <span class="cut">(cut at the token limit)</span>'
            ll = r.get(f"{which}_loglik_correct")
            ll = "" if ll is None else f' <span class="accepted">log-likelihood: {"✓" if ll else "✗"}</span>'
            cells.append(f'<td class="{which}">{_mark(r[f"{which}_correct"])}{e(r[f"{which}_answer"])}{cut}{ll}</td>')
        accepted = e(" | ".join(r.get("answers", [])))
        out.append(f'<tr class="{e(r["set"])}"><td>{e(r["set"])} ({e(r["kind"])})</td><td>{e(r["prompt"])}'
                   f'<div class="accepted">accepted: {accepted}</div></td>{"".join(cells)}</tr>')
    out.append("</tbody></table>")
    return "".join(out)


def render_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no scripts, no links)."""
    e = html.escape
    report = _clean(report)
    rows = metric_rows(report)
    metrics = ['<table id="metrics"><thead><tr><th>metric</th><th>base</th><th>adapted</th></tr></thead><tbody>']
    for group, name, base, adapted in rows:
        metrics.append(f'<tr class="group-{group}"><td>{e(name)}</td><td class="num">{e(base)}</td>'
                       f'<td class="num">{e(adapted)}</td></tr>')
    metrics.append("</tbody></table>")
    metrics_html = "".join(metrics) if rows else '<p class="empty">Nothing was evaluated.</p>'
    t = report.get("train") or {}
    train_line = ""
    if t.get("steps") is not None:
        train_line = (f'<p class="meta">{e(str(t["steps"]))} optimizer steps, loss {_num(t.get("first_loss"))} '
                      f'&rarr; {_num(t.get("final_loss"))}</p>')
    meta = " · ".join(e(str(x)) for x in (report.get("model"), report.get("created")) if x)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(report.get("title") or "kinfuse report")}</title><style>{_CSS}</style></head>
<body>
<h1>{e(report.get("title") or "kinfuse report")}</h1>
<p class="meta">{meta}</p>
<h2>Knowledge gained and lost</h2>
<p class="meta">Green rows: knowledge gained (probes about the corpus). Red rows: knowledge lost
(general questions, perplexity and KL divergence on general text, chat behaviour).</p>
{metrics_html}
<h2>Accuracy before and after</h2>
{accuracy_chart_svg(accuracy_groups(report))}
<h2>Training loss</h2>
{train_line}
{loss_chart_svg((report.get("train") or {}).get("history") or [])}
<h2>Answers, base and adapted</h2>
{_answers_table(report.get("answers") or [])}
</body></html>
"""
