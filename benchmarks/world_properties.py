"""The simulated world's documented properties, measured on a large world.

    python benchmarks/world_properties.py [--requests 50000 --users 4000] [--out runs/bench-world]

Prints JSON with each property's value and its documented bound.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.world import properties as props
from pipelines.world.config import WorldConfig
from pipelines.world.simulate import simulate
from pipelines.world.world import World


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--users", type=int, default=4_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-world"))
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    cfg = WorldConfig(seed=args.seed, n_requests=args.requests, n_users=args.users)
    simulate(cfg, args.out, progress=False)
    world = World.load(args.out / "world")
    rng = np.random.default_rng(args.seed)
    s = world.sample_searches(2000, rng)
    truth = pd.read_parquet(args.out / "world/truth.parquet")
    imp = pd.read_parquet(args.out / "logs/impressions.parquet")
    logged = truth.merge(imp, on=["request_id", "item_id"])
    # Position bias seen in the logs: CTR at 1 over CTR at 10 within relevance bins.
    logged["bin"] = np.floor(logged["relevance"] * 2) / 2
    ctr = logged[logged["position"].isin([1, 10])].groupby(["bin", "position"])["clicked"].mean()
    ctr = ctr.unstack()
    ctr = ctr[(ctr[10] > 0) & ctr[1].notna()]
    disagreement = props.best_item_disagreement(world, s.take(np.arange(300)), rng)
    result = {
        "world": {"requests": args.requests, "users": args.users, "seed": args.seed},
        "position_bias_ctr1_over_ctr10": {
            "controlled": round(props.position_bias_ratio(world, s.take(np.arange(400)), rng), 2),
            "logs_by_relevance_bin": {
                str(k): round(float(v), 2) for k, v in (ctr[1] / ctr[10]).items()
            },
            "bound": [3, 15],
        },
        "best_item_disagreement": {
            "mean": round(float(disagreement.mean()), 3),
            "share_of_sets_above_half": round(float(np.mean(disagreement > 0.5)), 3),
            "bound": "share > 0.5 (most cases)",
        },
        "history_category_affinity_auc": {
            "value": round(props.history_auc(args.out / "logs"), 4),
            "bound": ">= 0.6",
        },
        "list_effect_variance_share": {
            "value": round(props.list_effect_share(truth), 4),
            "bound": [0.1, 0.3],
        },
        "policy_oracle_ndcg@10": {
            "value": round(props.policy_oracle_ndcg(world, s, rng), 4),
            "bound": [0.45, 0.8],
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
