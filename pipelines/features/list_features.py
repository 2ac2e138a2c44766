"""List features: each candidate compared with the other candidates of its request.

These are what a strong LightGBM baseline needs to see the list context a pointwise model
otherwise misses; the Transformer gets them too, so the comparison is about the model.
"""

from __future__ import annotations

import numpy as np

from pipelines.features.config import FeatureConfig
from pipelines.features.items import ItemRefs, ItemTable
from pipelines.features.segments import group_size_and_best_other, rank_pct, zscore
from pipelines.features.text import jaccard


def add_list_features(
    f: dict[str, np.ndarray],
    cfg: FeatureConfig,
    seg: np.ndarray,
    offsets: np.ndarray,
    group: np.ndarray | None,
    refs: ItemRefs,
    items: ItemTable,
) -> None:
    """Where each candidate stands among the request's candidates (rank, z-score, group)."""
    lens = np.diff(offsets)
    f["list_len"] = lens[seg].astype(np.float64)
    compare = cfg.list.compare
    if compare:
        x = np.stack([f[c] for c in compare], axis=1)  # (N, K)
        ranks = rank_pct(x, offsets)
        z = zscore(x, offsets)  # (N, K)
        group_ranks = rank_pct(x, offsets, group) if group is not None else None
        for j, c in enumerate(compare):
            f[f"{c}_rank"] = ranks[:, j]
            f[f"{c}_z"] = z[:, j]
            if group_ranks is not None:
                f[f"{c}_group_rank"] = group_ranks[:, j]
    if group is None:
        return
    rating = f.get("rating")
    tiebreak = refs.hashes.view(np.int64)  # a stable item key: order-independent ties
    size, other = group_size_and_best_other(offsets, group, rating, tiebreak)
    f["group_count"] = size.astype(np.float64)
    f["group_share"] = size / lens[seg]
    if rating is not None:
        has = other >= 0
        safe = np.maximum(other, 0)
        f["best_rated_gap"] = np.where(has, rating[safe] - rating, 0.0)
        f["is_best_rated"] = np.where(has, (rating >= rating[safe]).astype(np.float64), 1.0)
        if items.sim_text is not None:
            toks = items.take("sim_text", refs.rows)
            f["best_rated_similarity"] = np.where(has, jaccard(toks, toks[safe]), 0.0)
