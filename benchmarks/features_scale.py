"""Wall time and peak memory of ``ranker features`` as the log grows (goal at 10M impressions:
at most 60 s and 1.5 GB on the 2-core development machine).

    python benchmarks/features_scale.py [--impressions 1e6 3e6 1e7] [--out runs/bench-features]
        [--chunk-candidates N ...] [--engines local ray:1 ray:2 local:7 ...]

With several ``--chunk-candidates`` values every size runs once per value (the bound on what a
part of a day holds; see pipelines/features/chunks.py), in the same run. ``--engines``: each
size once per engine, ``local`` (one state), ``local:S`` (S key shards in one process) or
``ray:W[:S]`` (a local Ray cluster of W workers holding S shards, default W); each run
reports the driver's peak RSS, every Ray worker's, and the shard skew (the largest shard's
candidates over the mean).

Each size is simulated once (kept under --out and reused) and featurised in a fresh process.
Prints JSON: wall seconds, peak RSS, the pipeline's own per-stage seconds (stages overlap on
two threads), and the growth from the smallest to the largest size.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from _util import emit, ranker_cmd, run_measured

IMPRESSIONS_PER_REQUEST = 36  # the default world's mean list length


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impressions", type=float, nargs="+", default=[1e6, 3e6, 1e7])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-features"))
    ap.add_argument("--chunk-candidates", type=int, nargs="*", default=[])
    ap.add_argument("--engines", nargs="+", default=["local"])
    args = ap.parse_args()
    rows = []
    for target in args.impressions:
        n_req = int(target / IMPRESSIONS_PER_REQUEST)
        sim = args.out / f"sim-{n_req}"
        if not (sim / "logs" / "impressions.parquet").exists():
            subprocess.run(
                ranker_cmd(
                    "simulate",
                    "--out",
                    str(sim),
                    "--requests",
                    str(n_req),
                    "--users",
                    str(max(500, n_req // 14)),
                    "--items",
                    str(max(1000, n_req // 35)),
                    "--days",
                    "28",
                    "--no-progress",
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        n_imp = pq.ParquetFile(sim / "logs" / "impressions.parquet").metadata.num_rows
        for engine in args.engines:
            for chunk in args.chunk_candidates or [None]:
                rows.append(_featurise(sim, n_imp, n_req, chunk, engine))
    first, last = rows[0], rows[-1]
    emit(
        {
            "benchmark": "features",
            "python": sys.version.split()[0],
            "goal": {"impressions": 10_000_000, "wall_s": 60, "peak_rss_mb": 1536},
            "runs": rows,
            "growth": {
                "impressions_x": round(last["impressions"] / first["impressions"], 2),
                "wall_x": round(last["wall_s"] / first["wall_s"], 2),
                "peak_rss_x": round(last["peak_rss_mb"] / first["peak_rss_mb"], 2),
            },
        }
    )


def _engine_flags(engine: str) -> list[str]:
    """``local``, ``local:S`` or ``ray:W[:S]`` as ``ranker features`` flags."""
    name, *nums = engine.split(":")
    if name == "local":
        return ["--shards", nums[0]] if nums else []
    if name == "ray" and nums:
        return [
            "--engine",
            "ray",
            "--workers",
            nums[0],
            *(["--shards", nums[1]] if nums[1:] else []),
        ]
    raise SystemExit(f"--engines: local, local:S or ray:W[:S], not {engine!r}")


def _featurise(
    sim: Path, n_imp: int, n_req: int, chunk: int | None, engine: str
) -> dict[str, object]:
    """One ``ranker features`` run in a fresh process: wall, peak RSS, stage seconds."""
    out = sim / "lists"
    shutil.rmtree(out, ignore_errors=True)
    flags = [] if chunk is None else ["--chunk-candidates", str(chunk)]
    flags += _engine_flags(engine)
    cmd = ranker_cmd(
        "features",
        "--logs",
        str(sim / "logs"),
        "--out",
        str(out),
        "--config",
        "sim",
        "--no-progress",
        *flags,
    )
    m = run_measured(cmd)
    stderr = m.pop("stderr", "")
    return {
        "impressions": n_imp,
        "requests": n_req,
        "chunk_candidates": chunk,
        "engine": engine,
        **m,
        "stages_s": _stage_seconds(stderr),
        **_engine_stats(stderr),
    }


def _stage_seconds(stderr: str) -> dict[str, float]:
    m = re.search(r"seconds (\{.*?\});", stderr)
    return json.loads(m.group(1).replace("'", '"')) if m else {}


def _engine_stats(stderr: str) -> dict[str, object]:
    m = re.search(r"; engine (\{.*\})", stderr)
    stats = json.loads(m.group(1)) if m else {}
    stats.pop("engine", None)
    return stats


if __name__ == "__main__":
    main()
