"""``ranker evaluate``: models side by side on the same held-out lists.

One primary metric is declared before anything is computed: oracle NDCG@10 when the simulated
world's truth is available (found through the dataset's manifest, or ``--world``), NDCG@10 on
the logged labels otherwise. The verdict follows the primary metric alone; every other number
is secondary. Each metric comes with a 95% cluster-bootstrap interval (users, or requests when
the data has no users); each pair of models with a paired difference, its interval and the
p-value of a named paired test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.lists.io import read_split
from pipelines.lists.manifest import Manifest
from pipelines.lists.table import Lists
from ranker.data import mask_of, to_padded
from ranker.evaluate.seeds import expand_seeds, seed_groups, seed_verdict, spread
from ranker.evaluate.segments import differences, segment_labels, segment_table
from ranker.evaluate.stats import Clusters, mean_ci, paired_difference, weighted_mean_ci
from ranker.metrics import EMPTY_RULES, apply_empty_rule, auc, average_precision, mrr, ndcg
from ranker.scoring import load

log = logging.getLogger(__name__)
K_RANGE = range(1, 21)  # NDCG@k for k = 1..20: exploratory
PRIMARY_RULE = (
    "oracle NDCG@10 when the world's truth is known, else NDCG@10 on the logged labels; "
    "fixed before any model is scored"
)


@dataclass
class EvalRequest:
    data: Path
    models: list[str]  # registry references
    world: Path | None = None
    empty_lists: str = "exclude"
    split: str = "test"
    n_boot: int = 1000
    seed: int = 0
    seeds: int = 1  # > 1: each model name stands for its latest `seeds` versions (training seeds)


@dataclass
class Scored:
    name: str
    scores: np.ndarray  # (N,)
    info: dict[str, Any] = field(default_factory=dict)


def evaluate(req: EvalRequest) -> dict[str, Any]:
    if req.empty_lists not in EMPTY_RULES:
        raise ValueError(f"--empty-lists must be one of {EMPTY_RULES}")
    m = Manifest.load(req.data)
    lists = read_split(req.data, req.split, m)
    if len(lists) == 0:
        raise ValueError(f"{req.data}: the {req.split} split is empty")
    refs = expand_seeds(req.models, req.seeds) if req.seeds > 1 else req.models
    scored = _score_models(refs, lists, m)
    if lists.positions is not None:
        scored.append(
            Scored(
                "logged",
                -lists.positions.astype(np.float64),
                {"what": "the logging policy's order"},
            )
        )
    world = req.world or (Path(m.source["world"]) if m.source.get("world") else None)
    truth = world_truth(world, lists) if world is not None else None
    primary = "oracle_ndcg@10" if truth is not None else "ndcg@10"

    users = lists.user_id if lists.user_id is not None else lists.request_id
    cl = Clusters.of(users, n_boot=req.n_boot, seed=req.seed)
    mask = mask_of(lists.offsets)
    labels = to_padded(lists.labels, lists.offsets)
    per_request: dict[str, dict[str, np.ndarray]] = {}
    empties: dict[str, int] = {}
    metrics: dict[str, dict[str, Any]] = {}
    for s in scored:
        pr = _per_request(
            to_padded(s.scores, lists.offsets), labels, mask, req.empty_lists, empties
        )
        if truth is not None:
            rel = to_padded(truth, lists.offsets)
            pr["oracle_ndcg@10"] = ndcg(to_padded(s.scores, lists.offsets), rel, mask=mask, k=10)
        per_request[s.name] = pr
        metrics[s.name] = {k: mean_ci(v, cl).to_dict() for k, v in pr.items()}
        g_val, g_w = _per_user_auc(s.scores, lists, cl)
        metrics[s.name]["gauc"] = weighted_mean_ci(g_val, g_w, cl).to_dict()
    if truth is not None:
        metrics["oracle"] = {"oracle_ndcg@10": {"value": 1.0, "ci95": [1.0, 1.0], "n": len(lists)}}

    names = [s.name for s in scored]
    comparisons = []
    for a, b in combinations(names, 2):
        for metric in per_request[a]:
            if metric.startswith("ndcg@") and metric != "ndcg@10":
                continue  # the k sweep is exploratory: no tests
            d = paired_difference(per_request[b][metric], per_request[a][metric], cl)
            comparisons.append({"a": b, "b": a, "metric": metric, **d.to_dict()})
    report: dict[str, Any] = {
        "primary": primary,
        "primary_declared": PRIMARY_RULE,
        "empty_lists": req.empty_lists,
        "empty_lists_count": empties,
        "split": req.split,
        "requests": len(lists),
        "candidates": lists.n_items,
        "users": cl.n if lists.user_id is not None else None,
        "bootstrap": {
            "resamples": req.n_boot,
            "seed": req.seed,
            "unit": "user" if lists.user_id is not None else "request",
        },
        "data": {
            "path": str(req.data),
            "fingerprint": m.fingerprint,
            "world": str(world) if truth is not None else None,
        },
        "models": {s.name: s.info for s in scored},
        "metrics": metrics,
        "comparisons": comparisons,
        "exploratory": {
            "ndcg@k": {
                s.name: {k: metrics[s.name][f"ndcg@{k}"]["value"] for k in K_RANGE} for s in scored
            }
        },
    }
    if truth is not None and "logged" in metrics:
        report["gap_closed"] = _gap_closed(per_request, cl)
    models = [s for s in scored if s.name != "logged"]
    report["verdict"] = verdict(report, [s.name for s in models])
    if req.seeds > 1:  # the verdict between models, each over its training seeds
        groups = seed_groups([s.name for s in models], [s.info["name"] for s in models])
        report["seed_spread"] = spread(report, groups)
        report["verdict_per_model"] = report["verdict"]
        report["verdict"] = seed_verdict(report, groups, comparison_of)
    # Exploratory views: where differences come from (no verdict from them).
    compared = [s.name for s in scored if s.name != "logged"] or [s.name for s in scored]
    segments = segment_labels(lists, m, req.data)
    report["segments"] = {
        "metric": primary,
        "note": "exploratory: no verdict from segments",
        "by": segment_table(
            segments, per_request, np.asarray(users, dtype=str), compared, primary, req.seed
        ),
    }
    report["per_request_differences"] = {
        "metric": primary,
        **differences(per_request, compared, primary),
    }
    return report


def _score_models(refs: list[str], lists: Lists, m: Manifest) -> list[Scored]:
    loaded = [load(r) for r in refs]
    names = [lm.ref.name for lm in loaded]
    out = []
    for lm in loaded:
        name = lm.ref.name if names.count(lm.ref.name) == 1 else str(lm.ref)
        log.info("scoring %s on %d lists", lm.ref, len(lists))
        info = {
            "ref": str(lm.ref),
            "name": lm.ref.name,
            "seed": lm.card.seed,
            "kind": lm.kind,
            "bias_correction": lm.card.bias_correction,
            "reranker": lm.card.reranker,
            "valid_ndcg@10": lm.card.valid_ndcg,
            "tuning_budget": lm.card.tuning.get("budget"),
        }
        out.append(Scored(name, lm.score(lists, m).astype(np.float64), info))
    return out


def _per_request(
    s: np.ndarray, y: np.ndarray, mask: np.ndarray, rule: str, empties: dict[str, int]
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k in K_RANGE:
        out[f"ndcg@{k}"] = ndcg(s, y, mask=mask, k=k)
    out["mrr"] = mrr(s, y, mask=mask)
    out["map"] = average_precision(s, y, mask=mask)
    out["auc"] = auc(s, y, mask=mask)
    for name in list(out):
        if name == "auc":
            continue  # one-class lists have no AUC under any rule
        values, n_empty = apply_empty_rule(out[name], rule=rule)
        if rule == "exclude":
            values = out[name]  # NaN marks the excluded lists; the estimators skip them
        out[name] = values
        empties[name] = n_empty
    return out


def _per_user_auc(scores: np.ndarray, lists: Lists, cl: Clusters) -> tuple[np.ndarray, np.ndarray]:
    """GAUC's parts per cluster (DIN): the AUC over all the user's candidates (ties count 1/2),
    and the user's number of impressions; NaN for users with one class only."""
    from scipy.stats import rankdata

    row_cluster = np.repeat(cl.index, lists.list_lengths())
    pos = lists.labels > 0
    values = np.full(cl.n, np.nan)
    weights = np.bincount(row_cluster, minlength=cl.n).astype(np.float64)
    order = np.argsort(row_cluster, kind="stable")
    bounds = np.searchsorted(row_cluster[order], np.arange(cl.n + 1))
    for u in range(cl.n):
        rows = order[bounds[u] : bounds[u + 1]]
        n_pos = int(pos[rows].sum())
        n_neg = len(rows) - n_pos
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = rankdata(scores[rows])
        values[u] = (ranks[pos[rows]].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return values, weights


def world_truth(world: Path, lists: Lists) -> np.ndarray | None:
    path = Path(world) / "truth.parquet"
    if not path.exists():
        log.warning("%s: no truth.parquet; no oracle metrics", world)
        return None
    t = pd.read_parquet(path, columns=["request_id", "item_id", "relevance"])
    idx = pd.MultiIndex.from_frame(t[["request_id", "item_id"]])
    rid = np.repeat(lists.request_id, lists.list_lengths())
    pos = idx.get_indexer(pd.MultiIndex.from_arrays([rid, lists.item_ids]))
    if (pos < 0).any():
        raise ValueError(f"{path}: {int((pos < 0).sum())} test candidates have no true relevance")
    return t["relevance"].to_numpy(np.float64)[pos]


def _gap_closed(per_request: dict[str, dict[str, np.ndarray]], cl: Clusters) -> dict[str, Any]:
    """Share of the logging policy's distance to the oracle that each model closes."""
    logged = per_request["logged"]["oracle_ndcg@10"]
    s_l, c = cl.sums(logged)
    out = {}
    for name, pr in per_request.items():
        if name == "logged":
            continue
        s_m, _ = cl.sums(np.where(np.isnan(logged), np.nan, pr["oracle_ndcg@10"]))
        value = (s_m.sum() - s_l.sum()) / (c.sum() - s_l.sum())
        boot = (cl.weights @ (s_m - s_l)) / (cl.weights @ (c - s_l))
        lo, hi = np.percentile(boot, [2.5, 97.5])
        out[name] = {"value": float(value), "ci95": [float(lo), float(hi)]}
    return out


def comparison_of(report: dict[str, Any], metric: str, model: str, base: str) -> dict[str, Any]:
    """``model`` minus ``base`` on ``metric``, read from the report's comparison of the pair
    (stored once, in either order): ``{"vs", "diff", "ci95", "p_value", "test"}``."""
    c = next(
        x
        for x in report["comparisons"]
        if x["metric"] == metric and {x["a"], x["b"]} == {model, base}
    )
    sign = 1 if c["a"] == model else -1
    lo, hi = sorted(sign * v for v in c["ci95"])
    return {
        "vs": base,
        "diff": sign * c["diff"],
        "ci95": [lo, hi],
        "p_value": c["p_value"],
        "test": c["test"],
    }


def verdict(report: dict[str, Any], models: list[str]) -> dict[str, Any]:
    """The primary metric's verdict: each model against the first (the baseline)."""
    primary = report["primary"]
    if len(models) < 2:
        return {
            "text": f"one model, no comparison: {primary} "
            f"{report['metrics'][models[0]][primary]['value']:.4f}"
            if models
            else "no model"
        }
    base = models[0]
    lines, outcomes = [], {}
    for other in models[1:]:
        d = comparison_of(report, primary, other, base)
        d.pop("test")
        diff, (lo, hi) = d["diff"], d["ci95"]
        if lo > 0:
            outcome = "better"
        elif hi < 0:
            outcome = "worse"
        else:
            outcome = "no significant difference"
        outcomes[other] = {**d, "outcome": outcome}
        lines.append(
            f"{other} vs {base} on {primary}: {diff:+.4f} "
            f"(95% CI [{lo:+.4f}, {hi:+.4f}], p={d['p_value']:.4g}): {outcome}"
        )
    return {"primary": primary, "baseline": base, "outcomes": outcomes, "text": "; ".join(lines)}
