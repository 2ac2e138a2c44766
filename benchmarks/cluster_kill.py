"""A replica SIGKILLed behind HAProxy under load, then restarted: failures and throughput.

    python benchmarks/cluster_kill.py --run runs/demo [--concurrency 16] [--before 20]
        [--down 20] [--after 40]

Redis, two stateless replicas (one worker each) and HAProxy on this machine
(``ops.online.cluster.local_cluster``); ``--concurrency`` client threads rank 100 candidates
through HAProxy for the whole run. At ``--before`` seconds one replica is SIGKILLed; ``--down``
seconds later it is started again on its port (``ranker serve`` loads its models: the time to
ready is reported); the load goes on ``--after`` seconds more. Reports failed requests before
the kill, within HAProxy's health-check window after it, and after the window; requests per
second in each phase; and how long after the restarted replica was ready the throughput of a
5-second window came back within 10% of the one before the kill. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
from serve_load import bodies  # a sibling script

from ops.online.cluster import CHECK_INTER_MS, FALL, local_cluster
from ops.online.http_client import Http
from ops.online.server_proc import background_server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=Path("runs/demo"))
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--before", type=float, default=20.0)
    ap.add_argument("--down", type=float, default=20.0)
    ap.add_argument("--after", type=float, default=40.0)
    ap.add_argument("--work", type=Path, default=Path("runs/bench-cluster-kill"))
    args = ap.parse_args()
    registry, state = args.run / "registry", args.run / "lists" / "state"
    payloads = [json.loads(p) for p in bodies(state, 400, "transformer")]
    for p in payloads:
        p.pop("ts")  # the server's clock: the replicas' clocks stay alike
    done: list[tuple[float, int]] = []  # (time, status) of every request
    stop = threading.Event()
    with local_cluster(registry, state, args.work) as c:
        lb = Http(c.url, c.client_token, c.admin_token)

        def load(k: int) -> None:
            n = k
            while not stop.is_set():
                try:
                    status = lb.post("/v1/rank", payloads[n % len(payloads)], timeout=10).status
                except OSError:
                    status = 0
                done.append((time.monotonic(), status))
                n += args.concurrency

        threads = [threading.Thread(target=load, args=(k,)) for k in range(args.concurrency)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(args.before)
        victim = c.replicas[1]
        os.killpg(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        time.sleep(args.down)
        port = int(victim.url.rsplit(":", 1)[1])
        restart = time.monotonic()
        with background_server(
            registry,
            state,
            c.log_dirs[1],
            extra=["--store", c.redis.url],
            port=port,
            tokens=(c.client_token, c.admin_token),
        ):
            ready = time.monotonic()
            time.sleep(args.after)
            stop.set()
            for t in threads:
                t.join()
    window = FALL * CHECK_INTER_MS / 1000 + 0.5

    def rps(lo: float, hi: float) -> float:
        return sum(lo <= t < hi for t, s in done if s == 200) / max(hi - lo, 1e-9)

    def failed(lo: float, hi: float) -> int:
        return sum(lo <= t < hi and s != 200 for t, s in done)

    base = rps(killed - 15, killed)
    back_after = None
    for start in np.arange(ready, ready + args.after - 5, 1.0):
        if rps(start, start + 5) >= 0.9 * base:
            back_after = round(float(start - ready), 1)
            break
    end = ready + args.after
    print(
        json.dumps(
            {
                "benchmark": "cluster_kill",
                "concurrency": args.concurrency,
                "health_check_window_s": window,
                "failed": {
                    "before_kill": failed(t0, killed),
                    "within_window": failed(killed, killed + window),
                    "after_window": failed(killed + window, end),
                },
                "requests": len(done),
                "rps": {
                    "15s_before_kill": round(base, 1),
                    "one_replica": round(rps(killed + window, restart), 1),
                    "after_restart_ready": round(rps(ready, end), 1),
                },
                "restart_to_ready_s": round(ready - restart, 1),
                "throughput_within_10pct_s_after_ready": back_after,
                "goal": {"after_window_failed": 0, "throughput_back_within_s": 60},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
