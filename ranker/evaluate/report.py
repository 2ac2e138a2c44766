"""Report files: ``report.json`` (every number), ``report.md`` (a summary led by the verdict)
and ``report.html`` (self-contained: inline CSS and SVG, nothing fetched at view time)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.io import write_json_atomic, write_text_atomic
from ranker.evaluate.svg import bar_chart, histogram, line_chart

SECONDARY = ("ndcg@10", "oracle_ndcg@10", "mrr", "map", "auc", "gauc")
CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
td, th { border: 1px solid #ccc; padding: .3rem .6rem; }
th { background: #f4f4f4; text-align: left; }
.verdict { font-size: 1.15rem; padding: .8rem; background: #eef6ee; }
.note { color: #666; } svg text { font-size: 11px; }
"""
# After load, count the charts that actually rendered (non-empty boxes) and say so in the page
# title and on <body>; the browser test reads it. Any script error would show in the console.
SELF_CHECK = """
<script>
window.addEventListener("load", () => {
  const svgs = Array.from(document.querySelectorAll("svg"));
  const drawn = svgs.filter((s) => { const b = s.getBBox(); return b.width > 0 && b.height > 0; });
  document.body.dataset.plots = String(svgs.length);
  document.body.dataset.plotsRendered = String(drawn.length);
  document.title += " (" + drawn.length + " plots)";
});
</script>
"""


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    return write_files(report, out, markdown(report), render_html(report))


def write_files(report: dict[str, Any], out: Path, md: str, page: str) -> dict[str, Path]:
    """report.json (every number), report.md and report.html, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    write_json_atomic(finite(report), paths["json"])
    write_text_atomic(md, paths["md"])
    write_text_atomic(page, paths["html"])
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
    if report.get("seed_spread"):
        lines += [
            "",
            f"## Training seeds ({primary})",
            "",
            f"Rule: {report['verdict']['rule']}.",
            "",
        ]
        lines += ["| model | seeds | per seed | mean | s.d. |", "|---|---|---|---|---|"]
        for row in seed_rows(report):
            lines.append("| " + " | ".join(row) + " |")
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


def seed_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per model trained under several seeds: its primary metric per seed."""
    return [
        [
            name,
            ", ".join(str(s) for s in g["seeds"]),
            ", ".join(f"{v:.4f}" for v in g["values"]),
            f"{g['mean']:.4f}",
            f"{g['sd']:.4f}",
        ]
        for name, g in report["seed_spread"].items()
    ]


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
    sections = offline_views(report)
    if report.get("seed_spread"):
        seeds = table(["model", "seeds", "per seed", "mean", "s.d."], seed_rows(report))
        rule = e(report["verdict"]["rule"])
        sections = f'<h2>Training seeds</h2><p class="note">{rule}</p>{seeds}' + sections
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Offline evaluation</title><style>{CSS}</style></head><body>"
        "<h1>Offline evaluation</h1>"
        f'<p class="verdict"><b>Verdict ({e(report["primary"])}):</b> '
        f"{e(report['verdict']['text'])}</p>"
        f'<ul class="note">{setup}</ul><h2>Metrics</h2>{metrics}{sections}'
        f'<h2>Paired differences (a - b)</h2>{comps}<p class="note">{test}</p>'
        f'<script type="application/json" id="report-data">{data}</script>{SELF_CHECK}</body></html>\n'
    )


def offline_views(report: dict[str, Any]) -> str:
    """Charts and the exploratory sections of the offline report."""
    e = html.escape
    primary = report["primary"]
    models = [m for m in report["metrics"] if m != "oracle"]
    est = [report["metrics"][m].get(primary) for m in models]
    parts = [
        bar_chart(
            models,
            [x["value"] if x else float("nan") for x in est],
            [tuple(x["ci95"]) if x else (float("nan"),) * 2 for x in est],
            f"{primary} with 95% CI",
            primary,
        )
    ]
    sweep = report.get("exploratory", {}).get("ndcg@k", {})
    if sweep:
        ks = list(range(1, 21))
        parts.append("<h2>NDCG@k, k = 1..20 (exploratory)</h2>")
        parts.append(
            line_chart(
                ks,
                {m: [v.get(str(k), v.get(k, float("nan"))) for k in ks] for m, v in sweep.items()},
                "NDCG@k on logged labels (exploratory)",
                "k",
                "NDCG@k",
            )
        )
    diffs = report.get("per_request_differences", {})
    for name, d in diffs.items():
        if not isinstance(d, dict) or "values" not in d:
            continue
        parts.append(f"<h2>Per-request differences: {e(name)} (exploratory)</h2>")
        parts.append(
            histogram(
                np.asarray(d["values"], dtype=np.float64),
                40,
                f"{name}, {diffs['metric']} per request",
                "difference",
            )
        )
        parts.append(
            f'<p class="note">better on {d["share_better"]:.1%} of requests, worse on {d["share_worse"]:.1%}</p>'
        )
    seg = report.get("segments", {})
    if seg.get("by"):
        parts.append(f"<h2>Segments (exploratory, {e(seg['metric'])})</h2>")
        for kind, rows in seg["by"].items():
            cols = [c for c in next(iter(rows.values())) if c != "requests"] if rows else []
            body = [
                [
                    value,
                    f"{r['requests']:,}",
                    *(fmt_diff(r[c]) if " - " in c else fmt_estimate(r[c]) for c in cols),
                ]
                for value, r in rows.items()
            ]
            parts.append(f"<h3>{e(kind)}</h3>" + table([kind, "requests", *cols], body))
    return "".join(parts)
