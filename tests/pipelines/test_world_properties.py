"""What makes the world worth ranking in, each property measured on a small world.

Sizes and bounds here are the documented ones (README, "The simulated world"); the benchmark
``benchmarks/world_properties.py`` measures the same on a large world.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.world import properties as props
from pipelines.world.config import CATEGORIES
from pipelines.world.searches import KIND_CATEGORY
from pipelines.world.world import World


@pytest.fixture(scope="module")
def world(small_sim: Path) -> World:
    return World.load(small_sim / "world")


def test_position_bias_ratio_is_between_3_and_15(world: World) -> None:
    rng = np.random.default_rng(0)
    s = world.sample_searches(150, rng)
    ratio = props.position_bias_ratio(world, s, rng, reps=200)
    assert 3.0 <= ratio <= 15.0


def test_examination_curve_decreases(world: World) -> None:
    curve = world.examination_curve(20)
    assert curve[0] == 1.0 and np.all(np.diff(curve) < 0)


def test_the_best_item_differs_across_users_in_most_cases(world: World) -> None:
    rng = np.random.default_rng(1)
    s = world.sample_searches(80, rng)
    disagreement = props.best_item_disagreement(world, s, rng, n_users=20)
    # For most (query, place, time, candidate set), two random users disagree on the best item
    # more often than not.
    assert np.mean(disagreement > 0.5) > 0.6


def test_click_history_predicts_next_day_clicks(small_sim: Path) -> None:
    assert props.history_auc(small_sim / "logs") >= 0.6


def _one_search(world: World, rng: np.random.Generator) -> tuple:
    while True:
        s = world.sample_searches(1, rng)
        if s.kind[0] == KIND_CATEGORY:
            return s


def test_distance_lowers_relevance_in_controlled_pairs(world: World) -> None:
    rng = np.random.default_rng(2)
    drops = []
    for _ in range(30):
        s = _one_search(world, rng)
        near, far = s.take(np.array([0])), s.take(np.array([0]))
        target = s.candidates[0][0]
        near.x, near.y = world.items.x[[target]], world.items.y[[target]]  # at the merchant's door
        far.x, far.y = near.x + 6.0, near.y  # 6 km east, all else equal
        r_near = world.relevance(near, list_effect=0.0)[0][0]
        r_far = world.relevance(far, list_effect=0.0)[0][0]
        drops.append(r_near - r_far)
    assert min(drops) > 0  # further away is always worse for the same merchant
    assert np.mean(drops) > 0.2


def test_time_of_day_changes_relevance_in_controlled_pairs(world: World) -> None:
    coffee = [c.name for c in CATEGORIES].index("coffee")
    shops = np.flatnonzero(world.items.category == coffee)[:20]
    rng = np.random.default_rng(3)
    s = _one_search(world, rng)
    s.candidates = [shops]
    s.kind[:], s.category[:] = KIND_CATEGORY, coffee
    day0 = s.t[0] - s.t[0] % 86400
    morning, night = s.take(np.array([0])), s.take(np.array([0]))
    morning.t = np.array([day0 + 8 * 3600 + 1800])  # 08:30, a coffee peak; shops are open
    night.t = np.array([day0 + 23 * 3600 + 1800])  # 23:30, off-peak; shops are closed
    r_m = world.relevance(morning, list_effect=0.0)[0]
    r_n = world.relevance(night, list_effect=0.0)[0]
    assert np.all(r_m > r_n) and np.mean(r_m - r_n) > 0.5


def test_list_effect_explains_10_to_30_percent_of_within_request_variance(small_sim: Path) -> None:
    truth = pd.read_parquet(small_sim / "world/truth.parquet")
    assert 0.10 <= props.list_effect_share(truth) <= 0.30


def test_relevance_depends_on_the_set_never_on_its_order(world: World) -> None:
    rng = np.random.default_rng(4)
    s = world.sample_searches(40, rng)
    rel = world.relevance(s)
    for k in range(len(s)):
        perm = rng.permutation(len(s.candidates[k]))
        one = s.take(np.array([k]))
        one.candidates = [s.candidates[k][perm]]
        np.testing.assert_array_equal(world.relevance(one)[0], rel[k][perm])


def test_a_better_near_duplicate_lowers_relevance(world: World) -> None:
    rng = np.random.default_rng(5)
    brands = world.items.brand
    checked = 0
    for _ in range(200):
        s = _one_search(world, rng)
        cand = s.candidates[0]
        # A branch whose siblings are all absent from the set.
        alone_in_set = [
            i for i in cand if brands[i] >= 0 and np.sum(brands[cand] == brands[i]) == 1
        ]
        if not alone_in_set:
            continue
        i = alone_in_set[0]
        siblings = np.flatnonzero((brands == brands[i]) & (np.arange(len(brands)) != i))
        alone = world.relevance(s)[0][list(cand).index(i)]
        for j in siblings:
            if j in cand:
                continue
            with_dup = s.take(np.array([0]))
            with_dup.candidates = [np.append(cand, j)]
            r = world.relevance(with_dup)[0]
            if r[-1] > r[list(cand).index(i)] + 0.5:  # the sibling is clearly better
                assert r[list(cand).index(i)] < alone
                checked += 1
                break
        if checked >= 5:
            break
    assert checked >= 5


def test_control_world_has_no_list_effect(world: World) -> None:
    s = world.sample_searches(30, np.random.default_rng(6))
    with_effect, without = world.relevance_parts(s)
    control = world.relevance(s, list_effect=0.0)
    for a, b in zip(control, without, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, b) for a, b in zip(with_effect, without, strict=True))


def test_logging_policy_is_plausible_but_imperfect(world: World) -> None:
    rng = np.random.default_rng(8)
    s = world.sample_searches(400, rng)
    ndcg = props.policy_oracle_ndcg(world, s, rng)
    assert 0.45 <= ndcg <= 0.80
