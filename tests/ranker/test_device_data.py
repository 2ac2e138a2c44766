"""The device-resident lists (ranker.device_data) against the per-batch host path: the same
batches, in the same order, and the same training."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.lists.manifest import NumericFeature
from ranker import device_data
from ranker.data import Batch, RankData
from ranker.device_data import DeviceData, footprint, place
from ranker.model import RankerConfig
from ranker.train.checkpoint import spec_from_manifest
from ranker.train.prepare import load_splits
from ranker.train.scoring import predict
from ranker.train.transformer import (
    TrainConfig,
    scaled_lr,
    train_transformer,
)

FIELDS = ("num", "cat", "mask", "hist_num", "hist_cat", "hist_mask", "labels", "weights")
CPU = torch.device("cpu")


def split(small_lists: Path, name: str = "train", max_history: int = 50) -> RankData:
    """A split with every kind of input: extra numeric columns, weights, relabelled targets."""
    sp, _ = load_splits(small_lists)
    lists = sp.train if name == "train" else sp.valid
    rng = np.random.default_rng(1)
    n = lists.n_items
    return RankData(
        lists,
        extra_num=rng.normal(size=(n, 2)).astype(np.float32),
        weights=rng.uniform(0.5, 2, n).astype(np.float32),
        labels=lists.labels * 1.5,
        max_history=max_history,
    )


def assert_same(a: Batch, b: Batch) -> None:
    np.testing.assert_array_equal(a.lists, b.lists)
    for f in (*FIELDS, "positions"):
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and x.shape == y.shape, f
        assert torch.equal(x, y), f


@pytest.mark.parametrize("max_history", [50, 3])  # 3: histories cut to their latest events
def test_resident_batches_equal_the_per_batch_path(small_lists: Path, max_history: int) -> None:
    data = split(small_lists, max_history=max_history)
    dd = DeviceData(data, CPU, chunk_lists=97)  # chunks of odd widths fill the storage
    assert dd.num.shape[1] == data.lens.max() and dd.hist_num.shape[1] <= max_history
    rng = np.random.default_rng(0)
    no_history = np.flatnonzero(np.diff(data.hist_offsets) == 0)
    assert len(no_history) > 0
    cases = [
        rng.choice(len(data), 64, replace=False),
        np.argsort(data.lens)[:5],  # the shortest lists: narrow batches
        np.array([int(np.argmax(data.lens))]),
        no_history[:3],  # histories all empty: width 1, nothing real
        np.arange(len(data)),
    ]
    for idx in cases:
        assert_same(data.batch(idx), dd.batch(idx))


@pytest.mark.parametrize("shuffle", [True, False])
def test_resident_batch_order_is_the_per_batch_order(small_lists: Path, shuffle: bool) -> None:
    data = split(small_lists)
    dd = DeviceData(data, CPU)
    r1, r2 = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(2):  # two epochs: the rng moves on identically
        old = list(data.batches(50, shuffle=shuffle, rng=r1))
        new = list(dd.batches(50, shuffle=shuffle, rng=r2))
        assert len(old) == len(new) == math.ceil(len(data) / 50)
        for a, b in zip(old, new, strict=True):
            assert_same(a, b)
    assert r1.bit_generator.state == r2.bit_generator.state


def test_footprint_and_placement(small_lists: Path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    data = split(small_lists)
    fp = footprint(data)
    dd = place(data, CPU, "on", "train")
    assert isinstance(dd, DeviceData) and dd.nbytes == fp.nbytes
    assert fp.unpadded_nbytes < fp.nbytes
    assert place(data, CPU, "off") is data
    # Too large for the budget: the per-batch path, and a log line that says so.
    monkeypatch.setattr(device_data, "memory_budget", lambda device, share: fp.nbytes - 1)
    with caplog.at_level(logging.WARNING, logger="ranker.device_data"):
        assert place(data, CPU, "auto", "train") is data
    assert "not resident" in caplog.text and "per step on the host" in caplog.text
    monkeypatch.setattr(device_data, "memory_budget", lambda device, share: fp.nbytes)
    assert isinstance(place(data, CPU, "auto", "train"), DeviceData)
    with pytest.raises(ValueError, match="device_data"):
        place(data, CPU, "sometimes")


def test_learning_rate_scales_with_the_square_root_of_the_batch() -> None:
    assert scaled_lr(TrainConfig(lr=1e-3, batch_lists=64)) == pytest.approx(1e-3)
    assert scaled_lr(TrainConfig(lr=1e-3, batch_lists=256)) == pytest.approx(2e-3)
    assert scaled_lr(TrainConfig(lr=1e-3, batch_lists=256, lr_scaling="none")) == 1e-3
    with pytest.raises(ValueError, match="lr_scaling"):
        scaled_lr(TrainConfig(lr_scaling="linear"))


def test_training_through_the_resident_path_is_deterministic(small_lists: Path) -> None:
    """Same seed twice: the same weights; and on the CPU the same weights as the per-batch
    path, which trains on equal batches in the same order."""
    sp, _ = load_splits(small_lists)
    train, valid = split(small_lists), split(small_lists, "valid")
    extra = [NumericFeature(f"extra_{j}", "test") for j in range(2)]  # split()'s extra columns
    spec = spec_from_manifest(sp.manifest, extra)
    mc = RankerConfig(d_model=16, n_heads=2, n_layers=1, d_ff=32)
    # eval_every_lists: a validation inside the epoch too, on the resident valid split
    base = {"epochs": 1, "batch_lists": 96, "threads": 1, "seed": 5, "eval_every_lists": 700}
    cfg = TrainConfig(**base, device_data="on")
    a = train_transformer(train, valid, spec, mc, cfg, progress=False)
    b = train_transformer(train, valid, spec, mc, cfg, progress=False)
    old = train_transformer(
        train, valid, spec, mc, TrainConfig(**base, device_data="off"), progress=False
    )
    for other in (b, old):
        sa, so = a.model.state_dict(), other.model.state_dict()
        assert all(torch.equal(sa[k], so[k]) for k in sa)
        assert [h.valid_ndcg for h in a.history] == [h.valid_ndcg for h in other.history]
    assert len(a.history) >= 3 and a.best_valid_ndcg > 0.3
    # Scores from the resident split equal the per-batch path's.
    np.testing.assert_array_equal(predict(a.model, DeviceData(valid, CPU)), predict(a.model, valid))
