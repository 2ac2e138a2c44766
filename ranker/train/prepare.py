"""What both trainers share: the splits, position-bias propensities, inverse propensity weights.

The same correction reaches both models (a fair fight): ``bias="ipw"`` weights every positive
by 1 / propensity(logged position), with propensities estimated once from the randomised
traffic of the train split; ``bias="none"`` leaves clicks as logged. Model-specific corrections
(the Transformer's position tower, LightGBM's position-aware lambdarank) are further options.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.lists.io import read_split
from pipelines.lists.manifest import Manifest
from pipelines.lists.table import Lists
from ranker.data import RankData
from ranker.propensity import Propensities, estimate_propensities

log = logging.getLogger(__name__)
BIAS_MODES = ("none", "ipw", "tower", "lambdarank")  # tower: Transformer; lambdarank: LightGBM


@dataclass
class Splits:
    manifest: Manifest
    train: Lists
    valid: Lists
    propensities: Propensities | None


def load_splits(dataset: Path, with_test: bool = False) -> tuple[Splits, Lists | None]:
    m = Manifest.load(dataset)
    train, valid = read_split(dataset, "train", m), read_split(dataset, "valid", m)
    if len(train) == 0:
        raise ValueError(f"{dataset}: the train split is empty")
    if len(valid) == 0:
        raise ValueError(f"{dataset}: the valid split is empty (early stopping needs it)")
    props = propensities_from(train)
    test = read_split(dataset, "test", m) if with_test else None
    return Splits(m, train, valid, props), test


def propensities_from(lists: Lists) -> Propensities | None:
    """Examination propensities from the randomised requests of a split, if it has any."""
    if lists.randomized is None or lists.positions is None or lists.policy_positions is None:
        return None
    per_item = np.repeat(lists.randomized, lists.list_lengths())
    if not per_item.any():
        return None
    p = estimate_propensities(lists.positions, lists.policy_positions, lists.labels > 0, per_item)
    log.info(
        "propensities from %d clicks on randomised requests: p(k) = k^-%.3f", p.clicks_used, p.eta
    )
    return p


def ipw_weights(lists: Lists, props: Propensities | None, bias: str) -> np.ndarray | None:
    """Per-candidate weights: 1 / propensity on positives under ``ipw``; None otherwise."""
    if bias not in BIAS_MODES:
        raise ValueError(f"bias correction must be one of {BIAS_MODES}")
    if bias != "ipw":
        return None
    if props is None or lists.positions is None:
        raise ValueError("bias='ipw' needs randomised traffic with logged positions in train")
    w = props.ipw(lists.positions)
    return np.where(lists.labels > 0, w, 1.0).astype(np.float32)


def validation_labels(lists: Lists, props: Propensities | None, bias: str) -> np.ndarray | None:
    """Labels for early stopping and tuning under a bias correction: NDCG gains divided by the
    propensity of the logged position (IPS-weighted NDCG), so that validation rewards ranking
    relevant items rather than imitating the logging policy's order. None: plain labels.

    The gain of label y is 2^y - 1; the returned y' satisfies 2^y' - 1 = (2^y - 1) / p(pos).
    """
    if bias == "none" or props is None or lists.positions is None:
        return None
    gain = (np.exp2(lists.labels.astype(np.float64)) - 1) * props.ipw(lists.positions)
    return np.log2(1 + gain)


def rank_data(
    lists: Lists,
    manifest: Manifest,
    weights: np.ndarray | None = None,
    extra_num: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> RankData:
    return RankData(
        lists,
        extra_num=extra_num,
        weights=weights,
        max_history=manifest.history_max_len or 50,
        labels=labels,
    )
