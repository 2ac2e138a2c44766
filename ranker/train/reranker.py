"""Re-ranker inputs (PRM / Meituan style): the baseline's score and rank for every candidate.

On the train split the baseline scores are out-of-fold: the train lists are cut into K folds
and each fold is scored by a LightGBM trained on the other folds with the baseline's own
parameters and number of rounds, so the Transformer never sees a score the baseline fitted to
that very list. Valid, test and live requests use the published baseline itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np

from pipelines.lists.manifest import Manifest, NumericFeature
from ranker.data import RankData
from ranker.propensity import Propensities
from ranker.train.lgbm import lgbm_features

if TYPE_CHECKING:
    from ranker.kinds.base import TrainJob
    from ranker.scoring import LoadedModel

log = logging.getLogger(__name__)
BASELINE_SCORE = NumericFeature("baseline_score", "reranker")  # also added to the output
EXTRA = (BASELINE_SCORE, NumericFeature("baseline_rank", "reranker", "log1p"))


@dataclass(frozen=True)
class BaselineRecipe:
    """How the published baseline was trained, repeated for each out-of-fold model: the same
    parameters and rounds, position-aware when it is (LightGBM's lambdarank position model),
    and the same weights (inverse propensities under ``ipw``). Recorded in the re-ranker's card.
    """

    params: dict[str, Any]
    rounds: int
    position_aware: bool = False
    bias_correction: str = "none"  # the baseline's: its weights are rebuilt from it
    # the baseline's own propensities (from its card) for those weights, not the re-ranker's:
    # the two can differ (ranker train --propensities, or a baseline from an older version)
    propensities: Propensities | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rounds": self.rounds,
            "position_aware": self.position_aware,
            "bias_correction": self.bias_correction,
        }
        if self.propensities is not None and self.bias_correction == "ipw":
            out["propensities"] = {"eta": self.propensities.eta, "source": self.propensities.source}
        return out


def out_of_fold_scores(
    recipe: BaselineRecipe,
    data: RankData,
    manifest: Manifest,
    folds: int = 5,
    seed: int = 0,
    extra_names: Sequence[str] = (),
    share: tuple[int, int] = (0, 1),
) -> np.ndarray:
    """(N,) baseline scores for the train lists, each from a model that did not see its list.

    ``data``'s weights must be the baseline's (see ``BaselineRecipe``); its logged positions
    feed the position model when the baseline had one. ``share`` = (part, parts): fit only the
    folds ``f`` with ``f % parts == part`` and leave the other folds' rows at 0, so that
    ``parts`` processes (torchrun ranks) each fit their share and the sum of their arrays is the
    whole (each fold's model is the same whoever fits it: same rows, seed and threads).
    """
    part, parts = share
    if not 0 <= part < parts:
        raise ValueError(f"share {share}: the part must be in [0, {parts})")
    x, names, cat_idx = lgbm_features(data, manifest, extra_names)
    fold_of = np.random.default_rng(seed).integers(0, folds, len(data))
    row_fold = np.repeat(fold_of, data.lens)
    positions = np.clip(data.positions - 1, 0, None) if recipe.position_aware else None
    out = np.zeros(len(x), np.float32)
    mine = range(part, folds, parts)
    if not mine:  # more ranks than folds: this one fits none
        return out
    # The feature bins are found once, on every train list, as the published baseline's were
    # (its training binned the same rows); each fold's dataset reuses them. Finding them again
    # per fold cost 60% of each fold's dataset construction (0.5 s against 0.2 s measured on
    # the tests' 100k rows) and gave each fold slightly different bins from the baseline's.
    bins = lgb.Dataset(
        x, feature_name=names, categorical_feature=cat_idx, params=recipe.params
    ).construct()
    for f in mine:
        tr_lists = np.flatnonzero(fold_of != f)
        tr_rows = row_fold != f
        ds = lgb.Dataset(
            x[tr_rows],
            label=data.labels[tr_rows],
            group=data.lens[tr_lists],
            weight=data.weights[tr_rows],
            feature_name=names,
            categorical_feature=cat_idx,
            position=None if positions is None else positions[tr_rows],
            reference=bins,
        )
        model = lgb.train(recipe.params, ds, num_boost_round=recipe.rounds)
        out[~tr_rows] = model.predict(x[~tr_rows], raw_score=True)
        log.info("out-of-fold baseline scores: fold %d/%d done", f + 1, folds)
    return out


def extra_statistics(values: np.ndarray) -> list[NumericFeature]:
    """The re-ranker inputs' feature entries, normalised on the train (out-of-fold) values."""
    feats = []
    for j, f in enumerate(EXTRA):
        v = values[:, j].astype(np.float64)
        v = np.log1p(np.maximum(v, 0)) if f.transform == "log1p" else v
        sd = float(v.std()) if len(v) else 1.0
        feats.append(
            NumericFeature(
                f.name,
                f.group,
                f.transform,
                f.default,
                float(v.mean()) if len(v) else 0.0,
                sd if sd > 1e-6 else 1.0,
            )
        )
    return feats


@dataclass(frozen=True)
class RerankInputs:
    """What a re-ranker trains on, and what its card records about the baseline."""

    train: RankData
    valid: RankData  # its numeric inputs include the baseline's, as served
    # the baseline's inputs, normalised on train's values (a blend: on valid's, for the card
    # only: the blend reads the raw baseline score)
    extra: list[NumericFeature]
    card: dict[str, Any]


def rerank_inputs(job: TrainJob, baseline: LoadedModel, blend: float | str = 0.0) -> RerankInputs:
    """The residual re-ranker's splits with the baseline's inputs appended: out-of-fold scores on
    train (the baseline's recipe, ``out_of_fold_scores``), the published baseline's on valid.

    ``blend`` > 0 or "auto": the Transformer is trained on the dataset's features alone and
    blended with the baseline afterwards, so train needs no out-of-fold scores (``train`` is the
    job's own);
    ``valid`` still carries the baseline's inputs, to validate the blend as served."""
    from ranker.inputs import baseline_inputs
    from ranker.propensity import Propensities
    from ranker.train.distributed import host_group, sum_over_ranks
    from ranker.train.prepare import ipw_weights

    m = job.manifest
    va_extra = baseline_inputs(baseline.score(job.splits.valid, m), job.valid.offsets)
    valid = RankData(
        job.splits.valid,
        extra_num=va_extra,
        max_history=job.valid.max_history,
        labels=job.valid.labels,
        eval_mask=job.valid.eval_mask,
    )
    inputs = [f.name for f in EXTRA]
    if blend:
        blended: dict[str, Any] = {"baseline": str(baseline.ref), "blend": blend, "inputs": inputs}
        return RerankInputs(job.train, valid, extra_statistics(va_extra), blended)
    d, trained = baseline.card.details, baseline.card.training
    recorded = baseline.card.propensities
    recipe = BaselineRecipe(
        # this training's threads: the baseline's count would oversubscribe the cores of a
        # host that runs several ranks
        {**d["params"], "num_threads": job.threads},
        int(d["best_iteration"]),
        position_aware=bool(trained.get("position_aware", False)),
        bias_correction=baseline.card.bias_correction,
        propensities=None if recorded is None else Propensities.from_record(recorded),
    )
    weights = ipw_weights(job.splits.train, recipe.propensities, recipe.bias_correction)
    as_trained = RankData(job.splits.train, weights=weights, max_history=0)
    # under torchrun each rank fits its share of the folds, and the shares are summed
    group = host_group(job.launch)
    share = (job.launch.rank, job.launch.world)
    oof = out_of_fold_scores(recipe, as_trained, m, seed=job.seed, share=share)
    tr_extra = baseline_inputs(sum_over_ranks(oof, group), job.train.offsets)
    train = RankData(
        job.splits.train,
        extra_num=tr_extra,
        weights=job.train.weights,
        max_history=job.train.max_history,
    )
    card = {
        "baseline": str(baseline.ref),
        "folds": 5,
        "out_of_fold": recipe.to_dict(),
        "inputs": inputs,
    }
    return RerankInputs(train, valid, extra_statistics(tr_extra), card)
