"""Charts of a ``features_scale.py`` result for the README: wall time and peak memory per
process against the log's size, one line per engine.

    python benchmarks/features_scale.py --impressions 1e6 1e7 3e7 \\
        --engines local ray:1 ray:2 ray:4 > runs/bench-scale/features.json
    python benchmarks/plot_scaling.py runs/bench-scale/features.json [MORE.json ...] --out docs

With several results, a later file's run replaces an earlier one's of the same engine and size
(to redo a run that something else disturbed). Writes ``scaling-wall.svg`` and
``scaling-memory.svg`` (the same JSON gives the same bytes).
Memory is per process: the driver's peak RSS (for ``local`` the only process) and, for Ray,
the largest of its workers' peaks, which is what one machine of a cluster must hold.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ranker.evaluate.svg import line_chart


def series(runs: list[dict[str, Any]]) -> tuple[list[float], dict[str, dict[str, list[float]]]]:
    """Sizes in millions of impressions and, per chart, one line per engine (NaN: not run)."""
    sizes = sorted({r["impressions"] for r in runs})
    at = {(r["engine"], r["impressions"]): r for r in runs}  # the last of each wins
    engines = list(dict.fromkeys(r["engine"] for r in runs))
    wall: dict[str, list[float]] = {}
    memory: dict[str, list[float]] = {}
    for e in engines:
        got = [at.get((e, n)) for n in sizes]
        wall[e] = [r["wall_s"] if r else math.nan for r in got]
        driver = "" if e.startswith("local") else " driver"
        memory[e + driver] = [r["peak_rss_mb"] / 1024 if r else math.nan for r in got]
        if any(r and r.get("worker_peak_rss_mb") for r in got):
            memory[e + " largest worker"] = [
                max(r["worker_peak_rss_mb"]) / 1024
                if r and r.get("worker_peak_rss_mb")
                else math.nan
                for r in got
            ]
    # the nominal size: 1,000,457 simulated impressions are the 1M run
    return [round(n / 1e6, 1) for n in sizes], {"wall": wall, "memory": memory}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path, nargs="+", help="features_scale.py's JSON")
    ap.add_argument("--out", type=Path, default=Path("docs"))
    args = ap.parse_args()
    runs = [r for path in args.results for r in json.loads(path.read_text())["runs"]]
    xs, charts = series(runs)
    x_label = "impressions (millions)"
    args.out.mkdir(parents=True, exist_ok=True)
    charts_of = {"wall": ("wall time", "seconds"), "memory": ("peak memory per process", "GB")}
    files = {
        f"scaling-{key}.svg": line_chart(
            xs, charts[key], f"ranker features: {what}", x_label, unit, y_min=0, legend_left=True
        )
        for key, (what, unit) in charts_of.items()
    }
    for name, svg in files.items():
        (args.out / name).write_text(svg + "\n")
        print(args.out / name)


if __name__ == "__main__":
    main()
