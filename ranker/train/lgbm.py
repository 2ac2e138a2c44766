"""``train_lgbm``: the LightGBM LambdaMART baseline, as one typed function.

Flat per-candidate features: every numeric feature of the dataset (its list features and
history aggregates included) and the categorical ones (LightGBM categoricals, except the item
id, whose identity the counters already summarise). Early stopping follows validation NDCG@10
computed by the project's own metric: LightGBM's built-in NDCG scores a list without any
positive as 1, which would reward nothing. ``label_gain`` is 2^label - 1 up to the largest
label, the same gain as the metric.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np

from pipelines.lists.manifest import Manifest
from ranker.data import RankData
from ranker.inputs import lgbm_columns, lgbm_matrix
from ranker.kinds.lgbm import LgbmConfig
from ranker.metrics import ndcg

log = logging.getLogger(__name__)


@dataclass
class LgbmResult:
    booster: lgb.Booster
    best_iteration: int
    best_valid_ndcg: float
    feature_names: list[str]
    categorical: list[int]  # indices of LightGBM categorical features
    params: dict[str, Any] = field(default_factory=dict)
    history: list[float] = field(default_factory=list)
    history_se: list[float] = field(default_factory=list)  # each round's standard error


KEEP_ROUNDS = ("best", "one_se")


def one_se_round(curve: Sequence[float], se: Sequence[float], best: int) -> int:
    """The earliest 1-based round whose value is within one standard error of round
    ``best``'s (the one-standard-error rule: the simplest model not worse than the best by
    more than its noise)."""
    floor = curve[best - 1] - se[best - 1]
    return next(r + 1 for r in range(best) if curve[r] >= floor)


def lgbm_features(
    data: RankData, manifest: Manifest, extra_names: Sequence[str] = ()
) -> tuple[np.ndarray, list[str], list[int]]:
    """(N, F) float32 matrix, feature names and categorical column indices for LightGBM."""
    names, keep, cat_idx = lgbm_columns(manifest, extra_names)
    return lgbm_matrix(data.num, data.cat, keep), names, cat_idx


def train_lgbm(
    train: RankData,
    valid: RankData,
    manifest: Manifest,
    cfg: LgbmConfig,
    *,
    extra_names: Sequence[str] = (),
    callbacks: Sequence[Callable[[lgb.callback.CallbackEnv], None]] = (),
    network: dict[str, Any] | None = None,
    train_rows: lgb.Sequence | None = None,
    valid_rows: lgb.Sequence | None = None,
    bin_rows: np.ndarray | None = None,
) -> LgbmResult:
    """``network``: LightGBM's network settings when this is one worker of several
    (``ranker.train.lgbm_network``); ``train`` is then this worker's share of the lists.
    ``train_rows``, ``valid_rows``: that split's features streamed (``ranker.train.lgbm_stream``)
    instead of ``train``'s or ``valid``'s, which then need only labels, weights and positions.
    ``bin_rows``: feature rows of the whole train split (``bin_sample``) that LightGBM cuts
    its bins from, instead of its own sample of the rows it is given: the same bins in memory,
    streamed and on every worker of a launch (see ``bin_sample``)."""
    if cfg.keep_round not in KEEP_ROUNDS:
        raise ValueError(f"keep_round must be one of {KEEP_ROUNDS}, got {cfg.keep_round!r}")
    names, _, cat_idx = lgbm_columns(manifest, extra_names)

    def features(data: RankData, rows: lgb.Sequence | None) -> np.ndarray | lgb.Sequence:
        if rows is None:
            return lgbm_features(data, manifest, extra_names)[0]
        if len(rows) != len(data.labels):
            raise ValueError(f"{len(rows)} streamed rows for {len(data.labels)} labels")
        return rows

    x_va, x_tr = features(valid, valid_rows), features(train, train_rows)
    max_label = int(max(train.labels.max(initial=0), valid.lists.labels.max(initial=0), 1))
    params: dict[str, Any] = {
        "objective": "lambdarank",
        "metric": "None",
        "label_gain": [float(2**i - 1) for i in range(max_label + 1)],
        "lambdarank_truncation_level": cfg.truncation_level,
        "num_leaves": cfg.num_leaves,
        "learning_rate": cfg.learning_rate,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": cfg.feature_fraction,
        "bagging_fraction": cfg.bagging_fraction,
        "bagging_freq": 1 if cfg.bagging_fraction < 1 else 0,
        "lambda_l2": cfg.lambda_l2,
        "seed": cfg.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": cfg.threads,
        "verbosity": -1,
        "bin_construct_sample_cnt": cfg.bin_sample_rows,  # where LightGBM samples itself
    }
    bins = None
    if bin_rows is not None:
        # Cut here, before any network (the bins are not split among workers), with no
        # feature pre-filter: it would judge min_data_in_leaf on the sample's counts. The
        # train set takes the bins and these dataset settings (equal, so LightGBM does not
        # warn that it overrides them).
        params["feature_pre_filter"] = False
        binning = {
            "feature_pre_filter": False,
            "verbosity": -1,
            "bin_construct_sample_cnt": cfg.bin_sample_rows,
        }
        if network:
            binning["pre_partition"] = network["pre_partition"]
        bins = lgb.Dataset(
            bin_rows, feature_name=names, categorical_feature=cat_idx, params=binning
        ).construct()
    train_set = lgb.Dataset(
        x_tr,
        label=train.labels,
        group=train.lens,
        weight=train.weights,
        feature_name=names,
        categorical_feature=cat_idx,
        free_raw_data=False,
        position=np.clip(train.positions - 1, 0, None) if cfg.position_aware else None,
        reference=bins,
    )
    valid_set = lgb.Dataset(x_va, label=valid.lists.labels, group=valid.lens, reference=train_set)

    history_se: list[float] = []

    def feval(preds: np.ndarray, _: lgb.Dataset) -> tuple[str, float, bool]:
        s, labels, mask = valid.padded_scores(preds)  # the validation rule's view, as for all kinds
        per_list = ndcg(s, labels, mask=mask, k=cfg.eval_k)
        defined = per_list[~np.isnan(per_list)]
        history_se.append(
            float(defined.std(ddof=1) / np.sqrt(len(defined))) if len(defined) > 1 else 0.0
        )
        return f"ndcg@{cfg.eval_k}", float(defined.mean()) if len(defined) else float("nan"), True

    history: dict[str, Any] = {}
    booster = lgb.train(
        {**params, **(network or {})},
        train_set,
        num_boost_round=cfg.max_rounds,
        valid_sets=[valid_set],
        valid_names=["valid"],
        feval=feval,
        # every round kept (not cut at the best): the selection study reads them all; saving
        # and predicting use the best round
        keep_training_booster=True,
        callbacks=[
            lgb.early_stopping(cfg.early_stopping, first_metric_only=True, verbose=False),
            lgb.record_evaluation(history),
            *callbacks,
        ],
    )
    curve = list(history.get("valid", {}).get(f"ndcg@{cfg.eval_k}", []))
    best_it = booster.best_iteration or len(curve)
    if curve and cfg.keep_round == "one_se":
        kept = one_se_round(curve, history_se, best_it)
        log.info(
            "lightgbm: best valid ndcg@%d %.4f at round %d; one-SE rule keeps round %d (%.4f)",
            cfg.eval_k,
            curve[best_it - 1],
            best_it,
            kept,
            curve[kept - 1],
        )
        best_it = booster.best_iteration = kept
    best = curve[best_it - 1] if curve else float("nan")
    log.info("lightgbm: kept valid ndcg@%d %.4f at round %d", cfg.eval_k, best, best_it)
    return LgbmResult(booster, best_it, best, names, cat_idx, params, curve, history_se)


def bin_sample(n_rows: int, size: int, seed: int) -> np.ndarray:
    """The train rows (ascending) whose values LightGBM cuts its bins from, drawn from the
    whole split. Data-parallel LightGBM cuts each feature's bins from one worker's own rows
    (then shares them), so a launch's bins differ from one machine's, and a Sequence is
    sampled otherwise than a matrix; rows drawn here, from the whole split, give one set of
    bins to all of them: a streamed run grows one machine's trees, a launch its thresholds."""
    if size < 1:
        raise ValueError(f"bin_sample_rows must be >= 1, got {size}")
    if n_rows <= size:
        return np.arange(n_rows)
    rows = np.random.default_rng(seed).choice(n_rows, size, replace=False)
    return np.sort(rows)


def predict_lgbm(
    booster: lgb.Booster, data: RankData, manifest: Manifest, extra_names: Sequence[str] = ()
) -> np.ndarray:
    x, _, _ = lgbm_features(data, manifest, extra_names)
    return np.asarray(
        booster.predict(x, raw_score=True, num_iteration=booster.best_iteration or None), np.float32
    )
