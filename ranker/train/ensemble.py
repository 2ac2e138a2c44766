"""Training a seed ensemble (``--set ensemble=N``): the members after the first, trained with
the first one's settings from their own seeds, then validated together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ranker.data import RankData
from ranker.ensemble import SeedEnsemble, member_seed
from ranker.model import FeatureSpec, Ranker, RankerConfig
from ranker.train.launch import SINGLE, Launch
from ranker.train.scoring import evaluate_ndcg
from ranker.train.stream_data import StreamedSplit
from ranker.train.transformer import (
    Callback,
    TrainConfig,
    TrainResult,
    pick_device,
    train_transformer,
)


def train_ensemble(
    first: TrainResult,
    train: RankData | StreamedSplit,
    valid: RankData | StreamedSplit,
    spec: FeatureSpec,
    model_cfg: RankerConfig,
    cfg: TrainConfig,
    *,
    progress: bool = False,
    callbacks: Sequence[Callback] = (),
    position_prior: np.ndarray | None = None,
    launch: Launch = SINGLE,
    select_by_loss: bool = False,
) -> tuple[TrainResult, list[dict[str, Any]]]:
    """``first`` (trained with ``cfg``) and ``cfg.ensemble - 1`` more members as one model.

    Returns the ensemble's result (its validation NDCG is the ensemble's own; under the loss
    rule, which needs a click model the ensemble does not have, the mean of its members'
    values; its history and best epoch are the first member's) and one line per member for
    the model card. An ensemble is not resumed: its result carries no optimiser state."""
    results = [first]
    for k in range(1, cfg.ensemble):
        member_cfg = replace(cfg, seed=member_seed(cfg.seed, k))
        results.append(
            train_transformer(
                train,
                valid,
                spec,
                model_cfg,
                member_cfg,
                progress=progress,
                callbacks=callbacks,
                position_prior=position_prior,
                launch=launch,
                select_by_loss=select_by_loss,
            )
        )
    members = []
    for r in results:
        assert isinstance(r.model, Ranker)
        members.append(r.model)
    model = SeedEnsemble(members)
    if select_by_loss:
        score = float(np.mean([r.best_valid_ndcg for r in results]))
    else:
        device = launch.device(pick_device(cfg.device))
        score = evaluate_ndcg(model.to(device), valid, cfg.eval_k, device)
        model.cpu()
    lines = [
        {
            "seed": member_seed(cfg.seed, k),
            "best_epoch": r.best_epoch,
            "valid": r.best_valid_ndcg,  # the selection rule's value
        }
        for k, r in enumerate(results)
    ]
    return TrainResult(model, first.best_epoch, score, first.history, {}), lines
