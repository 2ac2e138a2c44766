"""Hardening checks of `ranker serve --workers 2` under load, on the demo's models.

    python benchmarks/soak.py --run runs/demo soak    [--seconds 180 --concurrency 16]
    python benchmarks/soak.py --run runs/demo kill    [--seconds 60 --concurrency 12 --kill-at 20]
    python benchmarks/soak.py --run runs/demo growth  [--users 200000 --cap 50000]

soak: ranks (100 candidates) and events (ten impressions and a click) mixed, from keep-alive
client threads; 320 probe users get exactly one click each. Reports errors, p99 in the first
and last 30 s, worker RSS after warm-up and at the end, log and store bytes per ranking, and
reads every clicked user's history back through each worker (duplicates, differences, probe
clicks missing).
kill: the same load; one worker is SIGKILLed at --kill-at; failed requests, seconds until the
replacement is listed, throughput in the 15 s before the kill and the last 15 s, histories
through both workers afterwards.
growth: --users new users each with an impression and a click (events of unserved rankings,
so the server runs --accept-unserved-events), posted in batches; worker RSS and the p99 of a
fixed ranking workload before and after; with --cap the server bounds its histories and
counters (--max-history-users, --max-counter-keys).
Prints JSON. The client load and what it reads back from the server are in soak_load.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
from soak_load import (
    Conn,
    Load,
    World,
    consistency,
    load_world,
    log_bytes,
    p99,
    probe_p99,
    rss_mb,
    worker_pids,
    worker_processes,
)

from ops.online.server_proc import background_server


def soak(
    args: argparse.Namespace, world: World, reg: Path, state: Path, log_dir: Path
) -> dict[str, Any]:
    with background_server(reg, state, log_dir, workers=2) as s:
        load = Load(s.url, s.client_token, world, probes=320)
        t0 = time.monotonic()
        threads = load.start(args.concurrency)
        time.sleep(30)
        pids = worker_pids(s.url, s.client_token)
        rss0 = {p: rss_mb(p) for p in pids}
        time.sleep(max(0.0, args.seconds - (time.monotonic() - t0)))
        rss1 = {p: rss_mb(p) for p in pids}
        load.stop.set()
        for t in threads:
            t.join(timeout=60)
        end = time.monotonic()
        recs = load.records
        first = [r for r in recs if r.t - t0 <= 30]
        last = [r for r in recs if end - r.t <= 30]
        ranks = sum(1 for r in recs if r.kind == "rank" and r.ok)
        sizes = log_bytes(log_dir)
        check = consistency(load, s)
    return {
        "scenario": "soak",
        "seconds": round(end - t0, 1),
        "concurrency": args.concurrency,
        "requests": len(recs),
        "failed": sum(not r.ok for r in recs),
        "failures": sorted({r.status for r in recs if not r.ok}),
        "ranks_per_s": round(ranks / (end - t0), 1),
        "p99_first_30s_ms": p99(first),
        "p99_last_30s_ms": p99(last),
        "rss_mb_after_warmup": {str(p): round(v, 1) for p, v in rss0.items()},
        "rss_mb_at_end": {str(p): round(v, 1) for p, v in rss1.items()},
        "rss_growth": {str(p): round(rss1[p] / rss0[p] - 1, 4) for p in pids},
        "bytes_per_ranking": {k: round(v / max(ranks, 1)) for k, v in sizes.items()},
        **check,
    }


def kill(
    args: argparse.Namespace, world: World, reg: Path, state: Path, log_dir: Path
) -> dict[str, Any]:
    with background_server(reg, state, log_dir, workers=2) as s:
        load = Load(s.url, s.client_token, world)
        t0 = time.monotonic()
        threads = load.start(args.concurrency)
        time.sleep(args.kill_at)
        before = worker_pids(s.url, s.client_token)
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        replaced = None
        while time.monotonic() - killed < 120:
            try:
                now = worker_pids(s.url, s.client_token)
            except Exception:
                now = []
            if len(set(now) - set(before)) == 1 and len(now) == 2:
                replaced = time.monotonic() - killed
                break
            time.sleep(0.2)
        time.sleep(max(0.0, args.seconds - (time.monotonic() - t0)))
        load.stop.set()
        for t in threads:
            t.join(timeout=60)
        end = time.monotonic()
        ok = [r for r in load.records if r.ok and r.kind == "rank"]
        before_rps = sum(1 for r in ok if killed - 15 <= r.t < killed) / 15
        after_rps = sum(1 for r in ok if r.t >= end - 15) / 15
        check = consistency(load, s)
    return {
        "scenario": "kill",
        "concurrency": args.concurrency,
        "killed_worker": victim,
        "failed": sum(not r.ok for r in load.records),
        "failures": sorted({r.status for r in load.records if not r.ok}),
        "replacement_listed_after_s": None if replaced is None else round(replaced, 1),
        "ranks_per_s_15s_before_kill": round(before_rps, 1),
        "ranks_per_s_last_15s": round(after_rps, 1),
        **check,
    }


def growth(
    args: argparse.Namespace, world: World, reg: Path, state: Path, log_dir: Path
) -> dict[str, Any]:
    extra = ["--accept-unserved-events", "--max-events", "10000"]
    if args.cap:
        extra += ["--max-history-users", str(args.cap), "--max-counter-keys", str(args.cap * 4)]
    with contextlib.ExitStack() as stack:
        redis_used = None
        if args.redis:  # a stateless replica: the state loaded into a real Redis
            import redis as redis_py

            from ops.online.redis_proc import redis_server
            from serving.state_load import load_state

            server = stack.enter_context(redis_server(log_dir / "redis"))
            client = redis_py.Redis.from_url(server.url, decode_responses=True)
            load_state(client, state, progress=False)
            extra += ["--store", server.url]
            redis_used = lambda: int(client.info("memory")["used_memory"])  # noqa: E731
        out = _growth(args, world, reg, state, log_dir, extra, redis_used)
    return out


def _growth(
    args: argparse.Namespace,
    world: World,
    reg: Path,
    state: Path,
    log_dir: Path,
    extra: list[str],
    redis_used: Any,
) -> dict[str, Any]:
    redis0 = redis_used() if redis_used else None
    with background_server(reg, state, log_dir, workers=2, extra=extra) as s:
        conn = Conn(s.url, s.client_token)
        p99_before = probe_p99(s, world)
        time.sleep(3)
        pids = worker_processes(s.pid)
        rss0 = {p: rss_mb(p) for p in pids}
        t_us = world.t0_us + 10**9
        per_call = args.per_call  # users per call: an impression and a click each
        t_post = time.monotonic()
        rss_half: dict[int, float] = {}
        for first in range(0, args.users, per_call):
            if first >= args.users // 2 and not rss_half:
                time.sleep(3)
                rss_half = {p: rss_mb(p) for p in pids}
            events = []
            for u in range(first, min(args.users, first + per_call)):
                item = world.items[u % len(world.items)]
                base = {
                    "request_id": f"g{u}",
                    "user_id": f"new-{u}",
                    "item_id": item,
                    "position": 1,
                }
                ts = f"{np.datetime64(t_us + u, 'us')}Z"
                events += [
                    {**base, "type": "impression", "ts": ts},
                    {**base, "type": "click", "ts": ts},
                ]
            status, out, _ = conn.call("POST", "/v1/events", {"events": events})
            assert status == 200, out
        post_s = time.monotonic() - t_post
        time.sleep(5)  # both workers apply the last events (once a second when idle)
        rss1 = {p: rss_mb(p) for p in pids}
        p99_after = probe_p99(s, world)
        _, text, _ = Conn(s.url, s.client_token).call("GET", "/metrics")  # a fresh one
    sizes = {
        line.split('"')[1]: float(line.split()[-1])
        for line in (text or "").splitlines()
        if line.startswith("ranker_state_entries{")
    }
    half = args.users - args.users // 2
    return {
        "scenario": "growth",
        "new_users": args.users,
        "cap": args.cap or None,
        "post_seconds": round(post_s, 1),
        "rss_mb_before": {str(p): round(v, 1) for p, v in rss0.items()},
        "rss_mb_at_half": {str(p): round(v, 1) for p, v in rss_half.items()},
        "rss_mb_after": {str(p): round(v, 1) for p, v in rss1.items()},
        "rss_kb_per_new_user": {
            str(p): round((rss1[p] - rss0[p]) * 1024 / args.users, 3) for p in pids
        },
        "rss_kb_per_new_user_second_half": {
            str(p): round((rss1[p] - rss_half[p]) * 1024 / half, 3) for p in pids
        },
        "state_entries_at_end": sizes,
        "p99_ms_before": p99_before,
        "p99_ms_after": p99_after,
        "store": "redis (stateless replica)" if redis_used else "embedded",
        "redis_bytes_per_new_user": (
            round((redis_used() - redis0) / args.users, 1) if redis_used else None
        ),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path("runs/demo"))
    p.add_argument("--out", type=Path, default=Path("runs/soak"), help="server logs")
    sub = p.add_subparsers(dest="scenario", required=True)
    s = sub.add_parser("soak")
    s.add_argument("--seconds", type=float, default=180)
    s.add_argument("--concurrency", type=int, default=16)
    k = sub.add_parser("kill")
    k.add_argument("--seconds", type=float, default=60)
    k.add_argument("--concurrency", type=int, default=12)
    k.add_argument("--kill-at", type=float, default=20)
    g = sub.add_parser("growth")
    g.add_argument("--users", type=int, default=200_000)
    g.add_argument("--cap", type=int, default=0, help="max history users (0: the default)")
    g.add_argument("--per-call", type=int, default=2500, help="new users per /v1/events call")
    g.add_argument(
        "--redis", action="store_true", help="a stateless replica on a real Redis (the state in it)"
    )
    a = p.parse_args()
    world = load_world(a.run / "lists" / "state")
    log_dir = a.out / f"{a.scenario}-{time.strftime('%Y%m%dT%H%M%S')}"
    run = {"soak": soak, "kill": kill, "growth": growth}[a.scenario]
    result = run(a, world, a.run / "registry", a.run / "lists" / "state", log_dir)
    print(json.dumps({"benchmark": "soak.py", **result}, indent=1))


if __name__ == "__main__":
    main()
