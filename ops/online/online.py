"""``ranker report online``: an A/B (or interleaving) experiment judged from the server's logs.

Reads the served rankings and the events a server wrote under ``--log-dir`` (and its
``experiment.json``). Per variant: users, requests, CTR, clicks and orders per request, and,
with the simulated world, the oracle NDCG@10 of the lists served. Each variant against the
control: the relative lift with a 95% CI (delta method over users) and a p-value, and the
minimum detectable effect for the traffic seen. A sample-ratio-mismatch check on users, and
latency percentiles as a guardrail. Interleaving: each request's preference from its clicks.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ops.online.online_stats import (
    Lift,
    interleaving_preference,
    ratio,
    relative_lift,
    sample_ratio_mismatch,
)
from pipelines.io import JsonlRecords, read_jsonl
from ranker.metrics import ndcg

PRIMARY = "orders_per_request"
INTERFERENCE = (
    "Variants can interfere through shared state: every variant's clicks and orders feed the "
    "same counters (item CTR and order rate, query-item CTR) and the same user histories, so "
    "a better variant raises the counters of the items it promotes and the other variant then "
    "ranks with them too. That dilutes measured differences towards zero. The fix, when it "
    "matters, is per-variant counters: each variant reading only the events of its own "
    "traffic (ranker serve --isolate-variants)."
)


@dataclass
class ServedLogs:
    rankings: pd.DataFrame  # one row per served ranking
    events: pd.DataFrame
    experiment: dict[str, Any] | None
    bad_lines: int  # unreadable log lines skipped (a worker killed mid-write tears its last)


def load_logs(log_dirs: Path | Sequence[Path]) -> ServedLogs:
    """The served logs of one server, or of several replicas (each its own --log-dir) that
    served one experiment: their rankings and events together."""
    dirs = [Path(log_dirs)] if isinstance(log_dirs, str | Path) else [Path(d) for d in log_dirs]
    parts = [(read_jsonl(d, "rankings"), read_jsonl(d, "events")) for d in dirs]
    rankings = JsonlRecords(
        [x for r, _ in parts for x in r.records], sum(r.bad_lines for r, _ in parts)
    )
    events = JsonlRecords(
        [x for _, e in parts for x in e.records], sum(e.bad_lines for _, e in parts)
    )
    if not rankings.records:
        where = ", ".join(map(str, dirs))
        raise FileNotFoundError(f"{where}: no rankings-*.jsonl (is this a server's --log-dir?)")
    experiments = {
        (d / "experiment.json").read_text() for d in dirs if (d / "experiment.json").exists()
    }
    if len(experiments) > 1:
        raise ValueError("these log directories ran different experiments: report them apart")
    exp = json.loads(experiments.pop()) if experiments else None
    r = pd.DataFrame(rankings.records).drop_duplicates("request_id", keep="last")
    if "candidates" in r.columns:  # logged only where top_k cut the list; else the items
        r["candidates"] = [
            c if isinstance(c, list) else i
            for c, i in zip(r["candidates"], r["items"], strict=True)
        ]
    else:
        r["candidates"] = r["items"]
    e = (
        pd.DataFrame(events.records)
        if events.records
        else pd.DataFrame(columns=["type", "request_id", "item_id"])
    )
    return ServedLogs(r, e, exp, rankings.bad_lines + events.bad_lines)


def online_report(log_dirs: Path | Sequence[Path], world_dir: Path | None = None) -> dict[str, Any]:
    logs = load_logs(log_dirs)
    rankings, events, exp = logs.rankings, logs.events, logs.experiment
    rankings = rankings[rankings["variant"] != "explicit"]  # requests that chose a model by hand
    per = request_outcomes(rankings, events)
    if world_dir is not None:
        per["oracle_ndcg@10"] = _oracle_ndcg(rankings, Path(world_dir))
    variants = list(exp["variants"]) if exp else []
    names = [v["name"] for v in variants] or sorted(per["variant"].unique())
    if exp and exp.get("mode") == "interleave":
        out = _interleaving_report(per, rankings, events, exp, world_dir)
        out["unreadable_log_lines"] = logs.bad_lines
        return out
    control = names[0]
    users = per.groupby("variant")["user_id"].nunique().to_dict()
    report: dict[str, Any] = {
        "kind": "online A/B",
        "experiment": exp,
        "control": control,
        "primary": PRIMARY,
        "unit": "user",
        "variants": {
            v: _variant_summary(per[per["variant"] == v]) for v in names if v in set(per["variant"])
        },
        "lifts": {},
        "srm": None,
        "interference": INTERFERENCE,
        "unreadable_log_lines": logs.bad_lines,
    }
    base = per[per["variant"] == control]
    for v in names:
        if v == control or v not in report["variants"]:
            continue
        treat = per[per["variant"] == v]
        report["lifts"][v] = {
            m: _lift(base, treat, num, den).__dict__
            for m, (num, den) in {
                "orders_per_request": ("orders", "one"),
                "clicks_per_request": ("clicks", "one"),
                "ctr": ("clicks", "impressions"),
            }.items()
        }
    if variants:
        weights = {v["name"]: float(v["weight"]) for v in variants}
        report["srm"] = sample_ratio_mismatch(
            {str(k): int(v) for k, v in users.items()}, weights
        ).__dict__
    report["verdict"] = _verdict(report)
    return report


def request_outcomes(rankings: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """One row per served request: its user, variant, clicks and orders (from the event log)."""
    per = rankings[["request_id", "user_id", "variant", "model", "took_ms"]].copy()
    per["shown"] = rankings["items"].map(len)
    counts: dict[str, dict[str, int]] = defaultdict(
        lambda: {"impression": 0, "click": 0, "order": 0}
    )
    if len(events):
        dedup = events.drop_duplicates(["type", "request_id", "item_id"])
        sizes = dedup.groupby(["request_id", "type"]).size()
        for rid, kind, n in zip(
            sizes.index.get_level_values(0),
            sizes.index.get_level_values(1),
            sizes.to_numpy(),
            strict=True,
        ):
            counts[str(rid)][str(kind)] = int(n)
    per["impressions"] = [
        counts[r]["impression"] or s for r, s in zip(per["request_id"], per["shown"], strict=True)
    ]
    per["clicks"] = [counts[r]["click"] for r in per["request_id"]]
    per["orders"] = [counts[r]["order"] for r in per["request_id"]]
    per["one"] = 1
    return per.reset_index(drop=True)


def _user_totals(df: pd.DataFrame, num: str, den: str) -> tuple[np.ndarray, np.ndarray]:
    g = df.groupby("user_id")[[num, den]].sum()
    return g[num].to_numpy(np.float64), g[den].to_numpy(np.float64)


def _lift(base: pd.DataFrame, treat: pd.DataFrame, num: str, den: str) -> Lift:
    return relative_lift(
        ratio(*_user_totals(base, num, den)), ratio(*_user_totals(treat, num, den))
    )


def _variant_summary(df: pd.DataFrame) -> dict[str, Any]:
    def est(num: str, den: str) -> dict[str, Any]:
        r = ratio(*_user_totals(df, num, den))
        half = 1.959963984540054 * np.sqrt(r.var) if r.var == r.var else float("nan")
        return {"value": r.value, "ci95": [r.value - half, r.value + half]}

    out: dict[str, Any] = {
        "users": int(df["user_id"].nunique()),
        "requests": len(df),
        "model": ",".join(sorted(df["model"].unique())),
        "ctr": est("clicks", "impressions"),
        "clicks_per_request": est("clicks", "one"),
        "orders_per_request": est("orders", "one"),
        "latency_ms": {
            "p50": float(np.percentile(df["took_ms"], 50)),
            "p99": float(np.percentile(df["took_ms"], 99)),
        },
    }
    if "oracle_ndcg@10" in df:
        v = df["oracle_ndcg@10"].to_numpy(np.float64)
        out["oracle_ndcg@10"] = est_mean(v, df["user_id"].to_numpy())
    return out


def est_mean(values: np.ndarray, users: np.ndarray) -> dict[str, Any]:
    """Mean over requests with a delta-method CI over users."""
    frame = pd.DataFrame({"u": users, "v": values, "n": 1.0})
    g = frame.groupby("u")[["v", "n"]].sum()
    r = ratio(g["v"].to_numpy(), g["n"].to_numpy())
    half = 1.959963984540054 * np.sqrt(r.var)
    return {"value": r.value, "ci95": [r.value - half, r.value + half]}


def _oracle_ndcg(rankings: pd.DataFrame, world_dir: Path) -> np.ndarray:
    """NDCG@10 of each served list against the world's true relevance of its candidates."""
    from pipelines.world.world import World

    world = World.load(world_dir)
    ctx = pd.json_normalize(rankings["context"].tolist())
    frame = pd.DataFrame(
        {
            "request_id": rankings["request_id"].to_numpy(),
            "user_id": rankings["user_id"].to_numpy(),
            "query": rankings["query"].to_numpy(),
            "lat": ctx["lat"].to_numpy(),
            "lon": ctx["lon"].to_numpy(),
            "ts": pd.to_datetime(rankings["t_us"].to_numpy(), unit="us", utc=True),
            "item_ids": rankings["candidates"].to_numpy(),
        }
    )
    s = world.searches_from_requests(frame)
    rel = world.relevance(s)
    out = np.empty(len(frame))
    for k, (cands, served) in enumerate(zip(frame["item_ids"], rankings["items"], strict=True)):
        pos = {c: j for j, c in enumerate(cands)}
        order = [pos[i] for i in served] + [
            j for j in range(len(cands)) if cands[j] not in set(served)
        ]
        scores = np.zeros(len(cands))
        scores[order] = -np.arange(len(cands), dtype=np.float64)
        out[k] = ndcg(scores[None], rel[k][None], mask=np.ones((1, len(cands)), bool), k=10)[0]
    return out


def _interleaving_report(
    per: pd.DataFrame,
    rankings: pd.DataFrame,
    events: pd.DataFrame,
    exp: dict[str, Any],
    world_dir: Path | None,
) -> dict[str, Any]:
    a, b = (v["name"] for v in exp["variants"])
    clicked: dict[str, set[str]] = defaultdict(set)
    if len(events):
        for rid, item in events[events["type"] == "click"][["request_id", "item_id"]].itertuples(
            index=False
        ):
            clicked[str(rid)].add(str(item))
    wins_a = wins_b = ties = 0
    for rid, items, teams in rankings[["request_id", "items", "teams"]].itertuples(index=False):
        if not teams:
            continue
        ca = sum(1 for i, t in zip(items, teams, strict=True) if t == a and i in clicked[rid])
        cb = sum(1 for i, t in zip(items, teams, strict=True) if t == b and i in clicked[rid])
        if ca > cb:
            wins_a += 1
        elif cb > ca:
            wins_b += 1
        elif ca:
            ties += 1
    pref = interleaving_preference(wins_a, wins_b, ties)
    report = {
        "kind": "interleaving",
        "experiment": exp,
        "a": a,
        "b": b,
        "requests": len(per),
        "users": int(per["user_id"].nunique()),
        "preference": pref.__dict__,
        "interference": INTERFERENCE,
        "latency_ms": {
            "p50": float(np.percentile(per["took_ms"], 50)),
            "p99": float(np.percentile(per["took_ms"], 99)),
        },
    }
    if pref.p_value == pref.p_value:
        outcome = (
            f"{b} preferred"
            if pref.ci95[0] > 0.5
            else f"{a} preferred"
            if pref.ci95[1] < 0.5
            else "no significant preference"
        )
        report["verdict"] = (
            f"interleaving {b} vs {a}: {b} wins {pref.share_b:.1%} of decided requests "
            f"(95% CI [{pref.ci95[0]:.1%}, {pref.ci95[1]:.1%}], p={pref.p_value:.3g}, "
            f"{wins_a + wins_b} decided): {outcome}"
        )
    else:
        report["verdict"] = "interleaving: no request with a click yet"
    return report


def _verdict(report: dict[str, Any]) -> str:
    lines = []
    for v, lifts in report["lifts"].items():
        lf = lifts[PRIMARY]
        if lf["lift"] != lf["lift"]:
            lines.append(f"{v} vs {report['control']}: not enough data")
            continue
        lo, hi = lf["ci95"]
        if lo > 0:
            outcome = "better"
        elif hi < 0:
            outcome = "worse"
        else:
            outcome = (
                f"no significant difference (underpowered: this traffic detects only lifts beyond "
                f"±{lf['mde']:.1%})"
            )
        lines.append(
            f"{v} vs {report['control']} on orders per request: {lf['lift']:+.1%} "
            f"(95% CI [{lo:+.1%}, {hi:+.1%}], p={lf['p_value']:.3g}): {outcome}"
        )
    srm = report.get("srm")
    if srm and srm["alarm"]:
        p = srm["p_value"]
        lines.append(
            f"SAMPLE RATIO MISMATCH (p={p:.2g}): the split is broken, do not trust the lift"
        )
    return "; ".join(lines) or "no variant to compare"
