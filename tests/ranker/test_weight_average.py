"""The weight average training validates and keeps: its decay for the data's size, and the
average itself against a loop reference."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from ranker.model import RankerConfig
from ranker.train.checkpoint import spec_from_manifest
from ranker.train.config import TrainConfig
from ranker.train.ema import EMA
from ranker.train.prepare import load_splits, rank_data
from ranker.train.transformer import train_transformer


def test_the_decay_spans_an_epoch_where_an_epoch_has_many_steps() -> None:
    default = TrainConfig()
    assert default.ema_decay(547) == pytest.approx(1 - 1 / 547)  # 50,000 requests, 64 a batch
    assert default.ema_decay(50) == 0.99  # small data: the decay as given (it spans more)
    assert default.ema_decay(0) == 0.99
    assert TrainConfig(ema_epochs=2.0).ema_decay(547) == pytest.approx(1 - 1 / 1094)
    assert TrainConfig(ema_epochs=0.0).ema_decay(547) == 0.99  # the decay alone, as before
    assert TrainConfig(ema=0.0).ema_decay(547) == 0.0  # the raw weights


def test_the_average_follows_its_recurrence() -> None:
    """After each update, shadow = decay * shadow + (1 - decay) * weights, from the start."""
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, 0.9)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(step + 1))
        ema.update(model)
        for k, v in model.state_dict().items():
            expected[k] = 0.9 * expected[k] + 0.1 * v
    for k, v in expected.items():
        torch.testing.assert_close(ema.shadow[k], v)


def test_training_averages_with_the_decay_for_its_data(
    small_lists: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sp, _ = load_splits(small_lists)
    m = sp.manifest
    train, valid = rank_data(sp.train, m), rank_data(sp.valid, m)
    cfg = TrainConfig(epochs=1, batch_lists=4, threads=1)
    steps = -(-len(train) // 4)
    assert steps > 100  # enough steps an epoch that the epoch's span sets the decay
    mc = RankerConfig(d_model=16, n_heads=2, n_layers=1, d_ff=32)
    with caplog.at_level(logging.INFO, logger="ranker.train.transformer"):
        train_transformer(train, valid, spec_from_manifest(m), mc, cfg, progress=False)
    want = f"weight average: decay {1 - 1 / steps:.5f} a step ({steps} steps an epoch)"
    assert want in caplog.text
