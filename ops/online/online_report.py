"""Files of the online report: JSON (every number), Markdown (the verdict first), HTML
(self-contained, with inline SVG charts)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ranker.evaluate.report import CSS, finite, table, write_files
from ranker.evaluate.svg import bar_chart

METRICS = ("orders_per_request", "clicks_per_request", "ctr", "oracle_ndcg@10")


def _est(e: dict[str, Any] | None) -> str:
    if not e or e.get("value") is None or e["value"] != e["value"]:
        return "n/a"
    return f"{e['value']:.4f} [{e['ci95'][0]:.4f}, {e['ci95'][1]:.4f}]"


def _lift(lf: dict[str, Any]) -> str:
    if lf["lift"] != lf["lift"]:
        return "n/a"
    return f"{lf['lift']:+.2%} [{lf['ci95'][0]:+.2%}, {lf['ci95'][1]:+.2%}], p={lf['p_value']:.3g}, MDE ±{lf['mde']:.2%}"


def markdown(r: dict[str, Any]) -> str:
    lines = [f"# Online experiment ({r['kind']})", "", f"**Verdict:** {r['verdict']}", ""]
    if r["kind"] == "interleaving":
        p = r["preference"]
        lines += [
            f"- {r['requests']:,} requests by {r['users']:,} users; {r['a']} vs {r['b']}",
            f"- wins {r['a']}: {p['wins_a']}, wins {r['b']}: {p['wins_b']}, ties: {p['ties']}",
            f"- test: {p['test']}",
            "",
            "## Interference",
            "",
            r["interference"],
        ]
        return "\n".join(lines) + "\n"
    names = [m for m in METRICS if any(m in v for v in r["variants"].values())]
    lines += [
        "## Per variant (value [95% CI, delta method over users])",
        "",
        "| variant | users | requests | " + " | ".join(names) + " | latency p50 / p99 ms |",
        "|---" * (len(names) + 4) + "|",
    ]
    for name, v in r["variants"].items():
        lat = v["latency_ms"]
        lines.append(
            f"| {name} ({v['model']}) | {v['users']:,} | {v['requests']:,} | "
            + " | ".join(_est(v.get(m)) for m in names)
            + f" | {lat['p50']:.2f} / {lat['p99']:.2f} |"
        )
    lines += ["", f"## Lift over {r['control']} (relative, 95% CI, p-value, MDE at 80% power)", ""]
    for v, lifts in r["lifts"].items():
        for m, lf in lifts.items():
            lines.append(f"- {v}, {m}: {_lift(lf)}")
    srm = r.get("srm")
    if srm:
        lines += [
            "",
            f"## Sample ratio mismatch: {'ALARM' if srm['alarm'] else 'ok'}",
            "",
            f"users {srm['observed']} vs expected { ({k: round(x, 1) for k, x in srm['expected'].items()}) }; "
            f"chi2 {srm['chi2']:.3g}, p={srm['p_value']:.3g} (alarm below {srm['threshold']})",
        ]
    lines += [
        "",
        "## Interference",
        "",
        r["interference"],
        "",
        f"Lift test: {next(iter(next(iter(r['lifts'].values())).values()))['test']}."
        if r["lifts"]
        else "",
    ]
    return "\n".join(lines) + "\n"


def render_html(r: dict[str, Any]) -> str:
    e = html.escape
    parts = [
        f"<h1>Online experiment ({e(r['kind'])})</h1>",
        f'<p class="verdict"><b>Verdict:</b> {e(r["verdict"])}</p>',
    ]
    if r["kind"] == "interleaving":
        p = r["preference"]
        parts.append(
            table(
                ["", r["a"], r["b"], "ties"],
                [["wins", str(p["wins_a"]), str(p["wins_b"]), str(p["ties"])]],
            )
        )
        parts.append(
            bar_chart(
                [r["a"], r["b"]], [p["wins_a"], p["wins_b"]], None, "Requests won", "requests"
            )
        )
    else:
        names = [m for m in METRICS if any(m in v for v in r["variants"].values())]
        rows = [
            [
                f"{k} ({v['model']})",
                f"{v['users']:,}",
                f"{v['requests']:,}",
                *(_est(v.get(m)) for m in names),
                f"{v['latency_ms']['p50']:.2f} / {v['latency_ms']['p99']:.2f}",
            ]
            for k, v in r["variants"].items()
        ]
        parts.append(table(["variant", "users", "requests", *names, "latency p50 / p99 ms"], rows))
        for m in names:
            vs = [(k, v[m]) for k, v in r["variants"].items() if v.get(m)]
            parts.append(
                bar_chart(
                    [k for k, _ in vs],
                    [x["value"] for _, x in vs],
                    [tuple(x["ci95"]) for _, x in vs],
                    m,
                    m,
                )
            )
        lifts = [[v, m, _lift(lf)] for v, ls in r["lifts"].items() for m, lf in ls.items()]
        parts += [
            f"<h2>Lift over {e(r['control'])}</h2>",
            table(["variant", "metric", "lift [95% CI], p, MDE"], lifts),
        ]
        if r.get("srm"):
            s = r["srm"]
            parts.append(
                f"<h2>Sample ratio mismatch: {'ALARM' if s['alarm'] else 'ok'}</h2>"
                f"<p>users {e(json.dumps(s['observed']))}; chi2 {s['chi2']:.3g}, p={s['p_value']:.3g}</p>"
            )
    parts.append(f"<h2>Interference</h2><p>{e(r['interference'])}</p>")
    data = json.dumps(finite(r)).replace("</", "<\\/")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Online experiment</title>'
        f"<style>{CSS}</style></head><body>{''.join(parts)}"
        f'<script type="application/json" id="report-data">{data}</script></body></html>\n'
    )


def write_online_report(r: dict[str, Any], out: Path) -> dict[str, Path]:
    return write_files(r, out, markdown(r), render_html(r))
