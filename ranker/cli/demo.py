"""``ranker demo``: the main job on the embedded default world, step by step, with timings."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEMO_REQUESTS = 20_000
DEMO_USERS = 2_000


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="simulate, validate and summarise (the full loop as it grows)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--requests", type=int, default=DEMO_REQUESTS)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from pipelines.logs.summary import summarize_logs
    from pipelines.logs.validate import check_logs, format_report
    from pipelines.world.config import WorldConfig
    from pipelines.world.simulate import simulate

    out: Path = args.out
    timings: dict[str, float] = {}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - t0, 1)
        return result

    cfg = WorldConfig(seed=args.seed, n_requests=args.requests, n_users=DEMO_USERS)
    step("simulate", lambda: simulate(cfg, out))
    rep = step("validate-logs", lambda: check_logs(out / "logs"))
    print(format_report(rep))
    if not rep.usable:
        return 1
    summary = step("summary", lambda: summarize_logs(out / "logs"))
    print(json.dumps(summary, indent=2))
    print(f"\nlogs: {out / 'logs'}   world (truth, parameters): {out / 'world'}")
    print("step timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    return 0
