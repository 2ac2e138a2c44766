"""Per-request list operations against plain references."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from pipelines.features.segments import best_other, group_size_and_best_other, rank_pct, zscore
from pipelines.features.text import BM25_B, BM25_K1, PAD, IdfTable, jaccard, query_match


def _pct(v: np.ndarray) -> np.ndarray:
    return (rankdata(v) - 1) / (len(v) - 1) if len(v) > 1 else np.full(len(v), 0.5)


def test_rank_pct_matches_scipy_with_ties_groups_and_one_or_many_lists() -> None:
    rng = np.random.default_rng(0)
    for n_lists in (1, 300):
        lens = rng.integers(1, 120, n_lists)
        off = np.r_[0, np.cumsum(lens)]
        x = rng.integers(0, 15, (off[-1], 3)).astype(float)  # many ties
        sub = rng.integers(0, 4, off[-1])
        plain, grouped = rank_pct(x, off), rank_pct(x, off, sub)
        for b in range(n_lists):
            lo, hi = off[b], off[b + 1]
            for k in range(3):
                np.testing.assert_allclose(plain[lo:hi, k], _pct(x[lo:hi, k]), rtol=0, atol=1e-12)
                for g in np.unique(sub[lo:hi]):
                    m = sub[lo:hi] == g
                    np.testing.assert_allclose(
                        grouped[lo:hi, k][m], _pct(x[lo:hi, k][m]), atol=1e-12
                    )


def test_one_list_and_many_lists_give_identical_bits() -> None:
    """The live path (one request) and the batch path must agree exactly."""
    rng = np.random.default_rng(1)
    x = rng.random((80, 2))
    sub = rng.integers(0, 5, 80)
    one = rank_pct(x, np.array([0, 80]), sub)
    many = rank_pct(np.vstack([x, x[:3]]), np.array([0, 80, 83]), np.r_[sub, sub[:3]])
    assert np.array_equal(one, many[:80])


def test_zscore_and_best_other() -> None:
    x = np.array([1.0, 2.0, 3.0, 5.0, 5.0])
    z = zscore(x, np.array([0, 3, 5]))
    np.testing.assert_allclose(z[:3], (x[:3] - 2) / np.std(x[:3]))
    np.testing.assert_array_equal(z[3:], [0.0, 0.0])  # no spread
    score = np.array([3.0, 1.0, 3.0, 5.0, 2.0, 2.0])
    tiebreak = np.array([2, 1, 0, 5, 4, 3])
    group = np.array([0, 0, 0, 1, 1, 1])
    # Best other of each: group 0's best is item 2 (tie on 3.0, smaller tiebreak).
    np.testing.assert_array_equal(best_other(score, tiebreak, group), [2, 2, 0, 5, 3, 3])
    assert best_other(np.array([1.0]), np.array([0]), np.array([0]))[0] == -1


def test_group_size_and_best_other_per_request() -> None:
    """Two requests with the same labels: groups never span requests."""
    off = np.array([0, 3, 6])
    labels = np.array([1, 1, 2, 1, 1, 1])
    score = np.array([1.0, 2.0, 9.0, 3.0, np.nan, 3.0])
    tiebreak = np.array([0, 0, 0, 5, 0, 4])
    size, other = group_size_and_best_other(off, labels, score, tiebreak)
    np.testing.assert_array_equal(size, [2, 2, 1, 3, 3, 3])
    # Request 2: rows 3 and 5 tie on 3.0, row 5 has the smaller tiebreak; NaN ranks last.
    np.testing.assert_array_equal(other, [1, 0, -1, 5, 5, 3])
    assert (group_size_and_best_other(off, labels)[1] == -1).all()  # no score, no best


# The array formulas these compiled loops replaced: independent references, bit for bit.
def _query_match_reference(query, seg, doc, idf, avg_len):  # type: ignore[no-untyped-def]
    q_real = query != PAD
    same = query[:, :, None] == query[:, None, :]
    earlier = np.tri(query.shape[1], k=-1, dtype=bool)
    first = q_real & ~(same & earlier).any(axis=2)
    n_distinct = np.maximum(first.sum(axis=1), 1)
    q = query[seg]
    tf = ((q[:, :, None] == doc[:, None, :]) & q_real[seg][:, :, None]).sum(axis=2)
    share = ((tf > 0) & first[seg]).sum(axis=1) / n_distinct[seg]
    dl = (doc != PAD).sum(axis=1)[:, None].astype(np.float64)
    norm = tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * dl / max(avg_len, 1e-9)))
    return share, (idf(query)[seg] * norm).sum(axis=1)


def test_query_match_and_jaccard_equal_the_array_formulas_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    for width in (3, 8, 11):  # numpy sums 8 or more values pairwise: the loop must too
        lens = rng.integers(0, 40, 25)
        off = np.r_[0, np.cumsum(lens)]
        query = rng.integers(0, 12, (25, width))
        query[rng.random(query.shape) < 0.3] = PAD
        doc = rng.integers(0, 12, (off[-1], 9))
        doc[rng.random(doc.shape) < 0.4] = PAD
        idf = IdfTable(doc if len(doc) else np.zeros((1, 9), np.int64))
        seg = np.repeat(np.arange(25), lens)
        got = query_match(query, off, doc, idf, 4.3)
        want = _query_match_reference(query, seg, doc, idf, 4.3)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        a, b = doc, doc[::-1].copy()
        inter = ((a[:, :, None] == b[:, None, :]) & (a[:, :, None] != PAD)).any(axis=2).sum(axis=1)
        union = (a != PAD).sum(axis=1) + (b != PAD).sum(axis=1) - inter
        want_j = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        assert np.array_equal(jaccard(a, b), want_j)
