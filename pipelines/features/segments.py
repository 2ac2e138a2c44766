"""Operations over candidates grouped by request (segments given by offsets).

The list operations are compiled loops over one request at a time (see ``jit``): ranks were
about 40 numpy calls, 0.4 ms of a 0.9 ms featurisation of one request, before they were.
``tests/pipelines/test_segments.py`` checks them against independent references.
"""

from __future__ import annotations

import numpy as np

from pipelines.features.jit import jit as _jit

NO_LABELS = np.zeros(0, np.int64)  # "no group labels": ranks among the whole request


def segment_ids(offsets: np.ndarray) -> np.ndarray:
    """(N,) request index of each candidate."""
    if len(offsets) == 2:  # one request (the live path): all zeros, without repeat's 5 us
        return np.zeros(int(offsets[1] - offsets[0]), np.int64)
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


@_jit
def _rank_members(v: np.ndarray, members: np.ndarray, out: np.ndarray, order: np.ndarray) -> None:
    """out[m] = ascending rank pct of v[m] among ``members``: ties averaged, divided by
    (size - 1), 0.5 for a member alone. NaN sorts last and ties with nothing. ``order``:
    scratch room for the sorted members."""
    size = len(members)
    if size == 1:
        out[members[0]] = 0.5
        return
    if size <= 32:  # insertion sort in place: a request's groups are small, and allocating
        for j in range(size):  # an argsort per group per column cost more than sorting
            m = members[j]
            i = j
            while i > 0 and _before(v[m], v[order[i - 1]]):
                order[i] = order[i - 1]
                i -= 1
            order[i] = m
    else:  # ties are averaged: stability is irrelevant
        order[:size] = members[np.argsort(v[members])]
    j = 0
    while j < size:
        end = j  # the run of values equal to v[order[j]] is j..end
        while end + 1 < size and v[order[end + 1]] == v[order[j]]:
            end += 1
        pct = (j + end) / 2 / (size - 1)
        for r in range(j, end + 1):
            out[order[r]] = pct
        j = end + 1


@_jit
def _before(a: float, b: float) -> bool:
    """a sorts strictly before b, NaN last (numpy's order)."""
    return a < b or (np.isnan(b) and not np.isnan(a))


@_jit
def _group_runs(labels: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows lo..hi ordered by label (stable), and the start of each label's run (+ the end)."""
    rows = lo + np.argsort(labels[lo:hi], kind="mergesort")
    starts = [0]
    for j in range(1, hi - lo):
        if labels[rows[j]] != labels[rows[j - 1]]:
            starts.append(j)
    starts.append(hi - lo)
    return rows, np.array(starts, np.int64)


@_jit
def _rank_pct(x: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> np.ndarray:
    n, k = x.shape
    out = np.empty((n, k))
    order = np.empty(n, np.int64)
    for b in range(len(offsets) - 1):
        lo, hi = offsets[b], offsets[b + 1]
        if hi == lo:
            continue
        if len(labels) == 0:
            rows, starts = np.arange(lo, hi), np.array([0, hi - lo])
        else:
            rows, starts = _group_runs(labels, lo, hi)
        for g in range(len(starts) - 1):
            members = rows[starts[g] : starts[g + 1]]
            for c in range(k):
                _rank_members(x[:, c], members, out[:, c], order)
    return out


def rank_pct(x: np.ndarray, offsets: np.ndarray, sub: np.ndarray | None = None) -> np.ndarray:
    """Ascending rank of each column of ``x`` among its request's candidates, in [0, 1].

    x: (N, K) values (or (N,)); ranks are averaged over ties and divided by (group size - 1);
    a group of one gets 0.5. With ``sub`` (an integer label per candidate, e.g. its category)
    the rank is among the candidates of the same request with the same label.
    """
    xs = np.asarray(x, np.float64)
    one_col = xs.ndim == 1
    xs = xs.reshape(len(xs), -1)  # (N, K)
    labels = NO_LABELS if sub is None else np.asarray(sub, np.int64)
    out = _rank_pct(xs, np.asarray(offsets, np.int64), labels)
    return out[:, 0] if one_col else out


@_jit
def _zscore(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    n, k = x.shape
    out = np.empty((n, k))
    for b in range(len(offsets) - 1):
        lo, hi = offsets[b], offsets[b + 1]
        cnt = float(max(hi - lo, 1))
        for c in range(k):
            s = 0.0
            sq = 0.0
            for i in range(lo, hi):  # row order, as bincount adds
                s += x[i, c]
                sq += x[i, c] * x[i, c]
            mean = s / cnt
            sd = np.sqrt(max(sq / cnt - mean * mean, 0.0))
            # A spread below float32 resolution of the values is no spread.
            flat = sd <= 1e-6 * max(1.0, abs(mean))
            for i in range(lo, hi):
                out[i, c] = 0.0 if flat else (x[i, c] - mean) / sd
    return out


def zscore(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Z-score (population std) of each column of ``x`` (N,) or (N, K) within its request."""
    xs = np.asarray(x, np.float64)
    out = _zscore(xs.reshape(len(xs), -1), np.asarray(offsets, np.int64))
    return out[:, 0] if xs.ndim == 1 else out


@_jit
def _better(score: np.ndarray, tiebreak: np.ndarray, a: int, b: int) -> bool:
    """Is candidate a ranked before b: higher score (NaN last), then smaller tiebreak, then
    the earlier row."""
    na, nb = np.isnan(score[a]), np.isnan(score[b])
    if na != nb:
        return nb
    if not na and score[a] != score[b]:
        return score[a] > score[b]
    if tiebreak[a] != tiebreak[b]:
        return tiebreak[a] < tiebreak[b]
    return a < b


@_jit
def _best_other_in(
    score: np.ndarray, tiebreak: np.ndarray, members: np.ndarray, out: np.ndarray
) -> None:
    best, second = -1, -1
    for m in members:
        if best < 0 or _better(score, tiebreak, m, best):
            best, second = m, best
        elif second < 0 or _better(score, tiebreak, m, second):
            second = m
    for m in members:
        out[m] = second if m == best else best


@_jit
def _group_stats(
    offsets: np.ndarray, labels: np.ndarray, score: np.ndarray, tiebreak: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: the size of its (request, label) group, and the row of the best-scoring
    other member (-1 alone, or when ``score`` is empty)."""
    n = len(labels)
    size = np.zeros(n, np.int64)
    other = np.full(n, -1, np.int64)
    for b in range(len(offsets) - 1):
        lo, hi = offsets[b], offsets[b + 1]
        if hi == lo:
            continue
        rows, starts = _group_runs(labels, lo, hi)
        for g in range(len(starts) - 1):
            members = rows[starts[g] : starts[g + 1]]  # in row order: the sort is stable
            size[members] = len(members)
            if len(score):
                _best_other_in(score, tiebreak, members, other)
    return size, other


def group_size_and_best_other(
    offsets: np.ndarray,
    labels: np.ndarray,
    score: np.ndarray | None = None,
    tiebreak: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) size of each candidate's group (same request, same label), and (N,) the row of the
    best other member of its group by ``score`` (highest; ties: smallest ``tiebreak``, a stable
    item key, so the answer does not depend on the candidates' order), -1 when it is alone
    or no score is given."""
    s = np.zeros(0) if score is None else np.asarray(score, np.float64)
    t = np.zeros(len(s), np.int64) if tiebreak is None else np.asarray(tiebreak, np.int64)
    return _group_stats(np.asarray(offsets, np.int64), np.asarray(labels, np.int64), s, t)


def best_other(score: np.ndarray, tiebreak: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Index of the best-scoring OTHER member of each candidate's group; -1 if it is alone."""
    offsets = np.array([0, len(score)], np.int64)
    return group_size_and_best_other(offsets, group, score, tiebreak)[1]
