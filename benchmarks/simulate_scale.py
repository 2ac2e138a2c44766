"""Wall time and peak memory of ``ranker simulate`` (goal at 100k requests: < 60 s, < 2 GB).

    python benchmarks/simulate_scale.py [--requests 100000 ...] [--out runs/bench-sim]

Prints JSON: one entry per size, each run in a fresh process.
"""

from __future__ import annotations

import argparse
import platform
import shutil
from pathlib import Path

from _util import emit, ranker_cmd, run_measured


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-sim"))
    args = ap.parse_args()
    rows = []
    for n in args.requests:
        out = args.out / f"n{n}"
        shutil.rmtree(out, ignore_errors=True)
        users = max(100, n // 10)
        m = run_measured(
            ranker_cmd(
                "simulate",
                "--out",
                str(out),
                "--requests",
                str(n),
                "--users",
                str(users),
                "--no-progress",
            )
        )
        m.pop("stderr", None)
        size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
        rows.append({"requests": n, "users": users, **m, "output_mb": round(size_mb, 1)})
    emit(
        {
            "benchmark": "simulate",
            "machine": platform.processor() or platform.machine(),
            "goal": {"requests": 100_000, "wall_s": 60, "peak_rss_mb": 2048},
            "runs": rows,
        }
    )


if __name__ == "__main__":
    main()
