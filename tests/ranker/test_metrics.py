"""Ranking metrics against independent references: plain Python loops and scikit-learn."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import pytest
from sklearn.metrics import ndcg_score, roc_auc_score

from ranker.metrics import apply_empty_rule, auc, average_precision, gauc, mrr, ndcg

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]

# --------------------------------------------------------------------------------------------
# references: one list at a time, written without numpy tricks


def real_items(s: np.ndarray, y: np.ndarray, m: np.ndarray) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b, keep in zip(s, y, m, strict=True) if keep]


def ranked(items: list[tuple[float, float]]) -> list[float]:
    """Labels in ranked order: score descending, ties with the lower label first."""
    return [label for _, label in sorted(items, key=lambda t: (-t[0], t[1]))]


def ref_ndcg(items: list[tuple[float, float]], k: int | None) -> float:
    def dcg(labels: list[float]) -> float:
        top = labels if k is None else labels[:k]
        return sum((2.0**lab - 1.0) / math.log2(r + 2.0) for r, lab in enumerate(top))

    ideal = dcg(sorted((lab for _, lab in items), reverse=True))
    return math.nan if ideal == 0 else dcg(ranked(items)) / ideal


def ref_mrr(items: list[tuple[float, float]], k: int | None) -> float:
    labels = ranked(items)
    if not any(lab > 0 for lab in labels):
        return math.nan
    for r, lab in enumerate(labels, start=1):
        if lab > 0:
            return 1.0 / r if k is None or r <= k else 0.0
    raise AssertionError("unreachable")


def ref_ap(items: list[tuple[float, float]], k: int | None) -> float:
    labels = ranked(items)
    n_rel = sum(lab > 0 for lab in labels)
    if n_rel == 0:
        return math.nan
    hits, total = 0, 0.0
    for r, lab in enumerate(labels, start=1):
        if lab > 0:
            hits += 1
            if k is None or r <= k:
                total += hits / r
    return total / (n_rel if k is None else min(n_rel, k))


def ref_auc(items: list[tuple[float, float]]) -> float:
    pos = [s for s, lab in items if lab > 0]
    neg = [s for s, lab in items if lab == 0]
    if not pos or not neg:
        return math.nan
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def random_batch(
    rng: np.random.Generator, b: int, n: int, *, ties: bool = False, levels: int = 3
) -> Batch:
    """A padded batch with garbage (NaN, inf, huge, negative labels) in the padding."""
    scores = rng.integers(0, 4, (b, n)).astype(float) if ties else rng.normal(size=(b, n))
    labels = rng.integers(0, levels, (b, n)) * (rng.random((b, n)) < 0.4)
    lengths = rng.integers(0, n + 1, b)
    mask = np.arange(n) < lengths[:, None]
    # shuffle each row so padding is not always at the end
    perm = rng.permuted(np.tile(np.arange(n), (b, 1)), axis=1)
    mask = np.take_along_axis(mask, perm, axis=1)
    garbage = rng.choice([np.nan, np.inf, -np.inf, 1e300, -7.0], size=(b, n))
    scores = np.where(mask, scores, garbage)
    labels = np.where(mask, labels.astype(float), rng.choice([np.nan, -3.0, 9.0], size=(b, n)))
    return scores, labels, mask


def per_list(ref: Callable[..., float], batch: Batch, **kw: int | None) -> np.ndarray:
    s, y, m = batch
    return np.array([ref(real_items(s[i], y[i], m[i]), **kw) for i in range(len(s))])


SHAPES = [(1, 1), (4, 2), (7, 5), (13, 9), (9, 31)]
KS = [None, 1, 3, 10, 1000]


# --------------------------------------------------------------------------------------------
# random batches against the loop references


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize(("b", "n"), SHAPES)
def test_rank_metrics_match_loop_references(b: int, n: int, ties: bool) -> None:
    rng = np.random.default_rng(1000 * b + n + ties)
    batch = random_batch(rng, b, n, ties=ties, levels=5)
    s, y, m = batch
    for k in KS:
        np.testing.assert_allclose(ndcg(s, y, mask=m, k=k), per_list(ref_ndcg, batch, k=k))
        np.testing.assert_allclose(mrr(s, y, mask=m, k=k), per_list(ref_mrr, batch, k=k))
        np.testing.assert_allclose(
            average_precision(s, y, mask=m, k=k), per_list(ref_ap, batch, k=k)
        )
    np.testing.assert_allclose(auc(s, y, mask=m), per_list(ref_auc, batch))


@pytest.mark.parametrize("k", [None, 1, 5, 50])
def test_ndcg_matches_sklearn_on_tie_free_lists(k: int | None) -> None:
    rng = np.random.default_rng(7)
    for n in (2, 3, 8, 40):
        s, y, m = random_batch(rng, 30, n, levels=5)
        ours = ndcg(s, y, mask=m, k=k)
        for i in range(len(s)):
            keep = m[i]
            # sklearn takes the label as the gain and needs two documents and a positive
            if keep.sum() < 2 or not (y[i, keep] > 0).any():
                continue
            gains = 2.0 ** y[i, keep] - 1.0
            expected = ndcg_score([gains], [s[i, keep]], k=k)
            assert ours[i] == pytest.approx(expected, rel=1e-12)


def test_auc_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    s, y, m = random_batch(rng, 60, 25, ties=True)
    ours = auc(s, y, mask=m)
    checked = 0
    for i in range(len(s)):
        yy = y[i, m[i]] > 0
        if yy.all() or not yy.any():
            assert math.isnan(ours[i])
            continue
        assert ours[i] == pytest.approx(roc_auc_score(yy, s[i, m[i]]), rel=1e-12)
        checked += 1
    assert checked > 20


@pytest.mark.parametrize("ties", [False, True])
def test_gauc_matches_pooled_sklearn_per_group(ties: bool) -> None:
    rng = np.random.default_rng(11)
    s, y, m = random_batch(rng, 80, 12, ties=ties)
    groups = np.array([f"user{u}" for u in rng.integers(0, 15, 80)])
    pooled: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for i, g in enumerate(groups):
        pooled[str(g)] += real_items(s[i], y[i], m[i])
    num = den = 0.0
    used = 0
    for items in pooled.values():
        yy = [lab > 0 for _, lab in items]
        if all(yy) or not any(yy):
            continue
        value = roc_auc_score(yy, [sc for sc, _ in items])
        num += value * len(items)
        den += len(items)
        used += 1
    value, n_used = gauc(s, y, mask=m, groups=groups)
    assert n_used == used > 5
    assert value == pytest.approx(num / den, rel=1e-12)
    # integer keys give the same result as the string keys they stand for
    as_int = np.array([int(g[4:]) for g in groups])
    assert gauc(s, y, mask=m, groups=as_int) == (pytest.approx(value, rel=1e-12), used)


# --------------------------------------------------------------------------------------------
# the tie rule, by hand


def test_pessimistic_ties_rank_the_lower_label_first() -> None:
    # items 0 and 1 tie; the negative (item 1) is ranked above the positive whatever the order
    for order in ([0, 1, 2], [1, 0, 2], [2, 1, 0]):
        s = np.array([[1.0, 1.0, 0.0]])[:, order]
        y = np.array([[1, 0, 0]])[:, order]
        m = np.ones_like(s, dtype=bool)
        assert mrr(s, y, mask=m)[0] == 0.5
        assert average_precision(s, y, mask=m)[0] == 0.5
        assert ndcg(s, y, mask=m)[0] == pytest.approx(1.0 / math.log2(3.0))
        assert auc(s, y, mask=m)[0] == 0.75  # ties count 1/2 in AUC: (0.5 + 1) / 2
        assert mrr(s, y, mask=m, k=1)[0] == 0.0


def test_a_constant_scorer_gets_the_worst_order() -> None:
    y = np.array([[2, 0, 1, 0], [0, 1, 0, 2]])
    s = np.zeros((2, 4))
    m = np.ones((2, 4), dtype=bool)
    worst = (1.0 / math.log2(4.0) + 3.0 / math.log2(5.0)) / (3.0 + 1.0 / math.log2(3.0))
    np.testing.assert_allclose(ndcg(s, y, mask=m), [worst, worst])
    np.testing.assert_allclose(mrr(s, y, mask=m), [1 / 3, 1 / 3])
    np.testing.assert_allclose(average_precision(s, y, mask=m), [(1 / 3 + 2 / 4) / 2] * 2)
    np.testing.assert_allclose(auc(s, y, mask=m), [0.5, 0.5])


# --------------------------------------------------------------------------------------------
# edge cases


def test_lists_without_positives_or_real_candidates_are_nan() -> None:
    s = np.array([[0.3, 0.2, 0.1], [0.1, 0.2, 0.3], [np.nan, 5.0, 1.0]])
    y = np.array([[0, 0, 0], [1, 1, 1], [3, 2, 1]])
    m = np.array([[True, True, True], [True, True, True], [False, False, False]])
    for metric in (ndcg, mrr, average_precision):
        out = metric(s, y, mask=m)
        assert math.isnan(out[0]) and out[1] == 1.0 and math.isnan(out[2])
    assert np.isnan(auc(s, y, mask=m)).all()  # one class only, or empty
    assert gauc(s, y, mask=m, groups=np.array([1, 1, 2])) == (pytest.approx(0.5), 1)
    value, used = gauc(s, y, mask=m, groups=np.array([1, 2, 3]))
    assert math.isnan(value) and used == 0


def test_one_candidate_and_k_beyond_the_list() -> None:
    s, y, m = np.array([[0.4]]), np.array([[2]]), np.array([[True]])
    for k in (None, 1, 99):
        assert ndcg(s, y, mask=m, k=k)[0] == 1.0
        assert mrr(s, y, mask=m, k=k)[0] == 1.0
        assert average_precision(s, y, mask=m, k=k)[0] == 1.0
    assert math.isnan(auc(s, y, mask=m)[0])


def test_padding_never_matters() -> None:
    rng = np.random.default_rng(5)
    s, y, m = random_batch(rng, 40, 10)
    metrics = [
        lambda s, y: ndcg(s, y, mask=m, k=3),
        lambda s, y: mrr(s, y, mask=m),
        lambda s, y: average_precision(s, y, mask=m, k=5),
        lambda s, y: auc(s, y, mask=m),
        lambda s, y: np.array(gauc(s, y, mask=m, groups=np.arange(40) % 4)),
    ]
    for fill_s, fill_y in [(np.nan, np.nan), (1e308, 4.0), (-np.inf, -1.0), (0.0, 0.0)]:
        s2, y2 = np.where(m, s, fill_s), np.where(m, y, fill_y)
        for metric in metrics:
            np.testing.assert_array_equal(metric(s2, y2), metric(s, y))


def test_empty_batch_and_empty_lists() -> None:
    for n in (0, 5):
        s, y, m = np.zeros((0, n)), np.zeros((0, n)), np.zeros((0, n), dtype=bool)
        for metric in (ndcg, mrr, average_precision):
            out = metric(s, y, mask=m, k=3)
            assert out.shape == (0,) and out.dtype == np.float64
        assert auc(s, y, mask=m).shape == (0,)
        value, used = gauc(s, y, mask=m, groups=np.array([], dtype=str))
        assert math.isnan(value) and used == 0
    # L = 0: every list is empty
    s, y, m = np.zeros((3, 0)), np.zeros((3, 0)), np.zeros((3, 0), dtype=bool)
    for metric in (ndcg, mrr, average_precision):
        assert np.isnan(metric(s, y, mask=m)).all()
    assert np.isnan(auc(s, y, mask=m)).all()


def test_nan_scores_of_real_candidates_rank_last() -> None:
    s = np.array([[np.nan, 0.1, 0.2]])
    y = np.array([[1, 0, 0]])
    m = np.ones((1, 3), dtype=bool)
    assert mrr(s, y, mask=m)[0] == pytest.approx(1 / 3)
    assert auc(s, y, mask=m)[0] == 0.0


def test_bad_arguments_raise() -> None:
    s, y, m = np.zeros((2, 3)), np.zeros((2, 3)), np.ones((2, 3), dtype=bool)
    with pytest.raises(ValueError, match="k must be"):
        ndcg(s, y, mask=m, k=0)
    with pytest.raises(ValueError, match="shape"):
        mrr(s, y[:, :2], mask=m)
    with pytest.raises(ValueError, match=">= 0"):
        average_precision(s, y - 1.0, mask=m)
    with pytest.raises(ValueError, match="groups"):
        gauc(s, y, mask=m, groups=np.array([1, 2, 3]))


def test_apply_empty_rule() -> None:
    values = np.array([0.5, np.nan, 1.0, np.nan])
    kept, n = apply_empty_rule(values, rule="exclude")
    np.testing.assert_array_equal(kept, [0.5, 1.0])
    assert n == 2
    zero, n = apply_empty_rule(values, rule="zero")
    np.testing.assert_array_equal(zero, [0.5, 0.0, 1.0, 0.0])
    one, n = apply_empty_rule(values, rule="one")
    np.testing.assert_array_equal(one, [0.5, 1.0, 1.0, 1.0])
    assert n == 2
    assert apply_empty_rule(np.array([]), rule="zero")[1] == 0
    with pytest.raises(ValueError, match=r"unknown empty-list rule 'drop'.*exclude"):
        apply_empty_rule(values, rule="drop")
