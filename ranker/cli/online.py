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
        "--threads", type=int, help="ONNX Runtime threads per worker (default: cores / workers)"
    )
    p.add_argument(
        "--batch-window-ms", type=float, help="batch concurrent requests (default: 2 on a GPU)"
    )
    p.add_argument("--max-candidates", type=int, default=10_000)
    p.add_argument("--log-level", default="info")
    p.set_defaults(run=run_serve)


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
        "RANKER_BATCH_WINDOW_MS": args.batch_window_ms,
    }
    for key, value in env.items():
        if value is not None:
            os.environ[key] = str(value)
    if args.workers > 1:  # Prometheus samples of all workers, aggregated by GET /metrics
        prom = args.log_dir / "prometheus"
        shutil.rmtree(prom, ignore_errors=True)
        prom.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
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
