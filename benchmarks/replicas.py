"""Replicas sharing one Redis against one server on the embedded SQLite store, in one run.

    python benchmarks/replicas.py --run runs/demo [--seconds 15] [--rounds 2] [--clicks 200]

Starts a real redis-server on a free port, two `ranker serve` replicas on it (separate ports
and log directories, as on two machines) and one server on the embedded store, one worker
each, over the demo's models and state. Measures:
- ``concurrency_1``: sequential /v1/rank latency (100 candidates, a 50-click history looked up
  by the server), the embedded server and replica A taking turns request by request;
  ``redis_minus_embedded_p50_ms`` is the median over rounds of the difference of their p50s;
  ``redis_uncached_minus_embedded_p50_ms`` the same for a third server, a replica reading every
  counter key from Redis (``--counter-cache-keys 0``), and ``counter_keys_from_cache`` replica
  A's share of keys its bucket cache answered (this workload repeats 400 requests);
- ``click_to_other_replica_ms``: a click posted to A, then B's history read until it shows
  the click: milliseconds from A's acknowledgement to the first read of B that has it;
- ``same_scores``: the same requests (same time) ranked by A and by B, scores equal bit for bit.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from serve_load import alternating_latency_run, bodies, warm_up  # a sibling script

from ops.online.http_client import Http
from ops.online.redis_proc import redis_server
from ops.online.server_proc import background_server


def click_delays(a: Http, b: Http, n: int, items: list[str]) -> list[float]:
    out = []
    for k in range(n):
        user = f"bench-replica-user-{k}"
        r = a.post(
            "/v1/rank",
            {"user_id": user, "query": "hotpot", "candidates": [{"item_id": i} for i in items]},
        )
        assert r.status == 200, r.body
        event = {
            "type": "click",
            "request_id": r.body["request_id"],
            "user_id": user,
            "item_id": items[0],
            "position": 1,
        }
        assert a.post("/v1/events", {"events": [event]}).status == 200
        t0 = time.perf_counter()
        while not b.get(f"/v1/users/{user}/history").body["history"]:
            if time.perf_counter() - t0 > 10:
                raise TimeoutError(f"{user}'s click never reached the other replica")
        out.append((time.perf_counter() - t0) * 1000)
    return out


def cache_share(url: str) -> dict[str, float]:
    """Replica A's counter keys by source, from its /metrics (the latency rounds' share)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    got = {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r'^ranker_counter_keys_total\{source="(\w+)"\} ([\d.e+]+)$', text, re.M
        )
    }
    total = sum(got.values()) or 1.0
    return {**got, "share_from_cache": round(got.get("cache", 0.0) / total, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=Path("runs/demo"))
    ap.add_argument("--model", default="transformer")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clicks", type=int, default=200)
    ap.add_argument("--work", type=Path, default=Path("runs/bench-replicas"))
    args = ap.parse_args()
    registry, state = args.run / "registry", args.run / "lists" / "state"
    payloads = bodies(state, 400, args.model)
    with ExitStack() as stack:
        redis = stack.enter_context(redis_server(args.work / "redis"))

        def serve(name: str, extra: list[str]) -> Http:
            s = stack.enter_context(
                background_server(registry, state, args.work / name, extra=extra)
            )
            return Http(s.url, s.client_token, s.admin_token)

        import redis as redis_py

        from serving.state_load import load_state

        load_state(redis_py.Redis.from_url(redis.url, decode_responses=True), state, progress=False)
        a = serve("replica-a", ["--store", redis.url])
        b = serve("replica-b", ["--store", redis.url])
        embedded = serve("embedded", [])
        # The same replica reading every counter key from Redis every time: what a ranking
        # costs when the bucket cache holds none of its keys (new items, users, a new bucket).
        cold = serve("replica-uncached", ["--store", redis.url, "--counter-cache-keys", "0"])
        urls = {"embedded": f"http://{embedded.host}:{embedded.port}"}
        urls["redis"] = f"http://{a.host}:{a.port}"
        urls["redis_uncached"] = f"http://{cold.host}:{cold.port}"
        for url in urls.values():
            warm_up(url, payloads)
        rounds = [alternating_latency_run(urls, payloads, args.seconds) for _ in range(args.rounds)]
        diffs = {
            name: [r[name]["p50_ms"] - r["embedded"]["p50_ms"] for r in rounds]  # type: ignore[operator]
            for name in ("redis", "redis_uncached")
        }
        keys = cache_share(urls["redis"])
        items = [json.loads(p)["candidates"][0]["item_id"] for p in payloads[:5]]
        delays = np.array(click_delays(a, b, args.clicks, items))
        same = []
        for p in payloads[:20]:
            body = json.loads(p)
            one, two = a.post("/v1/rank", body).body, b.post("/v1/rank", body).body
            same.append(
                [(i["item_id"], i["score"]) for i in one["items"]]
                == [(i["item_id"], i["score"]) for i in two["items"]]
            )
        info = redis_py.Redis.from_url(redis.url).info("memory")
    print(
        json.dumps(
            {
                "benchmark": "replicas",
                "goal": {"redis_minus_embedded_p50_ms": 0.5, "click_to_other_replica_p99_ms": 50},
                "concurrency_1": rounds,
                "redis_minus_embedded_p50_ms": round(float(np.median(diffs["redis"])), 3),
                "redis_uncached_minus_embedded_p50_ms": round(
                    float(np.median(diffs["redis_uncached"])), 3
                ),
                "counter_keys_from_cache": keys,
                "click_to_other_replica_ms": {
                    "n": len(delays),
                    "p50": round(float(np.percentile(delays, 50)), 3),
                    "p99": round(float(np.percentile(delays, 99)), 3),
                    "max": round(float(delays.max()), 3),
                },
                "same_scores": {"requests": len(same), "identical": int(sum(same))},
                "redis_used_memory_mb": round(info["used_memory"] / 2**20, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
