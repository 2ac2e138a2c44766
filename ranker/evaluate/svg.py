"""Small, dependency-free SVG charts for self-contained HTML reports (inline, nothing fetched)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np

W, H = 560, 300
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 30, 50
COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")


def _frame(title: str, body: str, x_label: str, y_label: str) -> str:
    e = html.escape
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        f'role="img" aria-label="{e(title)}">'
        f'<text x="{W / 2}" y="18" text-anchor="middle" font-weight="bold">{e(title)}</text>'
        f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" stroke="#333"/>'
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" stroke="#333"/>'
        f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" text-anchor="middle">{e(x_label)}</text>'
        f'<text x="14" y="{(TOP + H - BOTTOM) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(TOP + H - BOTTOM) / 2})">{e(y_label)}</text>{body}</svg>'
    )


def _scale(lo: float, hi: float) -> tuple[float, float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi - lo < 1e-12:
        return lo - 0.5, hi + 0.5
    pad = 0.08 * (hi - lo)
    return lo - pad, hi + pad


def _y_ticks(lo: float, hi: float, y: object) -> str:
    out = []
    for v in np.linspace(lo, hi, 5):
        py = y(v)  # type: ignore[operator]
        out.append(
            f'<line x1="{LEFT - 4}" y1="{py:.1f}" x2="{LEFT}" y2="{py:.1f}" stroke="#333"/>'
            f'<text x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{v:.3g}</text>'
        )
    return "".join(out)


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    ci: Sequence[tuple[float, float]] | None,
    title: str,
    y_label: str,
) -> str:
    """Bars with 95% interval whiskers."""
    vals = [v if math.isfinite(v) else 0.0 for v in values]
    cis = list(ci) if ci else [(v, v) for v in vals]
    lo, hi = _scale(min([0.0, *[c[0] for c in cis], *vals]), max([*[c[1] for c in cis], *vals]))
    y = lambda v: TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM)  # noqa: E731
    n = max(1, len(vals))
    step = (W - LEFT - RIGHT) / n
    body = [_y_ticks(lo, hi, y)]
    for i, (label, v, (c0, c1)) in enumerate(zip(labels, vals, cis, strict=True)):
        x = LEFT + i * step + step * 0.2
        w = step * 0.6
        top, base = y(max(v, 0.0)), y(min(v, 0.0))
        tip = f"<title>{html.escape(label)}: {v:.4g}</title>"
        body.append(
            f'<rect x="{x:.1f}" y="{top:.1f}" width="{w:.1f}" '
            f'height="{max(base - top, 0.5):.1f}" fill="{COLOURS[i % len(COLOURS)]}">{tip}</rect>'
        )
        cx = x + w / 2
        if math.isfinite(c0) and math.isfinite(c1):
            body.append(
                f'<line x1="{cx:.1f}" y1="{y(c0):.1f}" x2="{cx:.1f}" y2="{y(c1):.1f}" '
                'stroke="#000"/>'
            )
        body.append(
            f'<text x="{cx:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">'
            f"{html.escape(label)}</text>"
        )
    return _frame(title, "".join(body), "", y_label)


def line_chart(
    xs: Sequence[float],
    series: dict[str, Sequence[float]],
    title: str,
    x_label: str,
    y_label: str,
    y_min: float | None = None,
    legend_left: bool = False,
) -> str:
    """Lines over shared x values. ``y_min``: where the y axis starts (e.g. 0 for sizes);
    ``legend_left``: the names at the top left, for lines that rise to the right."""
    all_y = [v for s in series.values() for v in s if math.isfinite(v)]
    lo, hi = _scale(min(all_y, default=0.0), max(all_y, default=1.0))
    lo = lo if y_min is None else y_min
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    x = lambda v: LEFT + (v - x0) / max(x1 - x0, 1e-12) * (W - LEFT - RIGHT)  # noqa: E731
    y = lambda v: TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM)  # noqa: E731
    body = [_y_ticks(lo, hi, y)]
    for v in xs:
        body.append(f'<text x="{x(v):.1f}" y="{H - BOTTOM + 14}" text-anchor="middle">{v:g}</text>')
    for i, (name, ys) in enumerate(series.items()):
        pts = " ".join(
            f"{x(a):.1f},{y(b):.1f}" for a, b in zip(xs, ys, strict=True) if math.isfinite(b)
        )
        colour = COLOURS[i % len(COLOURS)]
        body.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        lx, anchor = (LEFT + 8, "start") if legend_left else (W - RIGHT - 4, "end")
        body.append(
            f'<text x="{lx}" y="{TOP + 14 * (i + 1)}" text-anchor="{anchor}" fill="{colour}">'
            f"{html.escape(name)}</text>"
        )
    return _frame(title, "".join(body), x_label, y_label)


def histogram(values: np.ndarray, bins: int, title: str, x_label: str) -> str:
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return _frame(title, "", x_label, "requests")
    counts, edges = np.histogram(v, bins=bins)
    lo, hi = 0.0, float(counts.max()) * 1.08 or 1.0
    x0, x1 = float(edges[0]), float(edges[-1]) if edges[-1] > edges[0] else float(edges[0]) + 1
    x = lambda a: LEFT + (a - x0) / (x1 - x0) * (W - LEFT - RIGHT)  # noqa: E731
    y = lambda b: TOP + (hi - b) / (hi - lo) * (H - TOP - BOTTOM)  # noqa: E731
    body = [_y_ticks(lo, hi, y)]
    for c, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
        body.append(
            f'<rect x="{x(a):.1f}" y="{y(c):.1f}" width="{max(x(b) - x(a) - 1, 0.5):.1f}" '
            f'height="{y(0) - y(c):.1f}" fill="{COLOURS[0]}"/>'
        )
    for a in np.linspace(x0, x1, 5):
        body.append(
            f'<text x="{x(a):.1f}" y="{H - BOTTOM + 14}" text-anchor="middle">{a:.2g}</text>'
        )
    if x0 < 0 < x1:
        body.append(
            f'<line x1="{x(0):.1f}" y1="{TOP}" x2="{x(0):.1f}" y2="{H - BOTTOM}" '
            'stroke="#c00" stroke-dasharray="4"/>'
        )
    return _frame(title, "".join(body), x_label, "requests")
