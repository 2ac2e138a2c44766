"""Vectorised operations over candidates grouped by request (segments given by offsets)."""

from __future__ import annotations

import numpy as np


def segment_ids(offsets: np.ndarray) -> np.ndarray:
    """(N,) request index of each candidate."""
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def seg_mean_std(x: np.ndarray, seg: np.ndarray, n_seg: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-candidate mean and population std of ``x`` within its segment."""
    cnt = np.bincount(seg, minlength=n_seg).astype(np.float64)
    cnt = np.maximum(cnt, 1)
    xd = x.astype(np.float64)
    mean = np.bincount(seg, weights=xd, minlength=n_seg) / cnt
    var = np.bincount(seg, weights=xd * xd, minlength=n_seg) / cnt - mean**2
    return mean[seg], np.sqrt(np.maximum(var, 0.0))[seg]


def zscore(x: np.ndarray, seg: np.ndarray, n_seg: int) -> np.ndarray:
    mean, sd = seg_mean_std(x, seg, n_seg)
    # A spread below float32 resolution of the values is no spread.
    flat = sd <= 1e-6 * np.maximum(1.0, np.abs(mean))
    return np.where(flat, 0.0, (x - mean) / np.where(flat, 1.0, sd))


def rank_pct(x: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Ascending rank of ``x`` within its group, ties averaged, scaled to [0, 1].

    ``group`` is any integer label per candidate (a request, or a request and a category);
    a group of one gets 0.5.
    """
    n = len(x)
    if n == 0:
        return np.zeros(0)
    order = np.lexsort((x, group))
    g_sorted, x_sorted = group[order], x[order]
    new_group = np.r_[True, g_sorted[1:] != g_sorted[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    pos = np.arange(n) - group_start  # 0-based position within the group
    new_run = new_group | np.r_[True, x_sorted[1:] != x_sorted[:-1]]
    run = np.cumsum(new_run) - 1
    avg_pos = np.bincount(run, weights=pos) / np.bincount(run)
    size = np.bincount(np.cumsum(new_group) - 1)[np.cumsum(new_group) - 1]
    pct_sorted = np.where(size > 1, avg_pos[run] / np.maximum(size - 1, 1), 0.5)
    out = np.empty(n)
    out[order] = pct_sorted
    return out


def group_labels(*keys: np.ndarray) -> np.ndarray:
    """Dense integer label per distinct combination of the key arrays."""
    if len(keys[0]) == 0:
        return np.zeros(0, np.int64)
    stacked = np.stack([k.astype(np.int64) for k in keys], axis=1)
    _, inv = np.unique(stacked, axis=0, return_inverse=True)
    return inv.reshape(-1)


def count_in_group(group: np.ndarray) -> np.ndarray:
    """(N,) size of each candidate's group."""
    return np.bincount(group)[group] if len(group) else np.zeros(0, np.int64)


def best_other(score: np.ndarray, tiebreak: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Index of the best-scoring OTHER member of each candidate's group; -1 if it is alone.

    Best = highest ``score``, ties broken by the smallest ``tiebreak`` (a stable item key), so
    the answer does not depend on the order of the candidates.
    """
    n = len(score)
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((tiebreak, -score, group))  # best first within each group
    g_sorted = group[order]
    new_group = np.r_[True, g_sorted[1:] != g_sorted[:-1]]
    gid = np.cumsum(new_group) - 1
    first = np.flatnonzero(new_group)
    best = order[first]  # per group, the best member
    size = np.diff(np.r_[first, n])
    second = np.where(size > 1, order[np.minimum(first + 1, n - 1)], -1)
    g_of = np.empty(n, np.int64)
    g_of[order] = gid
    is_best = best[g_of] == np.arange(n)
    return np.where(is_best, second[g_of], best[g_of])
