"""Model inputs shared by training and serving, free of torch (the server does not load it).

- LightGBM sees one flat row per candidate: every numeric feature (the dataset's, then any
  extra inputs), then the categorical codes except the item id.
- The re-ranker's extra inputs: the baseline's score and its 1-based rank in the request.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipelines.lists.manifest import Manifest


def lgbm_columns(
    manifest: Manifest, extra_names: Sequence[str] = ()
) -> tuple[list[str], list[int], list[int]]:
    """(feature names, categorical columns kept (indices into ``cat``), their indices in X)."""
    names = manifest.numeric_names + list(extra_names)
    keep = [j for j, n in enumerate(manifest.categorical_names) if n != "item_id"]
    cat_names = [f"cat_{manifest.categorical_names[j]}" for j in keep]
    return names + cat_names, keep, list(range(len(names), len(names) + len(keep)))


def lgbm_matrix(num: np.ndarray, cat: np.ndarray, keep: list[int]) -> np.ndarray:
    """(N, F) float32: numeric columns, then the kept categorical codes."""
    return np.concatenate([num.astype(np.float32), cat[:, keep].astype(np.float32)], axis=1)


def baseline_inputs(scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(N, 2): the baseline's score and its 1-based rank within the request (ties: list order)."""
    out = np.empty((len(scores), 2), np.float32)
    out[:, 0] = scores
    for b in range(len(offsets) - 1):
        lo, hi = offsets[b], offsets[b + 1]
        order = np.argsort(-scores[lo:hi], kind="stable")
        ranks = np.empty(hi - lo, np.float32)
        ranks[order] = np.arange(1, hi - lo + 1)
        out[lo:hi, 1] = ranks
    return out
