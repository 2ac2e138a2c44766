"""Data commands: ``simulate`` and ``validate-logs``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines.world.config import WorldConfig


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="write a simulated search log and its world")
    p.add_argument("--out", type=Path, required=True, help="output directory (logs/ and world/)")
    p.add_argument("--requests", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--users", type=int, default=4_000)
    p.add_argument("--items", type=int, default=3_000)
    p.add_argument("--days", type=int, default=21)
    p.add_argument("--min-candidates", type=int, default=10)
    p.add_argument("--max-candidates", type=int, default=100)
    p.add_argument(
        "--random-share",
        type=float,
        default=0.05,
        help="share of requests shown with random adjacent swaps",
    )
    p.add_argument(
        "--list-effect",
        type=float,
        default=1.0,
        help="strength of the list-context effect (0: control world)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run_simulate)

    p = sub.add_parser("validate-logs", help="check logs against the schema, count bad rows")
    p.add_argument("logs", type=Path, help="directory with requests, impressions, items, users")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run_validate)

    p = sub.add_parser("features", help="click logs to the lists dataset and the serving state")
    p.add_argument("--logs", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--config",
        default=None,
        help="feature config: a TOML file, or 'sim' / 'generic' (default: generic)",
    )
    p.add_argument(
        "--chunk-candidates",
        type=int,
        default=None,
        help="featurise a day this many candidates at a time: bounds memory, not the output "
        "(default: pipelines.features.chunks.DEFAULT_MAX_CANDIDATES)",
    )
    from pipelines.features.config import engine_flags

    for flag, opts in engine_flags():
        p.add_argument(flag, **opts)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run_features)


def world_config_from_args(args: argparse.Namespace) -> WorldConfig:

    return WorldConfig(
        seed=args.seed,
        n_requests=args.requests,
        n_users=args.users,
        n_items=args.items,
        days=args.days,
        min_candidates=args.min_candidates,
        max_candidates=args.max_candidates,
        random_share=args.random_share,
        list_effect=args.list_effect,
    )


def run_simulate(args: argparse.Namespace) -> int:
    from pipelines.logs.summary import summarize_logs
    from pipelines.world.simulate import simulate

    cfg = world_config_from_args(args)
    simulate(cfg, args.out, progress=not args.no_progress)
    print(f"wrote {args.out / 'logs'} and {args.out / 'world'}")
    print(json.dumps(summarize_logs(args.out / "logs"), indent=2))
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from pipelines.logs.validate import check_logs, format_report

    if not args.logs.is_dir():
        raise FileNotFoundError(f"{args.logs} is not a directory")
    rep = check_logs(args.logs)
    print(json.dumps(rep.to_dict(), indent=2) if args.json else format_report(rep))
    return 0 if rep.usable else 1


def run_features(args: argparse.Namespace) -> int:
    from pipelines.features.batch import build_features
    from pipelines.features.config import engine_from_args, load_config

    if not args.logs.is_dir():
        raise FileNotFoundError(f"{args.logs} is not a directory")
    chunk = {} if args.chunk_candidates is None else {"max_candidates": args.chunk_candidates}
    res = build_features(
        args.logs,
        args.out,
        load_config(args.config),
        progress=not args.no_progress,
        engine=engine_from_args(args),
        **chunk,
    )
    m = res.manifest
    print(f"wrote {args.out} (state for serving: {res.state_dir})")
    for split, info in m.splits.items():
        print(f"  {split:<6} {info['requests']:>9,} requests {info['items']:>11,} candidates")
    print(
        f"  features: {len(m.numeric)} numeric, {len(m.categorical)} categorical, "
        f"history of up to {m.history_max_len} clicks"
    )
    print(f"  bad rows: {json.dumps(m.bad_rows) if m.bad_rows else 'none'}")
    if res.engine.get("shards"):
        print(f"  engine: {json.dumps(res.engine)}")
    return 0
