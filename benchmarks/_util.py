"""Helpers for the benchmark scripts: run a command, measure wall time and peak memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` in a fresh process; wall seconds and its peak resident memory in MB.

    Peak RSS comes from ``wait4``'s rusage of that one child, so earlier children do not count.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})}
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}):\n{err[-2000:]}")
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "stderr": err,
    }


def ranker_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ops.cli", *args]


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2))
