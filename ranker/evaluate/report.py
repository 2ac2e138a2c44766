"""Report files: ``report.json`` (every number), ``report.md`` (a summary led by the verdict)
and ``report.html`` (self-contained: inline CSS and SVG, nothing fetched at view time)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.io import write_json_atomic, write_text_atomic

SECONDARY = ("ndcg@10", "oracle_ndcg@10", "mrr", "map", "auc", "gauc")
CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
td, th { border: 1px solid #ccc; padding: .3rem .6rem; }
th { background: #f4f4f4; text-align: left; }
.verdict { font-size: 1.15rem; padding: .8rem; background: #eef6ee; }
.note { color: #666; } svg text { font-size: 11px; }
"""
# Extra HTML sections (plots, segments) added by richer report builders: report -> fragment.
HTML_SECTIONS: list[Callable[[dict[str, Any]], str]] = []


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    write_json_atomic(finite(report), paths["json"])
    write_text_atomic(markdown(report), paths["md"])
    write_text_atomic(render_html(report), paths["html"])
    return paths


def finite(x: Any) -> Any:
    """JSON has no NaN: undefined numbers become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite(v) for v in x]
    return x


def fmt_estimate(est: dict[str, Any] | None) -> str:
    value = None if not est else est.get("value")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    lo, hi = est["ci95"]  # type: ignore[index]
    return f"{value:.4f} [{lo:.4f}, {hi:.4f}]"


def fmt_diff(c: dict[str, Any]) -> str:
    return f"{c['diff']:+.4f} [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]"


def metric_names(report: dict[str, Any]) -> list[str]:
    present = {k for m in report["metrics"].values() for k in m}
    return [m for m in SECONDARY if m in present]


def setup_lines(report: dict[str, Any]) -> list[str]:
    b = report["bootstrap"]
    users = f", {report['users']:,} users" if report.get("users") else ""
    empty = report["empty_lists_count"].get("ndcg@10", 0)
    return [
        f"{report['split']} split: {report['requests']:,} requests, "
        f"{report['candidates']:,} candidates{users}",
        f"95% percentile intervals from {b['resamples']} bootstrap resamples of {b['unit']}s "
        f"(seed {b['seed']})",
        f"lists with no positive label: {report['empty_lists']} ({empty} such lists for NDCG@10)",
        f"primary metric: {report['primary_declared']}",
    ]


def markdown(report: dict[str, Any]) -> str:
    primary = report["primary"]
    names = metric_names(report)
    lines = [
        "# Offline evaluation",
        "",
        f"**Verdict ({primary}):** {report['verdict']['text']}",
        "",
    ]
    lines += [f"- {s}" for s in setup_lines(report)]
    lines += ["", "## Metrics (value [95% CI])", "", "| model | " + " | ".join(names) + " |"]
    lines.append("|---" * (len(names) + 1) + "|")
    for model, ms in report["metrics"].items():
        lines.append(f"| {model} | " + " | ".join(fmt_estimate(ms.get(n)) for n in names) + " |")
    if report.get("gap_closed"):
        lines += ["", "## Share of the logging policy's gap to the oracle closed", ""]
        for model, g in report["gap_closed"].items():
            lo, hi = g["ci95"]
            lines.append(f"- {model}: {g['value']:.1%} (95% CI [{lo:.1%}, {hi:.1%}])")
    lines += ["", "## Paired differences (a - b)", "", "| a | b | metric | diff [95% CI] | p |"]
    lines.append("|---|---|---|---|---|")
    for c in report["comparisons"]:
        lines.append(
            f"| {c['a']} | {c['b']} | {c['metric']} | {fmt_diff(c)} | {c['p_value']:.4g} |"
        )
    if report["comparisons"]:
        lines += ["", f"Test: {report['comparisons'][0]['test']}."]
    return "\n".join(lines) + "\n"


def table(header: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: dict[str, Any]) -> str:
    e = html.escape
    names = metric_names(report)
    metrics = table(
        ["model", *names],
        [[m, *(fmt_estimate(ms.get(n)) for n in names)] for m, ms in report["metrics"].items()],
    )
    comps = table(
        ["a", "b", "metric", "diff [95% CI]", "p"],
        [
            [c["a"], c["b"], c["metric"], fmt_diff(c), f"{c['p_value']:.4g}"]
            for c in report["comparisons"]
        ],
    )
    test = e(report["comparisons"][0]["test"]) if report["comparisons"] else ""
    setup = "".join(f"<li>{e(s)}</li>" for s in setup_lines(report))
    data = json.dumps(finite(report)).replace("</", "<\\/")
    sections = "".join(section(report) for section in HTML_SECTIONS)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Offline evaluation</title><style>{CSS}</style></head><body>"
        "<h1>Offline evaluation</h1>"
        f'<p class="verdict"><b>Verdict ({e(report["primary"])}):</b> '
        f"{e(report['verdict']['text'])}</p>"
        f'<ul class="note">{setup}</ul><h2>Metrics</h2>{metrics}{sections}'
        f'<h2>Paired differences (a - b)</h2>{comps}<p class="note">{test}</p>'
        f'<script type="application/json" id="report-data">{data}</script></body></html>\n'
    )
