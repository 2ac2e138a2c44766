"""Training a seed ensemble (``--set ensemble=N``): the members after the first, trained with
the first one's settings from their own seeds, then validated together; and one model
distilled from such an ensemble (``--set distill=N``); and either blended with the re-ranker's
baseline (``--set blend=W`` or ``auto``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

import numpy as np

from pipelines.lists.table import Lists
from ranker.data import RankData, mask_of, to_padded
from ranker.ensemble import BaselineBlend, SeedEnsemble, TransformerModel, member_seed
from ranker.metrics import ndcg as list_ndcg
from ranker.model import FeatureSpec, Ranker, RankerConfig
from ranker.propensity import Propensities
from ranker.train.blend_weight import WeightChoice, choose_weight, z_scores
from ranker.train.launch import SINGLE, Launch
from ranker.train.scoring import evaluate_ndcg, predict
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
    result = TrainResult(model, first.best_epoch, score, first.history, {}, first.ema_decay)
    return result, lines


def train_distilled(
    first: TrainResult,
    train: RankData | StreamedSplit,
    valid: RankData | StreamedSplit,
    spec: FeatureSpec,
    model_cfg: RankerConfig,
    cfg: TrainConfig,
    **common: Any,
) -> tuple[TrainResult, list[dict[str, Any]]]:
    """One model (a student) taught by ``first`` and ``cfg.distill - 1`` more members, trained
    as ``train_ensemble`` trains them: from its own seed (one no teacher had), on the clicks
    and on the teachers' mean served score within each list (``ranker.losses.distill_loss``).

    The mean of the raw scores, not the served ensemble's standardised one: softmax-trained
    scores are log click shares, and their mean keeps that scale for the student's softmax.
    ``common``: ``train_ensemble``'s keyword arguments (progress, callbacks, position_prior,
    launch, select_by_loss), passed on to every training. Returns the student's result and
    one line per teacher for the model card."""
    if not isinstance(train, RankData):
        raise ValueError("distillation needs the train split in memory, not stream=true")
    taught = replace(cfg, ensemble=cfg.distill)
    teachers: list[TransformerModel] = [first.model]
    lines = [{"seed": cfg.seed, "best_epoch": first.best_epoch, "valid": first.best_valid_ndcg}]
    if cfg.distill > 1:
        ensemble, lines = train_ensemble(first, train, valid, spec, model_cfg, taught, **common)
        assert isinstance(ensemble.model, SeedEnsemble)
        teachers = [cast(Ranker, m) for m in ensemble.model.members]
    device = common.get("launch", SINGLE).device(pick_device(cfg.device))
    scores = np.mean([predict(t.to(device), train, device) for t in teachers], axis=0)
    for t in teachers:
        t.cpu()
    student_cfg = replace(cfg, seed=member_seed(cfg.seed, cfg.distill))
    student = train_transformer(
        train, valid, spec, model_cfg, student_cfg, teacher=scores, **common
    )
    return student, lines


def train_members(
    first: TrainResult,
    train: RankData | StreamedSplit,
    valid: RankData | StreamedSplit,
    spec: FeatureSpec,
    model_cfg: RankerConfig,
    cfg: TrainConfig,
    **common: Any,
) -> tuple[TrainResult, dict[str, list[dict[str, Any]] | None]]:
    """What ``cfg`` makes of the chosen settings' first model: a seed ensemble
    (``ensemble > 1``), a student of its teachers (``distill > 0``) or itself; with the model
    card's lines for the members (``ensemble``) or teachers (``distilled_from``)."""
    if cfg.distill > 0:
        student, lines = train_distilled(first, train, valid, spec, model_cfg, cfg, **common)
        return student, {"ensemble": None, "distilled_from": lines}
    if cfg.ensemble > 1:
        ensemble, lines = train_ensemble(first, train, valid, spec, model_cfg, cfg, **common)
        return ensemble, {"ensemble": lines, "distilled_from": None}
    return first, {"ensemble": None, "distilled_from": None}


def blend_with_baseline(
    result: TrainResult,
    spec: FeatureSpec,
    weight: float | str,
    valid: RankData,
    valid_own: RankData | StreamedSplit,
    device: str = "cpu",
    launch: Launch = SINGLE,
    propensities: Propensities | None = None,
) -> tuple[TrainResult, dict[str, Any]]:
    """The trained Transformer (one model or an ensemble) blended with the baseline
    (``BaselineBlend``): ``spec`` and ``valid`` carry the baseline's inputs after the dataset's,
    ``valid_own`` is the Transformer's own validation (the same lists and labels without them).
    ``weight`` "auto": chosen on validation (``ranker.train.blend_weight``; the click model's
    ``propensities`` where the lists have logged positions).
    Returns the blend's result (the Transformer's selection value kept) and the card's lines:
    the weight (and how it was chosen), and NDCG@10 on the validation labels (the clicks under
    the loss rule) of the blend, the Transformer alone and the baseline alone."""
    inner = result.model
    assert not isinstance(inner, BaselineBlend)
    if not isinstance(valid_own, RankData):
        raise ValueError("a blend needs the validation split in memory, not stream=true")
    at = launch.device(pick_device(device))  # this rank's device; training left the model on cpu
    # Each model scored once on validation; the blend, its weight and the card's three figures
    # all read these (the served blend: BaselineBlend.forward, the same z-scores)
    own = predict(inner.to(at), valid_own, at)  # (N,)
    inner.cpu()
    base = valid.num[:, len(inner.spec.num_transforms)]  # (N,) BaselineBlend.baseline_input
    offsets = valid.offsets
    mask = mask_of(offsets)  # (B, L)
    own_padded, base_padded = to_padded(own, offsets), to_padded(base, offsets)  # (B, L) each
    chosen: dict[str, Any] = {}
    if weight == "auto":
        choice = auto_weight(own_padded, base_padded, valid.lists, propensities)
        weight = choice.weight
        chosen = {"chosen_by": choice.signal, "curve": choice.curve}
    w = float(weight)
    z_own, z_base = z_scores(own_padded, mask), z_scores(base_padded, mask)
    blended = ((1.0 - w) * z_base + w * z_own)[mask]  # (N,) in the split's order

    def valid_ndcg(data: RankData, scores: np.ndarray) -> float:
        s, y, m = data.padded_scores(scores)
        return float(np.nanmean(list_ndcg(s, y, mask=m, k=10)))

    line = {
        "weight": weight,
        **chosen,
        "valid_ndcg@10": {
            "blend": valid_ndcg(valid, blended),
            "transformer": valid_ndcg(valid_own, own),
            "baseline": valid_ndcg(valid, base),
        },
    }
    return replace(result, model=BaselineBlend(inner, spec, w)), line


def auto_weight(
    own: np.ndarray, base: np.ndarray, lists: Lists, propensities: Propensities | None
) -> WeightChoice:
    """``choose_weight`` on every candidate of the validation ``lists`` with their labels as
    logged, from the Transformer's and the baseline's (B, L) padded scores: the click
    likelihood where positions (and so propensities) were logged, NDCG@10 on the labels
    otherwise (judged data)."""
    offsets = lists.offsets
    labels = to_padded(lists.labels.astype(np.float32), offsets)  # (B, L)
    log_p = None
    if lists.positions is not None and propensities is not None:
        log_p = to_padded(np.log(propensities.at(lists.positions)), offsets)  # (B, L)
    return choose_weight(own, base, labels, mask=mask_of(offsets), log_propensity=log_p)
