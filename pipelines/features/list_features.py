"""List features: each candidate compared with the other candidates of its request.

These are what a strong LightGBM baseline needs to see the list context a pointwise model
otherwise misses; the Transformer gets them too, so the comparison is about the model.
"""

from __future__ import annotations

import numpy as np

from pipelines.features.config import FeatureConfig
from pipelines.features.items import ItemRefs, ItemTable
from pipelines.features.segments import best_other, count_in_group, group_labels, rank_pct, zscore
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
    b = len(lens)
    f["list_len"] = lens[seg].astype(np.float64)
    compare = cfg.list.compare
    if compare:
        x = np.stack([f[c] for c in compare], axis=1)  # (N, K)
        k = len(compare)
        if group is not None:  # ranks in the list and in the group, in one call
            labels = np.concatenate(
                [
                    np.zeros((len(x), k), np.int64),
                    np.repeat(group.astype(np.int64)[:, None], k, axis=1),
                ],
                axis=1,
            )
            ranks = rank_pct(np.concatenate([x, x], axis=1), offsets, labels)
        else:
            ranks = rank_pct(x, offsets)
        z = zscore(x, seg, b)  # (N, K)
        for j, c in enumerate(compare):
            f[f"{c}_rank"] = ranks[:, j]
            f[f"{c}_z"] = z[:, j]
            if group is not None:
                f[f"{c}_group_rank"] = ranks[:, k + j]
    if group is None:
        return
    seg_group = group_labels(seg, group)
    size = count_in_group(seg_group).astype(np.float64)
    f["group_count"] = size
    f["group_share"] = size / lens[seg]
    if "rating" in f:
        tiebreak = refs.hashes.view(np.int64)  # a stable item key: order-independent ties
        other = best_other(f["rating"], tiebreak, seg_group)
        has = other >= 0
        safe = np.maximum(other, 0)
        f["best_rated_gap"] = np.where(has, f["rating"][safe] - f["rating"], 0.0)
        f["is_best_rated"] = np.where(
            has, (f["rating"] >= f["rating"][safe]).astype(np.float64), 1.0
        )
        if items.sim_text is not None:
            toks = items.take("sim_text", refs.rows)
            f["best_rated_similarity"] = np.where(has, jaccard(toks, toks[safe]), 0.0)
