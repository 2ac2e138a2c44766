"""``ranker features``: the lists dataset, point-in-time correctness, one code path online."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ops.cli import main
from pipelines.features.batch import build_features
from pipelines.features.config import load_config
from pipelines.features.live import LiveFeaturizer
from pipelines.features.state import Events, FeatureState
from pipelines.lists.io import read_split
from pipelines.lists.manifest import Manifest
from pipelines.lists.table import Lists

SIM = load_config("sim")


@pytest.fixture(scope="module")
def logs(slice_logs: Path) -> Path:
    return slice_logs


@pytest.fixture(scope="module")
def dataset(slice_lists: Path) -> Path:
    return slice_lists


def _all(ds: Path) -> Lists:
    return Lists.concat([read_split(ds, s) for s in ("train", "valid", "test")])


def test_dataset_layout_and_splits_by_time(dataset: Path, logs: Path) -> None:
    assert {p.name for p in dataset.iterdir()} >= {
        "manifest.json",
        "train.parquet",
        "valid.parquet",
        "test.parquet",
        "state",
        "vocabs",
    }
    m = Manifest.load(dataset)
    n_req = len(pd.read_parquet(logs / "requests.parquet"))
    assert sum(m.splits[s]["requests"] for s in ("train", "valid", "test")) == n_req
    assert (
        m.splits["train"]["to"]
        <= m.splits["valid"]["from"]
        <= m.splits["valid"]["to"]
        <= m.splits["test"]["from"]
    )
    assert 0.12 < m.splits["test"]["requests"] / n_req < 0.18
    train = read_split(dataset, "train")
    assert train.num.shape[1] == len(m.numeric) and train.cat.shape[1] == len(m.categorical)
    assert set(np.unique(train.labels)) <= {0, 1, 2} and train.positions is not None
    assert m.source["world"] is not None  # a report can find the simulated world's truth
    # Normalisation statistics come from train only.
    j = m.numeric_names.index("rating")
    assert m.numeric[j].mean == pytest.approx(
        float(train.num[:, j].astype(np.float64).mean()), rel=1e-5
    )
    # Categorical indices stay inside their vocabularies.
    for k, f in enumerate(m.categorical):
        assert train.cat[:, k].min() >= 0 and train.cat[:, k].max() < f.size


def test_labels_follow_the_configured_mapping(dataset: Path, logs: Path) -> None:
    test = read_split(dataset, "test")
    imp = pd.read_parquet(logs / "impressions.parquet").set_index(["request_id", "item_id"])
    rid = np.repeat(test.request_id, test.list_lengths())
    logged = imp.loc[list(zip(rid, test.item_ids, strict=True))]
    expected = np.where(logged["ordered"], 2, np.where(logged["clicked"], 1, 0))
    np.testing.assert_array_equal(test.labels, expected)
    np.testing.assert_array_equal(test.positions, logged["position"].to_numpy())


def test_history_is_the_last_clicks_strictly_before_the_request(dataset: Path, logs: Path) -> None:
    ds = _all(dataset)
    req = pd.read_parquet(logs / "requests.parquet").set_index("request_id")
    imp = pd.read_parquet(logs / "impressions.parquet")
    clicks = (
        imp[imp["clicked"]]
        .join(req[["ts", "user_id"]], on="request_id")
        .sort_values(["ts", "position"])
    )
    checked = 0
    for b in range(0, len(ds), 37):
        rid = ds.request_id[b]
        t, user = req.loc[rid, "ts"], req.loc[rid, "user_id"]
        past = clicks[(clicks["user_id"] == user) & (clicks["ts"] < t)]["item_id"].to_numpy()[-50:]
        got = ds.hist_item_ids[ds.hist_offsets[b] : ds.hist_offsets[b + 1]]
        np.testing.assert_array_equal(got, past)
        checked += len(past) > 0
    assert checked > 5


def test_a_planted_future_event_is_not_seen(logs: Path, tmp_path: Path) -> None:
    """Clicks planted after a request's time (plus the delay) change nothing before them."""
    base = build_features(logs, tmp_path / "base", SIM, progress=False)
    req = pd.read_parquet(logs / "requests.parquet")
    imp = pd.read_parquet(logs / "impressions.parquet")
    t_cut = req["ts"].quantile(0.5)
    later = req[req["ts"] > t_cut]["request_id"]
    planted = imp.copy()
    planted.loc[planted["request_id"].isin(later), ["clicked", "ordered"]] = (
        True  # the future changes
    )
    forged = tmp_path / "forged"
    forged.mkdir()
    for name in ("requests", "items", "users"):
        pd.read_parquet(logs / f"{name}.parquet").to_parquet(forged / f"{name}.parquet")
    planted.to_parquet(forged / "impressions.parquet")
    build_features(forged, tmp_path / "forged_ds", SIM, progress=False)
    a, b = _all(tmp_path / "base"), _all(tmp_path / "forged_ds")
    ts = pd.read_parquet(logs / "requests.parquet").set_index("request_id").loc[a.request_id, "ts"]
    before = np.flatnonzero((ts <= t_cut).to_numpy())
    after = np.flatnonzero((ts > t_cut + pd.Timedelta(hours=2)).to_numpy())
    sa, sb = a.select(before), b.select(before)
    np.testing.assert_array_equal(sa.num, sb.num)
    np.testing.assert_array_equal(sa.hist_item_ids, sb.hist_item_ids)
    # ...and the planted clicks do reach later requests (the test can fail).
    assert not np.array_equal(a.select(after).num, b.select(after).num)
    assert base.manifest.fingerprint != Manifest.load(tmp_path / "forged_ds").fingerprint


def test_shuffled_input_rows_give_identical_output(logs: Path, tmp_path: Path) -> None:
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    rng = np.random.default_rng(0)
    for name in ("requests", "impressions", "items", "users"):
        df = pd.read_parquet(logs / f"{name}.parquet")
        df.iloc[rng.permutation(len(df))].reset_index(drop=True).to_parquet(
            shuffled / f"{name}.parquet"
        )
    build_features(logs, tmp_path / "a", SIM, progress=False)
    build_features(shuffled, tmp_path / "b", SIM, progress=False)
    for split in ("train", "valid", "test"):
        assert (tmp_path / "a" / f"{split}.parquet").read_bytes() == (
            tmp_path / "b" / f"{split}.parquet"
        ).read_bytes()


def test_parts_and_slices_bound_memory_not_the_values(
    logs: Path, dataset: Path, tmp_path: Path
) -> None:
    """``max_candidates`` bounds what a part of a day holds: with a bound far below a day, every
    list and every value is the same and the state is byte for byte the same (only row groups
    and the manifest's summed statistics may differ); with a bound above every day, every file
    is byte for byte the same as the default's."""
    small, large = tmp_path / "small", tmp_path / "large"
    build_features(logs, small, SIM, progress=False, max_candidates=7)
    build_features(logs, large, SIM, progress=False, max_candidates=10**7)
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert Path("train.parquet") in files and Path("state/counters_qi.npz") in files
    for f in files:
        if f.name != "manifest.json":  # it records when it was made
            assert (large / f).read_bytes() == (dataset / f).read_bytes(), f
        if f.parts[0] == "state":
            assert (small / f).read_bytes() == (dataset / f).read_bytes(), f
    assert pq.ParquetFile(small / "train.parquet").num_row_groups > 10 * (
        pq.ParquetFile(dataset / "train.parquet").num_row_groups
    )
    for split in ("train", "valid", "test"):
        a, b = read_split(dataset, split), read_split(small, split)
        for name in ("request_id", "offsets", "item_ids", "num", "cat", "hist_num", "hist_cat"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), (split, name)
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (dataset, small))
    for fa, fb in zip(ma["numeric"], mb["numeric"], strict=True):
        assert fa["mean"] == pytest.approx(fb["mean"], rel=1e-9, abs=1e-12)
    assert ma["splits"] == mb["splits"]


def test_request_slices_keep_whole_requests_within_the_bound() -> None:
    from pipelines.features.chunks import request_slices

    offsets = np.array([0, 3, 3, 10, 12, 13, 20])  # a request of 7 > the bound of 5
    got = request_slices(offsets, 5)
    assert got == [(0, 2), (2, 3), (3, 5), (5, 6)]
    assert [r for b0, b1 in got for r in range(b0, b1)] == list(range(6))
    assert request_slices(np.array([0]), 5) == []
    with pytest.raises(ValueError, match="max_candidates"):
        request_slices(offsets, 0)


@pytest.mark.parametrize("where", ["memory", "redis", "ray"])
def test_live_entry_point_reproduces_the_batch_values(
    dataset: Path, logs: Path, where: str, request: pytest.FixtureRequest
) -> None:
    """Replay the logged requests through the online path, from the state as of each
    request's time: every feature value equals the batch output. ``redis``: counters and
    histories in a real Redis (a stateless replica's state), the rest as in memory. ``ray``:
    the dataset and state written by Ray, 2 workers holding 7 key shards."""
    if where == "ray":
        dataset = request.getfixturevalue("slice_lists_by_ray")
    ds = _all(dataset)
    saved = FeatureState.load(dataset / "state")
    users = pd.read_parquet(logs / "users.parquet")
    fresh = FeatureState(SIM, saved.items, saved.context_vocabs, users, saved.user_vocabs)
    if where == "redis":
        import redis

        from serving.remote_state import remote_state

        client = redis.Redis.from_url(request.getfixturevalue("redis_url"), decode_responses=True)
        fresh = remote_state(fresh, client, "replay:", "replay:clock")
    live = LiveFeaturizer(fresh)
    req = pd.read_parquet(logs / "requests.parquet").set_index("request_id").loc[ds.request_id]
    imp = (
        pd.read_parquet(logs / "impressions.parquet").sort_values("position").groupby("request_id")
    )
    t_us = ((req["ts"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)).to_numpy()
    n_hist = 0
    for b, rid in enumerate(ds.request_id):
        r = req.loc[rid]
        rows = imp.get_group(rid)
        f = live.featurize(
            user_id=r["user_id"],
            query=r["query"],
            t_us=int(t_us[b]),
            item_ids=list(rows["item_id"]),
            lat=r["lat"],
            lon=r["lon"],
            context={"device": r["device"]},
        )
        lo, hi = ds.offsets[b], ds.offsets[b + 1]
        np.testing.assert_array_equal(f.num, ds.num[lo:hi], err_msg=rid)
        np.testing.assert_array_equal(f.cat, ds.cat[lo:hi], err_msg=rid)
        hl, hh = ds.hist_offsets[b], ds.hist_offsets[b + 1]
        np.testing.assert_array_equal(f.hist_num, ds.hist_num[hl:hh])
        np.testing.assert_array_equal(f.hist_cat, ds.hist_cat[hl:hh])
        n_hist += hh - hl
        m = len(rows)
        live.observe(Events(
            np.full(m, r["user_id"], object), np.full(m, r["query"], object),
            rows["item_id"].to_numpy(object), np.full(m, t_us[b]), rows["position"].to_numpy(),
            rows["clicked"].to_numpy(), rows["ordered"].to_numpy(),
        ))  # fmt: skip
    assert n_hist > 100


def test_state_snapshot_continues_where_the_logs_end(dataset: Path) -> None:
    st = FeatureState.load(dataset / "state")
    assert st.clock_us is not None
    live = LiveFeaturizer(st)
    items = [*st.items.ids[:5], "never-seen-item"]
    f = live.featurize(
        user_id="brand-new-user", query="hotpot", t_us=st.clock_us + 3600 * 10**6, item_ids=items
    )
    assert f.num.shape == (6, len(live.spec.numeric)) and np.isfinite(f.num).all()
    known = [x.name for x in live.spec.numeric].index("item_known")
    assert f.num[-1, known] == 0 and f.num[0, known] == 1
    assert len(f.hist_item_ids) == 0


def test_generic_features_without_config_and_items_without_attributes(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    pd.DataFrame(
        {
            "request_id": [1, 2, 3],
            "user_id": ["a", "b", "a"],
            "query": ["tea", "tea", "coffee"],
            "ts": pd.to_datetime(["2026-01-01T10:00Z", "2026-01-02T10:00Z", "2026-01-03T10:00Z"]),
        }
    ).to_parquet(logs / "requests.parquet")
    pd.DataFrame(
        {
            "request_id": [1, 1, 2, 3, 3],
            "item_id": ["x", "y", "x", "x", "zz"],
            "position": [1, 2, 1, 1, 2],
            "clicked": [True, False, True, False, False],
        }
    ).to_parquet(logs / "impressions.parquet")  # no 'ordered'; request 2 has one candidate
    pd.DataFrame({"item_id": ["x", "y"]}).to_parquet(logs / "items.parquet")
    res = build_features(logs, tmp_path / "ds", load_config(None), progress=False)
    names = res.manifest.numeric_names
    assert "item_ctr_7d" in names and "item_ctr_7d_rank" in names and "hist_len" in names
    ds = _all(tmp_path / "ds")
    assert len(ds) == 3 and ds.n_items == 5 and np.isfinite(ds.num).all()


def test_empty_and_one_request_logs_work(tmp_path: Path) -> None:
    for n in (0, 1):
        logs = tmp_path / f"logs{n}"
        logs.mkdir()
        pd.DataFrame(
            {
                "request_id": ["r"][:n],
                "user_id": ["u"][:n],
                "query": ["q"][:n],
                "ts": pd.to_datetime(["2026-01-01T10:00Z"][:n], utc=True),
            }
        ).to_parquet(logs / "requests.parquet")
        pd.DataFrame(
            {
                "request_id": ["r"][:n],
                "item_id": ["x"][:n],
                "position": [1][:n],
                "clicked": [True][:n],
            }
        ).to_parquet(logs / "impressions.parquet")
        res = build_features(logs, tmp_path / f"ds{n}", load_config(None), progress=False)
        assert sum(v["requests"] for v in res.manifest.splits.values()) == n


def test_bad_rows_are_counted_in_the_manifest(logs: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("requests", "items", "users"):
        pd.read_parquet(logs / f"{name}.parquet").to_parquet(bad / f"{name}.parquet")
    imp = pd.read_parquet(logs / "impressions.parquet")
    extra = imp.head(3).copy()
    extra["request_id"] = "no-such-request"
    dup = imp.head(2)
    pd.concat([imp, extra, dup]).to_parquet(bad / "impressions.parquet")
    res = build_features(bad, tmp_path / "ds", SIM, progress=False)
    assert res.manifest.bad_rows["impressions"] == {"unknown_request": 3, "duplicate_impression": 2}


def test_cli_writes_the_dataset_and_refuses_a_bad_config(
    logs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "features",
                "--logs",
                str(logs),
                "--out",
                str(tmp_path / "ds"),
                "--config",
                "sim",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "train" in out and (tmp_path / "ds" / "state" / "state.json").exists()
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[list]\ncompare = ['no_such_feature']\n")
    assert (
        main(
            ["features", "--logs", str(logs), "--out", str(tmp_path / "ds2"), "--config", str(cfg)]
        )
        == 2
    )
    assert "no_such_feature" in capsys.readouterr().err
    assert not (tmp_path / "ds2").exists()
    json.loads((tmp_path / "ds" / "manifest.json").read_text())
