"""Per-request list operations against plain references."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from pipelines.features.segments import best_other, rank_pct, zscore


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
    seg = np.array([0, 0, 0, 1, 1])
    z = zscore(x, seg, 2)
    np.testing.assert_allclose(z[:3], (x[:3] - 2) / np.std(x[:3]))
    np.testing.assert_array_equal(z[3:], [0.0, 0.0])  # no spread
    score = np.array([3.0, 1.0, 3.0, 5.0, 2.0, 2.0])
    tiebreak = np.array([2, 1, 0, 5, 4, 3])
    group = np.array([0, 0, 0, 1, 1, 1])
    # Best other of each: group 0's best is item 2 (tie on 3.0, smaller tiebreak).
    np.testing.assert_array_equal(best_other(score, tiebreak, group), [2, 2, 0, 5, 3, 3])
    assert best_other(np.array([1.0]), np.array([0]), np.array([0]))[0] == -1
