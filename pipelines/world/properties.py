"""Measurements of what makes the world worth ranking in.

Each function measures one documented property on a world and (where needed) its logs; the
tests run them on a small world, ``benchmarks/world_properties.py`` on a large one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.world.clicks import respond_batch
from pipelines.world.searches import Searches
from pipelines.world.world import World


def dcg_at(gains_in_order: np.ndarray, k: int) -> float:
    g = gains_in_order[:k]
    return float(np.sum((np.exp2(g) - 1.0) / np.log2(np.arange(2, len(g) + 2))))


def oracle_ndcg_at(rel_in_order: np.ndarray, k: int = 10) -> float:
    """NDCG@k of a displayed order against true relevance (gain 2^rel - 1)."""
    ideal = dcg_at(np.sort(rel_in_order)[::-1], k)
    return dcg_at(rel_in_order, k) / ideal if ideal > 0 else 0.0


def policy_oracle_ndcg(world: World, s: Searches, rng: np.random.Generator, k: int = 10) -> float:
    """Mean oracle NDCG@k of the logging policy (without randomisation) on searches ``s``."""
    rel = world.relevance(s)
    orders = world.policy.rank(s, rng, np.zeros(len(s), dtype=bool))
    return float(np.mean([oracle_ndcg_at(r[o], k) for r, o in zip(rel, orders, strict=True)]))


def position_bias_ratio(
    world: World, s: Searches, rng: np.random.Generator, reps: int = 200, low: int = 10
) -> float:
    """CTR of an item shown at position 1 over the same item shown at position ``low``.

    For each search, one random candidate is put at the top, or at ``low`` with the policy's
    order around it; the same item has the same true relevance in both lists, so the ratio
    isolates position. Clicks are drawn ``reps`` times per list.
    """
    keep = np.array([len(c) >= low for c in s.candidates])
    s = s.take(np.flatnonzero(keep))
    rel = world.relevance(s)
    orders = world.policy.rank(s, rng, np.zeros(len(s), dtype=bool))
    clicks = {1: 0.0, low: 0.0}
    for r, o in zip(rel, orders, strict=True):
        target = int(rng.integers(len(o)))
        rest = [i for i in o if i != target]
        for pos in (1, low):
            shown = np.array([*rest[: pos - 1], target, *rest[pos - 1 :]])
            rs = np.broadcast_to(r[shown], (reps, len(shown)))
            u = rng.random((reps, 5, len(shown)))
            resp = respond_batch(rs, np.ones(rs.shape, dtype=bool), u, world.cfg.clicks)
            clicks[pos] += resp.clicked[:, pos - 1].sum()
    return clicks[1] / max(clicks[low], 1.0)


def best_item_disagreement(
    world: World, s: Searches, rng: np.random.Generator, n_users: int = 20
) -> np.ndarray:
    """Per search: the chance that two random users disagree on the best candidate.

    Query, place, time and candidate set stay fixed; only the user changes.
    """
    out = []
    for k in range(len(s)):
        one = s.take(np.full(n_users, k))
        one.user = rng.choice(len(world.users), size=n_users, replace=False)
        best = np.array([int(np.argmax(r)) for r in world.relevance(one)])
        _, counts = np.unique(best, return_counts=True)
        p = counts / n_users
        out.append(1.0 - float(np.sum(p * p)))
    return np.array(out)


def history_auc(logs: Path, min_day: int = 3) -> float:
    """AUC of a category-affinity score from past clicks for the next day's clicks.

    Score of an impression on day d: the share of the user's clicks before day d that fell in
    the item's category (0 without history). Positives: clicked impressions. Pooled over days.
    """
    from sklearn.metrics import roc_auc_score

    req = pd.read_parquet(logs / "requests.parquet", columns=["request_id", "ts", "user_id"])
    imp = pd.read_parquet(
        logs / "impressions.parquet", columns=["request_id", "item_id", "clicked"]
    )
    items = pd.read_parquet(logs / "items.parquet", columns=["item_id", "category"])
    df = imp.merge(req, on="request_id").merge(items, on="item_id")
    day = (df["ts"] - df["ts"].min()).dt.days
    df["day"] = day
    scores, labels = [], []
    for d in range(min_day, int(day.max()) + 1):
        past = df[(df["day"] < d) & df["clicked"]]
        per_cat = past.groupby(["user_id", "category"]).size().rename("n_cat").reset_index()
        total = past.groupby("user_id").size().rename("n_all").reset_index()
        today = df[df["day"] == d].merge(per_cat, on=["user_id", "category"], how="left")
        today = today.merge(total, on="user_id", how="left")
        scores.append((today["n_cat"].fillna(0) / today["n_all"].fillna(1)).to_numpy())
        labels.append(today["clicked"].to_numpy())
    return float(roc_auc_score(np.concatenate(labels), np.concatenate(scores)))


def list_effect_share(truth: pd.DataFrame) -> float:
    """Share of the within-request variance of relevance that the list-context terms explain.

    Pooled within-request variance of (relevance - relevance_no_list), over that of relevance.
    """
    g = truth.groupby("request_id", sort=False)
    rel = truth["relevance"].to_numpy(np.float64)
    delta = rel - truth["relevance_no_list"].to_numpy(np.float64)
    within_rel = rel - g["relevance"].transform("mean").to_numpy(np.float64)
    d_mean = pd.Series(delta).groupby(truth["request_id"].to_numpy()).transform("mean").to_numpy()
    within_delta = delta - d_mean
    return float(np.sum(within_delta**2) / np.sum(within_rel**2))
