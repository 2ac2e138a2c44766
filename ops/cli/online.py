"""Online commands: ``serve`` (the HTTP service)."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import typing
from pathlib import Path
from typing import Any


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the registry's exported models over HTTP",
        description="Tokens come from the environment only: RANKER_CLIENT_TOKEN (events, user "
        "histories; or --client-tokens-file) and RANKER_ADMIN_TOKEN (reloads).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    add_settings_flags(p)
    p.add_argument("--log-level", default="info")
    p.add_argument(
        "--example-from",
        type=Path,
        metavar="WORLD",
        help="print a curl command ranking a search sampled from this simulated world",
    )
    p.set_defaults(run=run_serve)

    p = sub.add_parser("state", help="the serving state in a shared store")
    ssub = p.add_subparsers(dest="state_command", required=True, metavar="ACTION")
    ld = ssub.add_parser(
        "load",
        help="load the snapshot `ranker features` wrote into Redis, for stateless replicas "
        "(idempotent: a rerun or a run after an interrupted one leaves it whole)",
    )
    ld.add_argument("--state", type=Path, required=True, help="the features' state/ directory")
    ld.add_argument(
        "--store", required=True, help="redis://HOST:PORT/DB (a password: use RANKER_STORE)"
    )
    ld.add_argument("--force", action="store_true", help="load again though already loaded")
    ld.add_argument("--no-progress", action="store_true")
    ld.set_defaults(run=run_state_load)

    p = sub.add_parser(
        "abtest",
        help="simulated users search against a running server",
        description="The client token for /v1/events comes from RANKER_CLIENT_TOKEN.",
    )
    p.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--world", type=Path, required=True, help="the simulated world directory")
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--users", type=int, help="how many distinct users search (default: all)")
    p.add_argument("--days", type=float, default=1.0, help="simulated days the searches span")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run_abtest)

    p = sub.add_parser(
        "report", help="reports; `report online` judges an A/B test from server logs"
    )
    rsub = p.add_subparsers(dest="report", required=True, metavar="KIND")
    r = rsub.add_parser("online", help="an online experiment from a server's --log-dir")
    r.add_argument(
        "--logs",
        type=Path,
        nargs="+",
        required=True,
        help="the server's --log-dir (several: the replicas that served one experiment)",
    )
    r.add_argument("--world", type=Path, help="the simulated world: oracle NDCG of served lists")
    r.add_argument(
        "--out", type=Path, help="where report.{json,md,html} go (default: the first LOGS/report)"
    )
    r.set_defaults(run=run_report_online)


def add_settings_flags(p: argparse.ArgumentParser) -> None:
    """One flag per field of the server's ``Settings`` (``max_candidates`` ->
    ``--max-candidates``), typed and documented from the field; secrets have none."""
    from serving.settings import Settings  # the settings' one definition

    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("secret"):
            continue
        kind = _flag_type(field.annotation)
        flag = "--" + name.replace("_", "-")
        default = field.get_default()
        shown = "" if field.is_required() or default in (None, False) else f" (default {default})"
        help_text = f"{field.description or name}{shown}"
        if kind is bool:
            p.add_argument(flag, dest=name, action="store_true", default=None, help=help_text)
        elif isinstance(kind, tuple):
            p.add_argument(flag, dest=name, choices=kind, help=help_text)
        else:
            p.add_argument(flag, dest=name, type=kind, required=field.is_required(), help=help_text)


def _flag_type(annotation: Any) -> Any:
    """bool, a tuple of choices (a Literal), or a converter (int, float, str, Path)."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return _flag_type(args[0]) if len(args) == 1 else annotation


def run_state_load(args: argparse.Namespace) -> int:
    import redis

    from serving.state_load import load_state

    if not (args.state / "state.json").exists():
        raise FileNotFoundError(f"--state: {args.state} has no state.json")
    client = redis.Redis.from_url(args.store, decode_responses=True)
    r = load_state(client, args.state, progress=not args.no_progress, force=args.force)
    if r.already_loaded:
        print(f"already loaded under {r.prefix} (--force loads it again)")
    else:
        print(f"loaded under {r.prefix}: {r.counter_keys} counter keys, {r.users} histories")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from serving.settings import Settings

    for path, what in ((args.registry, "registry"), (args.state / "state.json", "state")):
        if not path.exists():
            raise FileNotFoundError(f"--{what}: {path} does not exist")
    for name in Settings.model_fields:
        value = getattr(args, name, None)
        if value is not None:
            os.environ[Settings.env_name(name)] = str(value)
    settings = Settings.from_env()  # every worker reads the same; refused here if invalid
    prom = None
    if settings.workers > 1:  # Prometheus samples of all workers, aggregated by GET /metrics
        # In a private temporary directory, not beside the logs: its memory-mapped files
        # must not share a disk that the logs may fill.
        prom = Path(tempfile.mkdtemp(prefix="ranker-prometheus-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
    if args.example_from:
        print(curl_example(args.example_from, args.host, args.port), flush=True)
    # The app is imported by name in each worker.
    try:
        uvicorn.run(
            "serving.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=settings.workers,
            log_level=args.log_level,
            access_log=False,
        )
    finally:
        if prom is not None:
            shutil.rmtree(prom, ignore_errors=True)
    return 0


def curl_example(world_dir: Path, host: str, port: int) -> str:
    """A curl command ranking one search sampled from the world after its logged period."""
    import json

    import numpy as np

    from pipelines.world.world import World, to_latlon

    world = World.load(world_dir)
    s = world.sample_searches(1, np.random.default_rng(7), id_prefix="curl")
    lat, lon = to_latlon(s.x, s.y)
    body = {
        "user_id": str(world.users.user_id[s.user[0]]),
        "query": str(s.query[0]),
        "ts": f"{np.datetime64(int(s.t[0]), 's')}Z",
        "context": {
            "lat": round(float(lat[0]), 5),
            "lon": round(float(lon[0]), 5),
            "device": str(s.device[0]),
        },
        "candidates": [{"item_id": str(world.items.item_id[i])} for i in s.candidates[0]],
        "top_k": 5,
    }
    return (
        "Rank a simulated search (once the server says it is ready):\n"
        f"curl -s -X POST http://{host}:{port}/v1/rank -H 'content-type: application/json' "
        f"-d '{json.dumps(body)}'\n"
        f"API docs: http://{host}:{port}/docs"
    )


def run_abtest(args: argparse.Namespace) -> int:
    from ops.online.abtest import run_abtest as play

    if args.requests < 1:
        raise ValueError("--requests must be >= 1")
    s = play(
        args.url,
        args.world,
        args.requests,
        args.users,
        args.seed,
        args.days,
        not args.no_progress,
        token=os.environ.get("RANKER_CLIENT_TOKEN") or None,
    )
    print(
        f"played {s.requests} searches by {s.users} users in {s.seconds:.1f} s: {s.clicks} clicks, "
        f"{s.orders} orders, {s.errors} errors; variants {s.variants}"
    )
    return 1 if s.errors else 0


def run_report_online(args: argparse.Namespace) -> int:
    from ops.online.online import online_report
    from ops.online.online_report import write_online_report

    report = online_report(args.logs, args.world)
    paths = write_online_report(report, args.out or args.logs[0] / "report")
    print(f"verdict: {report['verdict']}")
    print(f"report: {paths['html']} (also report.md, report.json)")
    return 0
