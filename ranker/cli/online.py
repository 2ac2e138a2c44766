"""Online commands: ``serve`` (the HTTP service)."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the registry's exported models over HTTP")
    p.add_argument("--registry", type=Path, required=True)
    p.add_argument("--state", type=Path, required=True, help="the state `ranker features` wrote")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--experiment", type=Path, help="an A/B experiment file (TOML)")
    p.add_argument(
        "--isolate-variants",
        action="store_true",
        help="per-variant counters and histories, so A/B variants cannot interfere",
    )
    p.add_argument(
        "--default-model", help="model served without an experiment (default: transformer)"
    )
    p.add_argument(
        "--log-dir",
        type=Path,
        default=Path("runs/serve"),
        help="served rankings, events, the shared store",
    )
    p.add_argument(
        "--store", type=Path, help="the shared SQLite store (default: LOG_DIR/store.sqlite)"
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--threads",
        type=int,
        help="ONNX Runtime threads per model session (default 1; requests run in parallel)",
    )
    p.add_argument(
        "--batch-window-ms", type=float, help="batch concurrent requests (default: 2 on a GPU)"
    )
    p.add_argument("--max-candidates", type=int, default=10_000)
    p.add_argument(
        "--no-inference",
        action="store_true",
        help="benchmarks only: answer with constant scores, to see the model's share of the time",
    )
    p.add_argument("--log-level", default="info")
    p.add_argument(
        "--example-from",
        type=Path,
        metavar="WORLD",
        help="print a curl command ranking a search sampled from this simulated world",
    )
    p.set_defaults(run=run_serve)

    p = sub.add_parser("abtest", help="simulated users search against a running server")
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
    r.add_argument("--logs", type=Path, required=True, help="the server's --log-dir")
    r.add_argument("--world", type=Path, help="the simulated world: oracle NDCG of served lists")
    r.add_argument("--out", type=Path, help="where report.{json,md,html} go (default: LOGS/report)")
    r.set_defaults(run=run_report_online)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    for path, what in ((args.registry, "registry"), (args.state / "state.json", "state")):
        if not path.exists():
            raise FileNotFoundError(f"--{what}: {path} does not exist")
    if args.workers < 1:
        raise ValueError("--workers must be >= 1")
    env = {
        "RANKER_REGISTRY": args.registry,
        "RANKER_STATE": args.state,
        "RANKER_LOG_DIR": args.log_dir,
        "RANKER_WORKERS": args.workers,
        "RANKER_DEVICE": args.device,
        "RANKER_MAX_CANDIDATES": args.max_candidates,
        "RANKER_EXPERIMENT": args.experiment,
        "RANKER_DEFAULT_MODEL": args.default_model,
        "RANKER_STORE": args.store,
        "RANKER_THREADS": args.threads,
        "RANKER_ISOLATE_VARIANTS": args.isolate_variants or None,
        "RANKER_BATCH_WINDOW_MS": args.batch_window_ms,
        "RANKER_SKIP_INFERENCE": True if args.no_inference else None,
    }
    for key, value in env.items():
        if value is not None:
            os.environ[key] = str(value)
    if args.workers > 1:  # Prometheus samples of all workers, aggregated by GET /metrics
        prom = args.log_dir / "prometheus"
        shutil.rmtree(prom, ignore_errors=True)
        prom.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
    if args.example_from:
        print(curl_example(args.example_from, args.host, args.port), flush=True)
    # The app is imported by name in each worker (ranker never imports serving itself).
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,
    )
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
    from ranker.evaluate.abtest import run_abtest as play

    if args.requests < 1:
        raise ValueError("--requests must be >= 1")
    s = play(
        args.url, args.world, args.requests, args.users, args.seed, args.days, not args.no_progress
    )
    print(
        f"played {s.requests} searches by {s.users} users in {s.seconds:.1f} s: {s.clicks} clicks, "
        f"{s.orders} orders, {s.errors} errors; variants {s.variants}"
    )
    return 1 if s.errors else 0


def run_report_online(args: argparse.Namespace) -> int:
    from ranker.evaluate.online import online_report
    from ranker.evaluate.online_report import write_online_report

    report = online_report(args.logs, args.world)
    paths = write_online_report(report, args.out or args.logs / "report")
    print(f"verdict: {report['verdict']}")
    print(f"report: {paths['html']} (also report.md, report.json)")
    return 0
