"""Ranking metrics on padded batches of lists (numpy, float64 results).

Conventions
-----------
* Inputs are padded 2-D arrays of one shape (B, L): ``scores`` (float), ``labels`` (graded
  relevance >= 0, int or float: 0 none, 1 click, 2 order; or 0-4) and ``mask`` (bool, True for a
  real candidate). Padded slots may hold anything, NaN included: they are replaced before any
  arithmetic and never change a result.
* A candidate is *positive* when its label is > 0. NDCG uses the graded gain ``2**label - 1`` and
  the discount ``1 / log2(rank + 1)`` (rank 1 = top); MRR, AP and AUC use binary relevance.
* Per-list metrics return a (B,) float64 array with NaN where the metric is undefined for a list:
  no positive (NDCG, MRR, AP), no positive or no negative (AUC), or no real candidate at all.
  `apply_empty_rule` then excludes such lists or counts them as 0 or 1; reports state the rule.
* Ties (NDCG, MRR, AP) are broken *pessimistically*: among candidates with equal scores, those
  with lower labels are ranked first. The result is deterministic, independent of input order,
  and a constant scorer gets the worst value a tie allows instead of profiting from the order in
  which candidates arrived (often the logging policy's order). AUC counts a tied
  positive/negative pair as 1/2, the usual ROC convention.
* A real candidate whose score is NaN ranks below every other real candidate (as -inf); a
  real label that is negative or not finite raises ValueError.
* ``k`` cuts the ranking at rank k (``None``: the whole list); k larger than a list means the
  whole list.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "EMPTY_RULES",
    "apply_empty_rule",
    "auc",
    "average_precision",
    "gauc",
    "mrr",
    "ndcg",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]

EMPTY_RULES: tuple[str, ...] = ("exclude", "zero", "one")


# --------------------------------------------------------------------------------------------
# shared helpers


def _check_inputs(
    scores: npt.ArrayLike, labels: npt.ArrayLike, mask: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Validate and sanitise a batch: (B, L) scores, labels, mask -> float64, float64, bool.

    Padded scores become -inf and padded labels 0, so nothing downstream sees garbage; NaN scores
    of real candidates become -inf (ranked last).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if s.ndim != 2 or s.shape != y.shape or s.shape != m.shape:
        raise ValueError(
            "scores, labels and mask must be 2-D arrays of one shape (B, L); "
            f"got {s.shape}, {y.shape} and {m.shape}"
        )
    y = np.where(m, y, 0.0)
    if not np.all(np.isfinite(y) & (y >= 0.0)):
        raise ValueError("labels of real candidates (mask True) must be finite and >= 0")
    s = np.where(m & ~np.isnan(s), s, -np.inf)
    return s, y, m


def _cutoff(k: int | None, length: int) -> int:
    """The rank cut-off as an int: k itself, or the list length for k=None."""
    if k is None:
        return length
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive int or None, got {k!r}")
    return int(k)


def _pessimistic_order(s: FloatArray, y: FloatArray, m: BoolArray) -> IntArray:
    """(B, L) indices that sort each row: real first, score descending, then label ascending.

    np.lexsort sorts by its last key first; the label key is the pessimistic tie rule.
    """
    return np.lexsort((y, -s, ~m), axis=-1)


def _ranked_labels(s: FloatArray, y: FloatArray, m: BoolArray) -> FloatArray:
    """(B, L) labels in ranked order; padding (label 0) comes after every real candidate."""
    return np.take_along_axis(y, _pessimistic_order(s, y, m), axis=1)


def _discounts(length: int, cut: int) -> FloatArray:
    """(L,) DCG discounts 1 / log2(rank + 1), zero beyond the cut-off."""
    ranks = np.arange(1, length + 1, dtype=np.float64)
    return np.where(ranks <= cut, 1.0 / np.log2(ranks + 1.0), 0.0)


def _safe_ratio(num: FloatArray, den: FloatArray, defined: BoolArray) -> FloatArray:
    """num / den where defined, NaN elsewhere, without division warnings."""
    return np.where(defined, num / np.where(defined, den, 1.0), np.nan)


def _weighted_count(index: IntArray, weights: FloatArray, n: int) -> FloatArray:
    """(n,) sum of weights per index value (np.bincount, typed as float64)."""
    return np.asarray(np.bincount(index, weights=weights, minlength=n), dtype=np.float64)


def _grouped_auc(
    seg: IntArray, s: FloatArray, pos: BoolArray, n_seg: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """ROC AUC per segment of flat arrays sorted by (segment ascending, score descending).

    seg, s, pos: (N,) segment id in [0, n_seg), score, positive flag.
    Returns (auc, n_pos, n_neg), each (n_seg,); auc is NaN where a class is missing.

    Items are cut into tie blocks (equal segment and score). A positive beats every negative of
    its segment in later blocks and half-beats the negatives of its own block, so one cumulative
    count of negatives gives the Mann-Whitney statistic without a pairwise loop.
    """
    posf = pos.astype(np.float64)
    negf = 1.0 - posf
    n_pos = _weighted_count(seg, posf, n_seg)
    n_neg = _weighted_count(seg, negf, n_seg)
    if seg.size == 0:
        return np.full(n_seg, np.nan), n_pos, n_neg
    new_block = np.ones(seg.size, dtype=bool)
    new_block[1:] = (seg[1:] != seg[:-1]) | (s[1:] != s[:-1])
    block = np.cumsum(new_block) - 1
    block_seg = seg[new_block]
    n_blocks = block_seg.size
    pos_b = _weighted_count(block, posf, n_blocks)
    neg_b = _weighted_count(block, negf, n_blocks)
    # negatives of the same segment in this block or an earlier (higher-scored) one
    neg_in_earlier_segs = np.cumsum(n_neg) - n_neg
    neg_at_or_above = np.cumsum(neg_b) - neg_in_earlier_segs[block_seg]
    neg_below = n_neg[block_seg] - neg_at_or_above
    wins = _weighted_count(block_seg, pos_b * (neg_below + 0.5 * neg_b), n_seg)
    both = (n_pos > 0) & (n_neg > 0)
    return _safe_ratio(wins, n_pos * n_neg, both), n_pos, n_neg


# --------------------------------------------------------------------------------------------
# per-list metrics


def ndcg(
    scores: npt.ArrayLike, labels: npt.ArrayLike, *, mask: npt.ArrayLike, k: int | None = None
) -> FloatArray:
    """NDCG@k per list, gain 2**label - 1, discount 1 / log2(rank + 1), pessimistic ties.

    scores, labels, mask: (B, L). Returns (B,) float64; NaN where the ideal DCG is 0 (no
    positive label, or no real candidate). The ideal DCG@k comes from the labels alone.
    """
    s, y, m = _check_inputs(scores, labels, mask)
    length = s.shape[1]
    disc = _discounts(length, _cutoff(k, length))
    # exp2 - 1 rather than a lookup table: labels may be fractional (true relevance 0-4)
    dcg = (np.exp2(_ranked_labels(s, y, m)) - 1.0) @ disc
    ideal = (np.exp2(-np.sort(-y, axis=1)) - 1.0) @ disc
    return _safe_ratio(dcg, ideal, ideal > 0.0)


def mrr(
    scores: npt.ArrayLike, labels: npt.ArrayLike, *, mask: npt.ArrayLike, k: int | None = None
) -> FloatArray:
    """Reciprocal rank of the first positive (label > 0) per list, pessimistic ties.

    scores, labels, mask: (B, L). Returns (B,) float64: 1 / rank of the first positive, 0.0 if it
    ranks below k, NaN when the list has no positive.
    """
    s, y, m = _check_inputs(scores, labels, mask)
    batch, length = s.shape
    cut = _cutoff(k, length)
    if length == 0:  # argmax needs a non-empty axis
        return np.full(batch, np.nan)
    relevant = _ranked_labels(s, y, m) > 0.0
    first = relevant.argmax(axis=1)  # 0-based rank of the first positive (0 if none)
    rr = np.where(first < cut, 1.0 / (first + 1.0), 0.0)
    return np.where(relevant.any(axis=1), rr, np.nan)


def average_precision(
    scores: npt.ArrayLike, labels: npt.ArrayLike, *, mask: npt.ArrayLike, k: int | None = None
) -> FloatArray:
    """Average precision@k per list, binary relevance label > 0, pessimistic ties.

    AP@k = sum of precision@r over ranks r <= k holding a positive, divided by min(R, k) where R
    is the number of positives (k=None: divided by R).

    scores, labels, mask: (B, L). Returns (B,) float64; NaN when the list has no positive.
    """
    s, y, m = _check_inputs(scores, labels, mask)
    length = s.shape[1]
    cut = _cutoff(k, length)
    relevant = (_ranked_labels(s, y, m) > 0.0).astype(np.float64)
    ranks = np.arange(1, length + 1, dtype=np.float64)
    precision = np.cumsum(relevant, axis=1) / ranks
    hits = (precision * relevant * (ranks <= cut)).sum(axis=1)
    n_relevant = relevant.sum(axis=1)
    return _safe_ratio(hits, np.minimum(n_relevant, cut), n_relevant > 0.0)


def auc(scores: npt.ArrayLike, labels: npt.ArrayLike, *, mask: npt.ArrayLike) -> FloatArray:
    """ROC AUC per list of positives (label > 0) against negatives (label == 0).

    A tied positive/negative pair counts 1/2. scores, labels, mask: (B, L). Returns (B,) float64;
    NaN when a list lacks positives or negatives.
    """
    s, y, m = _check_inputs(scores, labels, mask)
    batch = s.shape[0]
    order = _pessimistic_order(s, y, m)
    real = np.take_along_axis(m, order, axis=1).ravel()
    # rows stay contiguous and each is sorted by score descending: the layout _grouped_auc needs
    seg = np.repeat(np.arange(batch), m.sum(axis=1))  # real candidates are first in each row
    s_sorted = np.take_along_axis(s, order, axis=1).ravel()[real]
    pos = np.take_along_axis(y, order, axis=1).ravel()[real] > 0.0
    return _grouped_auc(seg, s_sorted, pos, batch)[0]


# --------------------------------------------------------------------------------------------
# pooled metrics and aggregation


def gauc(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    mask: npt.ArrayLike,
    groups: npt.ArrayLike,
) -> tuple[float, int]:
    """Group AUC as in the DIN paper (Zhou et al. 2018), weighted by impressions.

    scores, labels, mask: (B, L); groups: (B,) group key per list (a user id: int, str, ...).
    Each group pools the real candidates of all its lists and gets one AUC (positives label > 0
    against negatives label == 0, ties 1/2), weighted by the group's number of real candidates.
    Groups with a single class are skipped.

    Returns (GAUC, number of groups used); (NaN, 0) when no group has both classes.
    """
    s, y, m = _check_inputs(scores, labels, mask)
    batch = s.shape[0]
    g = np.asarray(groups)
    if g.shape != (batch,):
        raise ValueError(f"groups must have shape (B,) = ({batch},), got {g.shape}")
    keys, codes = np.unique(g, return_inverse=True)
    # s[m] walks the rows in order, so each list's group code repeats once per real candidate
    item_group = np.repeat(codes.reshape(batch), m.sum(axis=1))
    item_score = s[m]
    # group ascending, then score descending; order within a tie block does not matter, so the
    # score sort need not be stable (this is faster than np.lexsort on millions of candidates)
    by_score = np.argsort(-item_score)
    order = by_score[np.argsort(item_group[by_score], kind="stable")]
    values, n_pos, n_neg = _grouped_auc(
        item_group[order], item_score[order], y[m][order] > 0.0, keys.size
    )
    used = ~np.isnan(values)
    n_used = int(used.sum())
    if n_used == 0:
        return float("nan"), 0
    impressions = (n_pos + n_neg)[used]
    return float(values[used] @ impressions / impressions.sum()), n_used


def apply_empty_rule(values: npt.ArrayLike, *, rule: str) -> tuple[FloatArray, int]:
    """Resolve the NaN entries of a per-list metric (lists with no positive).

    values: (B,) per-list metric. rule: "exclude" drops NaN entries, "zero" sets them to 0.0,
    "one" sets them to 1.0. Returns (the resulting float64 array, number of NaN entries), so a
    report can state both the rule and how many lists it touched.
    """
    if rule not in EMPTY_RULES:
        raise ValueError(f"unknown empty-list rule {rule!r}; expected one of {EMPTY_RULES}")
    v = np.asarray(values, dtype=np.float64)
    empty = np.isnan(v)
    n_empty = int(empty.sum())
    if rule == "exclude":
        return v[~empty], n_empty
    return np.where(empty, 0.0 if rule == "zero" else 1.0, v), n_empty
