"""Latency of the online featurisation: one request of 100 candidates whose user has a
50-click history, against the state ``ranker features`` wrote (goal: median at most 0.3 ms).

    python benchmarks/live_featurize.py --state runs/demo/lists/state [--requests 2000]

Prints JSON with the median, p90 and p99 in milliseconds (warm, one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pipelines.features.live import LiveFeaturizer
from pipelines.features.state import FeatureState


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", type=Path, required=True)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--candidates", type=int, default=100)
    args = ap.parse_args()
    state = FeatureState.load(args.state)
    live = LiveFeaturizer(state)
    rng = np.random.default_rng(0)
    # Users whose stored history is full (50 clicks).
    full = state.history.users_with_at_least(state.cfg.history.max_len)
    if not full:
        raise SystemExit("no user with a full history in this state; use a larger log")
    queries = ["hotpot", "coffee", "dinner", "cheap eats", "sushi"]
    t0 = int(state.clock_us or 0) + 10**6
    timings = []
    hist_lens = []
    for k in range(args.requests + 100):
        items = list(rng.choice(state.items.ids, args.candidates, replace=False))
        start = time.perf_counter()
        f = live.featurize(
            user_id=full[k % len(full)],
            query=queries[k % len(queries)],
            t_us=t0 + k * 10**5,
            item_ids=items,
            lat=31.23,
            lon=121.47,
            context={"device": "ios"},
        )
        if k >= 100:  # warm-up excluded
            timings.append(time.perf_counter() - start)
            hist_lens.append(len(f.hist_item_ids))
    ms = np.array(timings) * 1000
    print(
        json.dumps(
            {
                "benchmark": "live_featurize",
                "candidates": args.candidates,
                "history_len_median": int(np.median(hist_lens)),
                "features": [len(live.spec.numeric), len(live.spec.categorical)],
                "median_ms": round(float(np.median(ms)), 3),
                "p90_ms": round(float(np.percentile(ms, 90)), 3),
                "p99_ms": round(float(np.percentile(ms, 99)), 3),
                "goal": {"median_ms": 0.3},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
