"""The simulator's contract: files, determinism, replayable clicks, a library object."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.world.config import WorldConfig
from pipelines.world.simulate import simulate
from pipelines.world.world import World


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    cfg = WorldConfig(seed=3, n_requests=300, n_users=50, n_items=200, days=3)
    simulate(cfg, tmp_path / "a", progress=False)
    simulate(cfg, tmp_path / "b", progress=False)
    simulate(
        WorldConfig(seed=4, n_requests=300, n_users=50, n_items=200, days=3),
        tmp_path / "c",
        progress=False,
    )
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert set(a) == {
        "logs/requests.parquet",
        "logs/impressions.parquet",
        "logs/items.parquet",
        "logs/users.parquet",
        "world/world.json",
        "world/items.parquet",
        "world/users.parquet",
        "world/truth.parquet",
    }
    assert a == b
    assert a["logs/impressions.parquet"] != c["logs/impressions.parquet"]


def test_logs_follow_the_schema(small_sim: Path) -> None:
    req = pd.read_parquet(small_sim / "logs/requests.parquet")
    imp = pd.read_parquet(small_sim / "logs/impressions.parquet")
    assert {
        "request_id",
        "ts",
        "user_id",
        "query",
        "lat",
        "lon",
        "randomized",
        "click_seed",
    } <= set(req.columns)
    assert str(req["ts"].dtype).startswith("datetime64") and req["ts"].dt.tz is not None
    assert req["ts"].is_monotonic_increasing
    per_req = imp.groupby("request_id").size()
    assert per_req.min() >= 10 and per_req.max() <= 100
    # Positions run 1..n within each request, no gaps.
    pos = imp.groupby("request_id")["position"].agg(["min", "max", "size"])
    assert (pos["min"] == 1).all() and (pos["max"] == pos["size"]).all()
    assert not imp.duplicated(["request_id", "item_id"]).any()
    # Orders only follow clicks; dwell only on clicks.
    assert not (imp["ordered"] & ~imp["clicked"]).any()
    assert imp.loc[imp["clicked"], "dwell_ms"].notna().all()
    assert imp.loc[~imp["clicked"], "dwell_ms"].isna().all()
    # About 5% of requests are randomised (binomial, 3000 draws: 5% +- 1.2% is 3 sd).
    assert 0.038 < req["randomized"].mean() < 0.062
    truth = pd.read_parquet(small_sim / "world/truth.parquet")
    assert len(truth) == len(imp)
    assert truth["relevance"].between(0, 4).all()


def test_replaying_logged_rankings_reproduces_logged_clicks(small_sim: Path) -> None:
    world = World.load(small_sim / "world")
    req = pd.read_parquet(small_sim / "logs/requests.parquet").iloc[::7]  # 429 requests
    imp = pd.read_parquet(small_sim / "logs/impressions.parquet")
    imp = imp[imp["request_id"].isin(req["request_id"])].sort_values(["request_id", "position"])
    shown = imp.groupby("request_id", sort=False)["item_id"].agg(list)
    frame = req.assign(item_ids=req["request_id"].map(shown))
    searches = world.searches_from_requests(frame)
    logged = imp.groupby("request_id", sort=False)
    n_clicks = 0
    for k, (rid, seed) in enumerate(zip(frame["request_id"], frame["click_seed"], strict=True)):
        resp = world.respond(
            searches, k, frame["item_ids"].iloc[k], np.random.default_rng(int(seed))
        )
        rows = logged.get_group(rid)
        np.testing.assert_array_equal(resp.clicked, rows["clicked"].to_numpy())
        np.testing.assert_array_equal(resp.ordered, rows["ordered"].to_numpy())
        n_clicks += int(resp.clicked.sum())
    assert n_clicks > 100  # the comparison is not vacuous


def test_world_round_trips_through_its_files(small_sim: Path) -> None:
    world = World.load(small_sim / "world")
    truth = pd.read_parquet(small_sim / "world/truth.parquet")
    req = pd.read_parquet(small_sim / "logs/requests.parquet").head(50)
    sets = truth[truth["request_id"].isin(req["request_id"])].groupby("request_id", sort=False)
    frame = req.assign(item_ids=req["request_id"].map(sets["item_id"].agg(list)))
    rel = world.relevance(world.searches_from_requests(frame))
    for k, rid in enumerate(frame["request_id"]):
        expected = sets.get_group(rid)["relevance"].to_numpy()
        np.testing.assert_allclose(rel[k], expected, rtol=0, atol=1e-6)  # float32 in truth


def test_sampled_searches_come_after_the_logged_period(small_sim: Path) -> None:
    world = World.load(small_sim / "world")
    s = world.sample_searches(200, np.random.default_rng(1), days=2.0)
    assert s.t.min() >= world.end_s and s.t.max() < world.end_s + 2 * 86400
    assert np.all(np.diff(s.t) >= 0)
    assert all(10 <= len(c) <= 100 for c in s.candidates)
    assert len(set(s.request_id)) == 200


def test_respond_refuses_items_outside_the_candidate_set(small_sim: Path) -> None:
    world = World.load(small_sim / "world")
    s = world.sample_searches(1, np.random.default_rng(2))
    outsider = next(
        i for i in world.items.item_id if world.item_index(np.array([i]))[0] not in s.candidates[0]
    )
    with pytest.raises(ValueError, match="not candidates"):
        world.respond(s, 0, np.array([outsider]), np.random.default_rng(0))
    with pytest.raises(KeyError, match="unknown"):
        world.respond(s, 0, np.array(["no-such-item"]), np.random.default_rng(0))


def test_invalid_config_is_refused() -> None:
    with pytest.raises(ValueError, match="min_candidates"):
        WorldConfig(min_candidates=50, max_candidates=10)
    with pytest.raises(ValueError, match="random_share"):
        WorldConfig(random_share=1.5)
