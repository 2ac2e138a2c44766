"""LightGBM's train features streamed from Parquet row groups (``--set stream=true``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.lists.io import read_split
from pipelines.lists.manifest import Manifest
from ranker.data import RankData, candidate_rows
from ranker.inputs import lgbm_columns
from ranker.train.lgbm import lgbm_features
from ranker.train.lgbm_stream import ParquetRows, light_split
from ranker.train.run import TrainRequest, run_training


def test_streamed_rows_are_the_in_memory_matrix(small_lists: Path) -> None:
    m = Manifest.load(small_lists)
    path = small_lists / "train.parquet"
    assert pq.ParquetFile(path).metadata.num_row_groups > 2  # reads cross row groups below
    x, _, _ = lgbm_features(RankData(read_split(small_lists, "train", m)), m)
    rows = ParquetRows(path, lgbm_columns(m)[1])
    assert len(rows) == len(x) and rows.batch_size >= 1
    got = np.concatenate([rows[i : i + 997] for i in range(0, len(rows), 997)])
    assert got.dtype == np.float64 and np.array_equal(got, x.astype(np.float64))
    picks = [0, len(x) - 1, int(rows.starts[1]), int(rows.starts[1]) - 1, 5]
    assert np.array_equal(rows[picks], x[picks].astype(np.float64))
    assert np.array_equal(rows[-1], x[-1].astype(np.float64))
    with pytest.raises(IndexError):
        rows[len(x)]
    with pytest.raises(IndexError):
        rows[0:10:2]


def test_a_workers_view_streams_only_its_own_lists(small_lists: Path) -> None:
    """A torchrun worker's rows (every second list): the in-memory subset's matrix, read
    across row groups, by slices and by single rows."""
    m = Manifest.load(small_lists)
    data = RankData(read_split(small_lists, "train", m))
    mine = np.arange(1, len(data), 2)
    x, _, _ = lgbm_features(data.subset(mine), m)
    rows = ParquetRows(
        small_lists / "train.parquet", lgbm_columns(m)[1], candidate_rows(data.offsets, mine)
    )
    assert len(rows) == len(x) < len(data.labels)
    got = np.concatenate([rows[i : i + 997] for i in range(0, len(rows), 997)])
    assert np.array_equal(got, x.astype(np.float64))
    picks = [0, 7, len(x) - 1]
    assert np.array_equal(rows[picks], x[picks].astype(np.float64))
    assert np.array_equal(rows[-1], x[-1].astype(np.float64))


def test_light_split_keeps_everything_but_the_features(small_lists: Path) -> None:
    m = Manifest.load(small_lists)
    full, light = read_split(small_lists, "train", m), light_split(small_lists / "train.parquet", m)
    assert light.num.shape == (full.n_items, 0) and light.cat.shape == (full.n_items, 0)
    assert light.hist_offsets is None and light.item_ids[0] is None
    for name in ("offsets", "labels", "positions", "policy_positions", "randomized", "request_id"):
        assert np.array_equal(getattr(light, name), getattr(full, name)), name


def test_streamed_training_publishes_the_same_model(small_lists: Path, tmp_path: Path) -> None:
    """Same data, same recipe, the same bin sample (ranker.train.lgbm.bin_sample): the trees
    of the loaded split, tree for tree. A sample smaller than the split, where LightGBM's
    own sampling would differ between a matrix and a Sequence."""
    refs = {
        name: run_training(
            TrainRequest(
                "lgbm",
                small_lists,
                tmp_path,
                name=name,
                progress=False,
                overrides={**o, "bin_sample_rows": 5000, "max_rounds": 40},
            )
        )
        for name, o in (("mem", {}), ("stream", {"stream": True}))
    }
    cards = {k: json.loads((r.path / "manifest.json").read_text()) for k, r in refs.items()}
    assert cards["stream"]["training"]["stream"] is True
    assert cards["stream"]["valid_ndcg"] == cards["mem"]["valid_ndcg"]
    trees = {k: (r.path / "model.txt").read_text() for k, r in refs.items()}
    trees = {k: t[t.index("Tree=0") : t.index("end of trees")] for k, t in trees.items()}
    assert trees["stream"] == trees["mem"]


def test_a_streamed_validation_split_gives_the_same_curve(small_lists: Path) -> None:
    """The validation features through a Sequence are binned with the train split's bins, so
    every round scores validation exactly as from the matrix: the same curve, the same round."""
    from ranker.kinds.lgbm import LgbmConfig
    from ranker.train.lgbm import train_lgbm

    m = Manifest.load(small_lists)
    train = RankData(read_split(small_lists, "train", m))
    valid = RankData(read_split(small_lists, "valid", m))
    light = RankData(light_split(small_lists / "valid.parquet", m))
    cfg = LgbmConfig(max_rounds=30, early_stopping=30, threads=1)
    a = train_lgbm(train, valid, m, cfg)
    rows = ParquetRows(small_lists / "valid.parquet", lgbm_columns(m)[1])
    b = train_lgbm(train, light, m, cfg, valid_rows=rows)
    assert len(a.history) == 30 and a.history == b.history
    assert a.best_iteration == b.best_iteration
    with pytest.raises(ValueError, match="streamed rows"):
        train_lgbm(train, RankData(read_split(small_lists, "test", m)), m, cfg, valid_rows=rows)
