"""Online A/B sized by a power calculation, and how many requests interleaving needs.

    python benchmarks/online_power.py --run runs/demo [--pilot 4000] [--max-requests 60000]

1. A pilot A/B (LightGBM control, Transformer treatment) estimates the lift in orders per
   request and its variance over users; the requests needed for 80% power at 5% (two-sided)
   follow from the delta method, capped at --max-requests.
2. The A/B runs at that size: the lift with its 95% CI, compared in sign with the offline
   oracle comparison of the same two models (the run's offline report).
3. The same traffic under team-draft interleaving. From both runs, subsamples of users (200
   draws per size) give each design's power at each number of requests, and the smallest
   size that reaches 80% power.

Each run gets a fresh server on the run's state snapshot. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ops.online.abtest import run_abtest
from ops.online.online import load_logs, online_report, request_outcomes
from ops.online.online_stats import Z80, Z95, ratio, relative_lift
from ops.online.server_proc import background_server
from serving.experiments import two_arm_toml

REQUESTS_PER_DAY = 1000  # about the logged traffic of the demo world


def play(run: Path, tmp: Path, mode: str, n: int, seed: int) -> Path:
    exp = tmp / f"{mode}-{seed}.toml"
    exp.write_text(two_arm_toml("power", f"power-{seed}", mode, "lgbm", "transformer"))
    logs = tmp / f"{mode}-{seed}-{n}"
    with background_server(
        run / "registry", run / "lists" / "state", logs, experiment=exp
    ) as server:
        run_abtest(
            server.url,
            run / "world",
            n,
            seed=seed,
            days=max(1.0, n / REQUESTS_PER_DAY),
            progress=False,
            token=server.client_token,
        )
    return logs


def user_table(logs: Path) -> pd.DataFrame:
    served = load_logs(logs)
    per = request_outcomes(served.rankings, served.events)
    return per.groupby(["user_id", "variant"])[["orders", "one"]].sum().reset_index()


def ab_power(users: pd.DataFrame, fraction: float, draws: int, rng: np.random.Generator) -> float:
    ids = users["user_id"].unique()
    hits = 0
    for _ in range(draws):
        keep = set(rng.choice(ids, max(2, int(fraction * len(ids))), replace=False))
        sub = users[users["user_id"].isin(keep)]
        c, t = (sub[sub["variant"] == v] for v in ("control", "treatment"))
        lf = relative_lift(
            ratio(c["orders"].to_numpy(float), c["one"].to_numpy(float)),
            ratio(t["orders"].to_numpy(float), t["one"].to_numpy(float)),
        )
        hits += lf.p_value < 0.05
    return hits / draws


def interleave_prefs(logs: Path) -> pd.DataFrame:
    served = load_logs(logs)
    rankings, events = served.rankings, served.events
    clicked = (
        events[events["type"] == "click"].groupby("request_id")["item_id"].apply(set).to_dict()
    )
    rows = []
    for rid, user, items, teams in rankings[["request_id", "user_id", "items", "teams"]].itertuples(
        index=False
    ):
        got = clicked.get(rid, set())
        a = sum(1 for i, t in zip(items, teams, strict=True) if t == "control" and i in got)
        b = sum(1 for i, t in zip(items, teams, strict=True) if t == "treatment" and i in got)
        rows.append((user, int(b > a) - int(a > b)))
    return pd.DataFrame(rows, columns=["user_id", "pref"])


def interleave_power(
    prefs: pd.DataFrame, fraction: float, draws: int, rng: np.random.Generator
) -> float:
    ids = prefs["user_id"].unique()
    hits = 0
    for _ in range(draws):
        keep = set(rng.choice(ids, max(2, int(fraction * len(ids))), replace=False))
        p = prefs[prefs["user_id"].isin(keep)]["pref"]
        wins_b, wins_a = int((p > 0).sum()), int((p < 0).sum())
        if wins_a + wins_b:
            hits += stats.binomtest(wins_b, wins_a + wins_b, 0.5).pvalue < 0.05
    return hits / draws


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=Path("runs/demo"))
    ap.add_argument("--pilot", type=int, default=4000)
    ap.add_argument("--max-requests", type=int, default=60_000)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    offline = json.loads((args.run / "report" / "report.json").read_text())
    oracle = next(
        (
            c
            for c in offline["comparisons"]
            if c["metric"] == "oracle_ndcg@10" and {c["a"], c["b"]} == {"lgbm", "transformer"}
        ),
        None,
    )
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        pilot = online_report(play(args.run, tmp, "ab", args.pilot, args.seed + 1))
        lf = pilot["lifts"]["treatment"]["orders_per_request"]
        # The delta-method standard error shrinks as 1/sqrt(n): scale the pilot's to 80% power.
        se_pilot = (lf["ci95"][1] - lf["ci95"][0]) / (2 * Z95)
        need = int(args.pilot * ((Z95 + Z80) * se_pilot / max(abs(lf["lift"]), 1e-9)) ** 2)
        n = int(min(max(need, args.pilot), args.max_requests))
        ab_logs = play(args.run, tmp, "ab", n, args.seed + 2)
        ab = online_report(ab_logs, args.run / "world")
        il_logs = play(args.run, tmp, "interleave", n, args.seed + 3)
        il = online_report(il_logs)
        users, prefs = user_table(ab_logs), interleave_prefs(il_logs)
        fractions = [0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0]
        curve = [
            {
                "requests": int(f * n),
                "ab_power": ab_power(users, f, args.draws, rng),
                "interleaving_power": interleave_power(prefs, f, args.draws, rng),
            }
            for f in fractions
        ]
    main_lift = ab["lifts"]["treatment"]["orders_per_request"]
    first = lambda key: next((c["requests"] for c in curve if c[key] >= 0.8), None)  # noqa: E731
    offline_sign = (
        None
        if oracle is None
        else np.sign(oracle["diff"] if oracle["a"] == "transformer" else -oracle["diff"])
    )
    print(
        json.dumps(
            {
                "benchmark": "online_power",
                "run": str(args.run),
                "pilot": {
                    "requests": args.pilot,
                    "lift": lf["lift"],
                    "ci95": lf["ci95"],
                    "requests_for_80pct_power": need,
                },
                "ab": {
                    "requests": n,
                    "users": sum(v["users"] for v in ab["variants"].values()),
                    "orders_per_request_lift": main_lift,
                    "srm": ab["srm"],
                    "verdict": ab["verdict"],
                    "oracle_ndcg@10": {
                        k: v.get("oracle_ndcg@10") for k, v in ab["variants"].items()
                    },
                },
                "offline_oracle_diff_transformer_minus_lgbm": None
                if oracle is None
                else (oracle["diff"] if oracle["a"] == "transformer" else -oracle["diff"]),
                "signs_agree": None
                if offline_sign is None
                else bool(np.sign(main_lift["lift"]) == offline_sign),
                "interleaving": {
                    "requests": n,
                    "preference": il["preference"],
                    "verdict": il["verdict"],
                },
                "power_curve": curve,
                "requests_for_80pct_power": {
                    "ab": first("ab_power"),
                    "interleaving": first("interleaving_power"),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
