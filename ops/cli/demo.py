"""``ranker demo``: the main job on the embedded default world, step by step, with timings.

It ends with a short online A/B between the two models: its own server in the background
(always stopped), the world's simulated users searching against it, and the online report.

simulate -> validate-logs -> features -> train the LightGBM baseline -> train the Transformer
as a re-ranker over the baseline (PRM / Meituan style: the baseline's score and rank are inputs,
out-of-fold on the training lists) -> evaluate them side by side (oracle NDCG@10 from the world's
truth) -> print the verdict.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEMO_REQUESTS = 20_000
DEMO_USERS = 2_000
# Bounded so the demo stays within minutes on two cores; real runs use the defaults.
DEMO_TRANSFORMER = {"epochs": 10, "patience": 3}
DEMO_AB_REQUESTS = 3000  # a short online test: the report says when it is underpowered


def _online_ab(
    out: Path, registry: Path, lists: Path, requests: int, seed: int, cluster: bool = False
) -> dict[str, Any]:
    """Its own server in the background (always stopped), simulated users, the online report.
    With ``cluster``: Redis, two replicas and HAProxy instead of one server (``online-cluster``)."""
    import shutil

    from ops.online.abtest import run_abtest
    from ops.online.cluster import local_cluster
    from ops.online.online import online_report
    from ops.online.online_report import write_online_report
    from ops.online.server_proc import background_server
    from serving.experiments import two_arm_toml

    online = out / ("online-cluster" if cluster else "online")
    shutil.rmtree(online, ignore_errors=True)
    online.mkdir(parents=True)
    experiment = online / "experiment.toml"
    experiment.write_text(
        two_arm_toml(
            "lgbm-vs-transformer",
            "demo",
            "ab",
            "lgbm",
            "transformer",
            "The demo's online A/B: the LightGBM baseline against the Transformer re-ranker.",
        )
    )
    state = lists / "state"
    if cluster:
        with local_cluster(registry, state, online, experiment=experiment) as c:
            print(
                f"   Redis {c.redis.url}, replicas {[r.url for r in c.replicas]}, HAProxy {c.url}"
            )
            s = run_abtest(c.url, out / "world", requests, seed=seed, token=c.client_token)
        log_dirs = c.log_dirs
    else:
        with background_server(registry, state, online / "logs", experiment=experiment) as server:
            s = run_abtest(
                server.url, out / "world", requests, seed=seed, token=server.client_token
            )
        log_dirs = [online / "logs"]
    print(
        f"   {s.requests} searches by {s.users} users: {s.clicks} clicks, {s.orders} orders, "
        f"{s.errors} errors, variants {s.variants}"
    )
    report = online_report(log_dirs, out / "world")
    write_online_report(report, online / "report")
    return report


def run_cluster_demo(args: argparse.Namespace) -> int:
    """The demo's online A/B again through HAProxy, two replicas and Redis, beside the
    single server's verdict."""
    out: Path = args.out
    registry, lists = out / "registry", out / "lists"
    if not (registry / "transformer").is_dir():
        raise FileNotFoundError(f"{registry}: no models; run `ranker demo --out {out}` first")
    single = _online_ab(out, registry, lists, args.ab_requests, args.seed)
    both = _online_ab(out, registry, lists, args.ab_requests, args.seed, cluster=True)
    print(f"single server verdict: {single['verdict']}")
    print(f"cluster verdict:       {both['verdict']}")
    print(f"cluster report: {out / 'online-cluster' / 'report' / 'report.html'}")
    return 0 if single["verdict"] == both["verdict"] else 1


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole loop on the simulated world, with timings")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--requests", type=int, default=DEMO_REQUESTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--ab-requests", type=int, default=DEMO_AB_REQUESTS, help="searches in the online A/B"
    )
    p.set_defaults(run=run_demo)
    c = sub.add_parser(
        "cluster-demo",
        help="the demo's online A/B through HAProxy, two replicas and Redis (needs redis-server "
        "and haproxy), beside the single server's",
    )
    c.add_argument("--out", type=Path, default=Path("runs/demo"), help="a finished demo")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--ab-requests", type=int, default=DEMO_AB_REQUESTS)
    c.set_defaults(run=run_cluster_demo)


def run_demo(args: argparse.Namespace) -> int:
    from pipelines.features.batch import build_features
    from pipelines.features.config import load_config
    from pipelines.logs.summary import summarize_logs
    from pipelines.logs.validate import check_logs, format_report
    from pipelines.world.config import WorldConfig
    from pipelines.world.simulate import simulate
    from ranker.evaluate.offline import EvalRequest, evaluate
    from ranker.evaluate.report import write_report
    from ranker.export.run import export_model
    from ranker.train.run import TrainRequest, run_training

    out: Path = args.out
    timings: dict[str, float] = {}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        print(f"\n== {name}", flush=True)
        t0 = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - t0, 1)
        print(f"   ({timings[name]} s)", flush=True)
        return result

    cfg = WorldConfig(seed=args.seed, n_requests=args.requests, n_users=DEMO_USERS)
    step("simulate", lambda: simulate(cfg, out))
    rep = step("validate-logs", lambda: check_logs(out / "logs"))
    print(format_report(rep))
    if not rep.usable:
        return 1
    print(json.dumps(summarize_logs(out / "logs"), indent=2))
    lists, registry = out / "lists", out / "registry"
    feats = step("features", lambda: build_features(out / "logs", lists, load_config("sim")))
    fm = feats.manifest
    sizes = json.dumps({k: v["requests"] for k, v in fm.splits.items()})
    print(
        f"   {len(fm.numeric)} numeric, {len(fm.categorical)} categorical features; splits {sizes}"
    )
    lg = step(
        "train lgbm",
        lambda: run_training(
            TrainRequest("lgbm", lists, registry, seed=args.seed, threads=args.threads)
        ),
    )
    tr = step(
        "train transformer",
        lambda: run_training(
            TrainRequest(
                "transformer",
                lists,
                registry,
                seed=args.seed,
                threads=args.threads,
                reranker=str(lg.path),
                overrides=DEMO_TRANSFORMER,
            )
        ),
    )
    ctr = step(
        "train ctr",
        lambda: run_training(
            TrainRequest(
                "ctr", lists, registry, seed=args.seed, threads=args.threads, progress=False
            )
        ),
    )
    models = (lg, tr, ctr)
    report = step(
        "evaluate", lambda: evaluate(EvalRequest(lists, [str(ref.path) for ref in models]))
    )
    paths = write_report(report, out / "report")
    print(f"   verdict ({report['primary']}): {report['verdict']['text']}")
    print(f"   report: {paths['html']}")
    step("export", lambda: [export_model(str(ref.path)) for ref in models])
    online = step(
        "online A/B", lambda: _online_ab(out, registry, lists, args.ab_requests, args.seed)
    )
    print(f"\noffline verdict ({report['primary']}): {report['verdict']['text']}")
    print(f"offline report: {paths['html']} (also report.md, report.json)")
    print(f"online verdict: {online['verdict']}")
    print(f"online report: {out / 'online' / 'report' / 'report.html'}")
    print(
        f"models: {registry}; lists dataset: {lists}; logs: {out / 'logs'}; world: {out / 'world'}"
    )
    print("step timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    return 0
