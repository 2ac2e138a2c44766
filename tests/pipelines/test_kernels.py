"""The compiled per-request loops against plain-Python references written from their definitions
(the replay test shows live == batch; these show the numbers are the intended ones)."""

from __future__ import annotations

import math

import numpy as np

from pipelines.features.keys import combine
from pipelines.features.sequence_features import NO_HISTORY_AGE_H, _history_aggregates
from pipelines.features.transforms import (
    PRIOR_CTR,
    PRIOR_CVR,
    PRIOR_WEIGHT,
    _counter_window,
    haversine_km,
)

MASK = (1 << 64) - 1


def _splitmix_reference(a: int, b: int) -> int:
    h = (a * 0x9E3779B97F4A7C15 + b) & MASK
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & MASK
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & MASK
    return h ^ (h >> 31)


def test_combine_is_splitmix_of_the_parts_with_wrapping_arithmetic() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, 200, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # top bit set
    b = rng.integers(0, 2**63, 200, dtype=np.uint64)
    c = rng.integers(0, 40, 200)  # a small signed column, as item groups are
    got = combine(a, b, c)
    for i in range(200):
        want = _splitmix_reference(_splitmix_reference(int(a[i]), int(b[i])), int(c[i]))
        assert int(got[i]) == want
    assert combine(a[:0], b[:0]).shape == (0,)
    assert (combine(a) == a).all() and combine(a) is not a  # one part: a copy of it


def test_counter_window_is_the_smoothed_rate_of_each_candidate() -> None:
    rng = np.random.default_rng(1)
    n, a = 60, 20.0
    seg = np.repeat([0, 1], [25, 35])  # two requests
    item = rng.integers(0, 50, (n, 3))
    qi = rng.integers(0, 9, (n, 2))
    ui, uc = rng.integers(0, 4, (n, 1)), rng.integers(0, 4, (n, 1))
    user = np.array([[0], [7]])  # the first user has never clicked
    glob = np.array([[1000, 50, 9], [0, 0, 0]])  # the second request: no traffic yet
    out = _counter_window(item, qi, ui, uc, user, glob, seg, a)
    for i in range(n):
        b = seg[i]
        p_ctr = (glob[b, 1] + PRIOR_CTR * PRIOR_WEIGHT) / (glob[b, 0] + PRIOR_WEIGHT)
        p_cvr = (glob[b, 2] + PRIOR_CVR * PRIOR_WEIGHT) / (glob[b, 0] + PRIOR_WEIGHT)
        want = [
            item[i, 0],
            (item[i, 1] + a * p_ctr) / (item[i, 0] + a),
            (item[i, 2] + a * p_cvr) / (item[i, 0] + a),
            qi[i, 0],
            (qi[i, 1] + a * p_ctr) / (qi[i, 0] + a),
            ui[i, 0],
            uc[i, 0],
            uc[i, 0] / user[b, 0] if user[b, 0] else 0.0,
            user[b, 0],
        ]
        assert out[i].tolist() == [float(w) for w in want]


def test_history_aggregates_are_means_gaps_and_last_age_per_request() -> None:
    offsets = np.array([0, 3, 5, 5, 7])  # the third request has no candidates
    hist_offsets = np.array([0, 4, 4, 5, 7])  # the second has no history
    t_hist = np.array([10, 40, 20, 30, 5, 1, 9]) * 3_600_000_000
    t_us = np.array([50, 60, 70, 80]) * 3_600_000_000
    hist_vals = np.array([[1.0, 10], [2, 20], [3, 30], [4, 40], [5, 50], [6, 60], [7, 70]])
    cand_vals = np.arange(14, dtype=np.float64).reshape(7, 2)
    defaults = np.array([-1.0, -2.0])
    out = _history_aggregates(offsets, hist_offsets, t_hist, t_us, hist_vals, cand_vals, defaults)
    for b in range(4):
        h = slice(hist_offsets[b], hist_offsets[b + 1])
        n = hist_offsets[b + 1] - hist_offsets[b]
        age = (t_us[b] - t_hist[h].max()) / 3.6e9 if n else NO_HISTORY_AGE_H
        means = [sum(hist_vals[h, j].tolist()) / n if n else defaults[j] for j in range(2)]
        for i in range(offsets[b], offsets[b + 1]):
            gaps = [cand_vals[i, j] - means[j] if n else 0.0 for j in range(2)]
            assert out[i].tolist() == [n, age, means[0], gaps[0], means[1], gaps[1]]
    assert out[0, 1] == 10.0  # hours since the latest event (40 h), not the last listed (30 h)


def test_haversine_matches_the_formula_and_a_known_distance() -> None:
    rng = np.random.default_rng(2)
    lat1, lon1 = rng.uniform(-80, 80, 50), rng.uniform(-180, 180, 50)
    lat2, lon2 = rng.uniform(-80, 80, 50), rng.uniform(-180, 180, 50)
    got = haversine_km(lat1, lon1, lat2, lon2)
    for i in range(50):
        p1, p2 = math.radians(lat1[i]), math.radians(lat2[i])
        dl = math.radians(lon2[i] - lon1[i])
        h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
        want = 2 * 6371.0088 * math.asin(math.sqrt(min(max(h, 0), 1)))
        assert math.isclose(got[i], want, rel_tol=1e-12)  # libm's last bit may vary by machine
    shanghai_beijing = haversine_km(
        np.array([31.2304]), np.array([121.4737]), np.array([39.9042]), np.array([116.4074])
    )
    assert abs(shanghai_beijing[0] - 1067.0) < 5.0
    assert np.isnan(haversine_km(np.array([np.nan]), np.zeros(1), np.zeros(1), np.zeros(1)))[0]
