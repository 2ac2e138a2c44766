"""Vectorised operations over candidates grouped by request (segments given by offsets)."""

from __future__ import annotations

import numpy as np


def segment_ids(offsets: np.ndarray) -> np.ndarray:
    """(N,) request index of each candidate."""
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def seg_mean_std(x: np.ndarray, seg: np.ndarray, n_seg: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-candidate mean and population std of each column of ``x`` (N,) or (N, K) within
    its segment.

    The sums run over the candidates in row order (``bincount`` adds sequentially), column by
    column alike whether ``x`` has one column or K: one request or a day of them, the same
    bits. K columns go through one flat ``bincount``, not K.
    """
    one_col = x.ndim == 1
    xd = x.astype(np.float64).reshape(len(x), -1)  # (N, K)
    k = xd.shape[1]
    cnt = np.maximum(np.bincount(seg, minlength=n_seg), 1).astype(np.float64)[:, None]  # (S, 1)
    cell = (seg[:, None] * k + np.arange(k)).reshape(-1)  # (N * K,) segment-major cell ids
    size = n_seg * k
    mean = np.bincount(cell, weights=xd.reshape(-1), minlength=size).reshape(n_seg, k) / cnt
    sq = np.bincount(cell, weights=(xd * xd).reshape(-1), minlength=size).reshape(n_seg, k)
    var = sq / cnt - mean**2
    m, sd = mean[seg], np.sqrt(np.maximum(var, 0.0))[seg]  # (N, K)
    return (m[:, 0], sd[:, 0]) if one_col else (m, sd)


def zscore(x: np.ndarray, seg: np.ndarray, n_seg: int) -> np.ndarray:
    """Z-score of each column of ``x`` (N,) or (N, K) within its segment."""
    mean, sd = seg_mean_std(x, seg, n_seg)
    # A spread below float32 resolution of the values is no spread.
    flat = sd <= 1e-6 * np.maximum(1.0, np.abs(mean))
    return np.where(flat, 0.0, (x - mean) / np.where(flat, 1.0, sd))


def rank_pct(x: np.ndarray, offsets: np.ndarray, sub: np.ndarray | None = None) -> np.ndarray:
    """Ascending rank of each column of ``x`` among its request's candidates, in [0, 1].

    x: (N, K) values (or (N,)); ranks are averaged over ties and divided by (group size - 1);
    a group of one gets 0.5. With ``sub`` (an integer label per candidate, e.g. its category;
    (N,) or one label column per value column, (N, K)) the rank is among the candidates of
    the same request with the same label.

    Requests are sorted row by row in a (b, K, L) array, b requests of similar length at a
    time: short contiguous sorts and little padding, much cheaper than one global sort.
    """
    one_col = x.ndim == 1
    xs = x[:, None] if one_col else x
    if sub is not None and sub.ndim == 1:
        sub = np.broadcast_to(sub[:, None], xs.shape)
    if len(offsets) == 2:  # one request (the live path): one block, no padding
        v = np.ascontiguousarray(xs.T)[None]  # (1, K, L)
        g = None if sub is None else np.ascontiguousarray(sub.T)[None]  # (1, K, L)
        order, pct = _row_ranks(v, g)  # (1, K, L)
        one = np.empty(v.shape[1:])  # (K, L)
        one[np.arange(len(one))[:, None], order[0]] = pct[0]
        return one[0] if one_col else one.T
    out = np.empty(xs.shape)
    lens = np.diff(offsets)
    by_len = np.argsort(lens, kind="stable")
    for lo in range(0, len(by_len), _ROWS):
        reqs = by_len[lo : lo + _ROWS]
        width = int(lens[reqs].max())
        if width == 0:
            continue
        j = np.arange(width)
        real = j[None, :] < lens[reqs, None]  # (b, L)
        idx = np.where(real, offsets[reqs, None] + j[None, :], 0)  # (b, L) candidate rows
        v = np.ascontiguousarray(xs[idx].transpose(0, 2, 1))  # (b, K, L)
        v[~np.broadcast_to(real[:, None, :], v.shape)] = np.inf  # padding sorts last
        g = None
        if sub is not None:
            g = np.ascontiguousarray(sub[idx].transpose(0, 2, 1))  # (b, K, L)
            g[~np.broadcast_to(real[:, None, :], g.shape)] = np.iinfo(np.int64).max
        order, pct = _row_ranks(v, g)  # (b, K, L)
        rows = np.take_along_axis(np.broadcast_to(idx[:, None, :], v.shape), order, axis=2)
        keep = np.take_along_axis(np.broadcast_to(real[:, None, :], v.shape), order, axis=2)
        col = np.broadcast_to(np.arange(v.shape[1])[None, :, None], v.shape)
        out[rows[keep], col[keep]] = pct[keep]
    return out[:, 0] if one_col else out


_ROWS = 4096  # requests per sorted block


def _row_ranks(v: np.ndarray, g: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Sort v (b, K, L) along L by (g, v); the order and each sorted entry's rank pct.

    g: (b, K, L) group labels or None. Ties in v are averaged, so the first sort need not be
    stable; the sort by group must be, to keep the value order inside each group. The work is
    done on (b * K, L) rows with plain fancy indexing: ``take_along_axis`` builds its index
    arrays in Python on every call, which at one request is most of the cost.
    """
    shape = v.shape
    width = shape[2]
    v2 = v.reshape(-1, width)  # (R, L), R = b * K
    row = np.arange(len(v2))[:, None]  # (R, 1)
    order = np.argsort(v2, axis=1)  # (R, L)
    g2 = None if g is None else np.broadcast_to(g, shape).reshape(-1, width)  # (R, L)
    if g2 is not None:
        by_g = np.argsort(g2[row, order], axis=1, kind="stable")
        order = order[row, by_g]
    vs = v2[row, order]  # (R, L) sorted values
    pos = np.arange(width)
    new_group = np.ones(vs.shape, bool)
    if g2 is not None:
        gs = g2[row, order]
        np.not_equal(gs[:, 1:], gs[:, :-1], out=new_group[:, 1:])
    else:  # padding (inf) is a group of its own
        new_group[:, 1:] = np.isinf(vs[:, 1:]) & ~np.isinf(vs[:, :-1])
    new_run = new_group.copy()
    new_run[:, 1:] |= vs[:, 1:] != vs[:, :-1]
    g_start = np.maximum.accumulate(np.where(new_group, pos, 0), axis=1)
    r_start = np.maximum.accumulate(np.where(new_run, pos, 0), axis=1)
    size = _last_index(new_group, pos) - g_start + 1
    avg = (r_start + _last_index(new_run, pos)) / 2 - g_start
    pct = np.where(size > 1, avg / np.maximum(size - 1, 1), 0.5)
    return order.reshape(shape), pct.reshape(shape)


def _last_index(new_run: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """For each position along the last axis, the index of the last entry of its run."""
    width = new_run.shape[-1]
    ends = np.ones(new_run.shape, bool)
    ends[..., :-1] = new_run[..., 1:]
    marked = np.where(ends, pos, width)
    return np.minimum.accumulate(marked[..., ::-1], axis=-1)[..., ::-1]


def group_labels(seg: np.ndarray, sub: np.ndarray) -> np.ndarray:
    """Dense integer label per distinct (request, sub-label) pair; both non-negative ints."""
    if len(seg) == 0:
        return np.zeros(0, np.int64)
    key = seg.astype(np.int64) * (int(sub.max()) + 1) + sub.astype(np.int64)
    _, inv = np.unique(key, return_inverse=True)
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
