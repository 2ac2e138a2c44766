"""The "loss" validation rule: the training loss on held-out clicks, the position tower on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from ranker.losses import bce_loss, softmax_loss
from ranker.model import Ranker, RankerConfig, init_weights
from ranker.scoring import load
from ranker.train.checkpoint import spec_from_manifest
from ranker.train.prepare import load_splits, rank_data
from ranker.train.run import TrainRequest, run_training
from ranker.train.scoring import held_out_loss

FAST = {"epochs": 1, "d_model": 32, "n_layers": 1, "d_ff": 64, "batch_lists": 128}


def numpy_softmax_loss(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float:
    """An independent reference: per list with a click, -sum(target * log_softmax), target
    proportional to 2**label - 1 over real candidates; the mean over those lists."""
    losses = []
    for s, y, m in zip(scores, labels, mask, strict=True):
        s, g = s[m].astype(np.float64), 2.0 ** y[m].astype(np.float64) - 1
        if g.sum() <= 0:
            continue
        log_p = s - s.max() - np.log(np.exp(s - s.max()).sum())
        losses.append(-(g / g.sum() * log_p).sum())
    return float(np.mean(losses))


def numpy_bce_loss(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float:
    """An independent reference: the mean over every real candidate of the logistic loss of
    its score against "clicked" (label > 0)."""
    s, y = scores[mask].astype(np.float64), (labels[mask] > 0).astype(np.float64)
    return float(np.mean(np.logaddexp(0.0, s) - y * s))


@pytest.mark.parametrize(
    ("loss", "reference", "per_candidate"),
    [(softmax_loss, numpy_softmax_loss, False), (bce_loss, numpy_bce_loss, True)],
)
def test_held_out_loss_matches_numpy_whatever_the_batching(
    small_lists: Path,
    loss: Callable[..., torch.Tensor],
    reference: Callable[..., float],
    per_candidate: bool,
) -> None:
    sp, _ = load_splits(small_lists)
    m = sp.manifest
    valid = rank_data(sp.valid, m)
    model = Ranker(spec_from_manifest(m), RankerConfig(d_model=16, n_layers=1, d_ff=32))
    model.position_bias = torch.nn.Embedding(129, 1)  # a position tower that matters
    init_weights(model, 0)
    model.eval()  # (no dropout in the reference either)
    with torch.no_grad():
        model.position_bias.weight.copy_(-torch.linspace(0, 3, 129)[:, None])
    whole = next(iter(valid.batches(len(valid))))
    with torch.no_grad():
        s = model(
            whole.num,
            whole.cat,
            whole.mask,
            whole.hist_num,
            whole.hist_cat,
            whole.hist_mask,
            whole.positions,
        ).numpy()
    want = reference(s, whole.labels.numpy(), whole.mask.numpy())
    cpu = torch.device("cpu")
    for batch in (7, 64, len(valid)):
        got = held_out_loss(model, valid, loss, cpu, batch_lists=batch, per_candidate=per_candidate)
        assert got == pytest.approx(want, rel=1e-5)
    # The position tower is read: without it the loss differs.
    tower = model.position_bias
    model.position_bias = None
    assert abs(held_out_loss(model, valid, loss, cpu, per_candidate=per_candidate) - want) > 1e-3
    model.position_bias = tower


def test_the_transformer_selects_by_the_loss_rule_and_lightgbm_refuses_it(
    small_lists: Path, tmp_path: Path
) -> None:
    ref = run_training(
        TrainRequest(
            "transformer",
            small_lists,
            tmp_path,
            bias="tower",
            validation="loss",
            progress=False,
            overrides=FAST,
        )
    )
    card = load(ref).card
    assert card.validation_metric == "neg_heldout_loss"
    history = card.details["history"]
    # The kept value is the best (highest) minus-loss among the validations, and a loss.
    assert card.valid_ndcg == max(h["valid_ndcg"] for h in history) and card.valid_ndcg < 0
    with pytest.raises(ValueError, match="lgbm cannot select by the 'loss' rule"):
        run_training(TrainRequest("lgbm", small_lists, tmp_path, validation="loss", progress=False))


def test_the_transformers_own_rule_is_the_loss_standalone_and_ips_as_a_residual_reranker() -> None:
    from ranker.kinds import get_kind

    kind = get_kind("transformer")
    assert kind.own_validation({}, "tower") == "loss"
    # the default re-ranker is a blend, whose Transformer selects as the standalone one
    assert kind.own_validation({}, "tower", reranks=True) == "loss"
    assert kind.own_validation({"blend": 0.5}, "tower", reranks=True) == "loss"
    assert kind.own_validation({"blend": 0}, "tower", reranks=True) == "ips"
    assert kind.own_validation({"position_prior": False}, "tower") == "examined"
    assert kind.own_validation({}, "none") == "examined"
    assert get_kind("lgbm").own_validation({}, "lambdarank", reranks=False) == "examined"
