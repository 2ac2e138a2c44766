"""What both trainers share: the splits, position-bias propensities, inverse propensity weights.

The same correction reaches both models (a fair fight): ``bias="ipw"`` weights every positive
by 1 / propensity(logged position), with propensities estimated once from the train split's
logged traffic and checked against its randomised requests (``propensities_from``);
``bias="none"`` leaves clicks as logged. Model-specific corrections
(the Transformer's position tower, LightGBM's position-aware lambdarank) are further options.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipelines.lists.io import read_split
from pipelines.lists.manifest import Manifest
from pipelines.lists.table import Lists
from ranker.propensity import (
    Propensities,
    check_source,
    estimate_propensities,
    observed_propensities,
    pick_propensities,
)

if TYPE_CHECKING:  # torch: `ranker --help` and the commands without training parse this module
    from ranker.data import RankData

log = logging.getLogger(__name__)
BIAS_MODES = ("none", "ipw", "tower", "lambdarank")  # tower: Transformer; lambdarank: LightGBM


@dataclass
class Splits:
    manifest: Manifest
    train: Lists
    valid: Lists
    propensities: Propensities | None


def load_splits(
    dataset: Path,
    with_test: bool = False,
    light_train: bool = False,
    light_valid: bool = False,
    threads: int = 2,
    propensities: str = "auto",
) -> tuple[Splits, Lists | None]:
    """``light_train``, ``light_valid``: that split without its features (a trainer that
    streams them). ``threads``, ``propensities``: for ``propensities_from``."""
    m = Manifest.load(dataset)

    def read(split: str, light: bool) -> Lists:
        if not light:
            return read_split(dataset, split, m)
        from ranker.train.lgbm_stream import light_split

        return light_split(Path(dataset) / f"{split}.parquet", m)

    train, valid = read("train", light_train), read("valid", light_valid)
    if len(train) == 0:
        raise ValueError(f"{dataset}: the train split is empty")
    if len(valid) == 0:
        raise ValueError(f"{dataset}: the valid split is empty (early stopping needs it)")
    props = _cached_propensities(m.fingerprint, light_train, train, threads, propensities)
    test = read_split(dataset, "test", m) if with_test else None
    return Splits(m, train, valid, props), test


# Propensities by (dataset fingerprint, streamed train split): the observational fit costs about
# a second per training, and a process often trains many models on one dataset (a benchmark's
# matrix, the test suite: 2 of its minutes). The fingerprint hashes the split files.
_PROPENSITIES: dict[tuple[str, bool, int, str], Propensities | None] = {}


def _cached_propensities(
    fingerprint: str, light: bool, train: Lists, threads: int, source: str
) -> Propensities | None:
    if not fingerprint:
        return propensities_from(train, threads, source)
    key = (fingerprint, light, threads, source)
    if key not in _PROPENSITIES:
        _PROPENSITIES[key] = propensities_from(train, threads, source)
    return _PROPENSITIES[key]


def propensities_from(lists: Lists, threads: int = 2, source: str = "auto") -> Propensities | None:
    """Examination propensities of a split: from all its logged traffic when it carries
    features, checked against (and overruled by) its randomised requests; see
    ``ranker.propensity.reconcile``. ``source``: one estimate alone instead
    (``ranker.propensity.PROPENSITY_SOURCES``). None without logged positions or clicks."""
    check_source(source)  # before the costly fit
    if lists.positions is None:
        if source != "auto":
            raise ValueError(f"propensities from {source} traffic need logged positions")
        return None
    clicked = lists.labels > 0
    randomised = None
    if lists.randomized is not None and lists.policy_positions is not None:
        per_item = np.repeat(lists.randomized, lists.list_lengths())
        if per_item.any():
            randomised = estimate_propensities(
                lists.positions, lists.policy_positions, clicked, per_item
            )
    observed = None
    has_features = lists.num.shape[1] + lists.cat.shape[1] > 0  # a streamed split has none
    if source == "observational" and not has_features:
        raise ValueError(
            "propensities from observational traffic need the train split's features, which "
            "a streamed training (stream=true) does not load: use auto or randomised with it"
        )
    if has_features and source != "randomised":  # the fit is the costly one
        observed = observed_propensities(
            np.column_stack([lists.num, lists.cat]), lists.positions, clicked, threads=threads
        )
    p = pick_propensities(randomised, observed, source)
    if p is not None:
        log.info(
            "propensities p(k) = k^-%.3f from %s (%d clicks); estimates weighed: %s",
            p.eta,
            p.source,
            p.clicks_used,
            {k: round(v, 3) for k, v in p.considered.items()},
        )
    return p


def ipw_weights(lists: Lists, props: Propensities | None, bias: str) -> np.ndarray | None:
    """Per-candidate weights: 1 / propensity on positives under ``ipw``; None otherwise."""
    if bias not in BIAS_MODES:
        raise ValueError(f"bias correction must be one of {BIAS_MODES}")
    if bias != "ipw":
        return None
    if props is None or lists.positions is None:
        raise ValueError("bias='ipw' needs logged positions and clicks in train")
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


# Model selection (early stopping, tuning, the epoch kept) reads validation NDCG@10 under one
# of these rules, the same for every kind. "examined" (the default): only the candidates at or
# above the last click or order of each validation list, in the logged order, with the labels
# as logged: a cascade reading, where a user who stops after an order never saw what was below,
# so those candidates are unknown rather than negatives. "ips": every candidate, gains divided
# by the propensity of the logged position (the rule before). Measured on three simulated
# worlds kept apart from evaluation (benchmarks/selection_rules.py, LightGBM by round): "ips"
# kept rounds 20-40 and lost 0.050 test oracle NDCG@10 against the best round; "examined" with
# early stopping kept rounds 160-410 and lost 0.012 (0.005 with LightGBM's one-SE round).
# "loss": the training loss on the validation split with the position tower on (the model's own
# click model), lower is better; only for kinds with a click model (the Transformer's
# ``validation_rules``). Why: ``benchmarks/selection_transformer.py`` and the README's
# "A validation signal for the re-ranker".
VALIDATION_RULES = ("examined", "ips", "loss")


@dataclass(frozen=True)
class Validation:
    labels: np.ndarray | None  # gains as the metric reads them; None: the logged labels
    mask: np.ndarray | None  # (N,) candidates the metric reads; None: all
    metric: str  # the model card's name for it


def examined(lists: Lists) -> np.ndarray | None:
    """(N,) bool: at or above the list's last positive in the logged order; None when the
    lists carry no logged positions (judged datasets: every candidate counts)."""
    if lists.positions is None:
        return None
    pos = lists.positions.astype(np.int64)
    lens = lists.list_lengths()
    list_of = np.repeat(np.arange(len(lens)), lens)
    last = np.zeros(len(lens), np.int64)
    np.maximum.at(last, list_of, np.where(lists.labels > 0, pos, 0))
    return pos <= last[list_of]


def validation_set(
    lists: Lists, props: Propensities | None, bias: str, rule: str = "examined"
) -> Validation:
    if rule not in VALIDATION_RULES:
        raise ValueError(f"validation rule must be one of {VALIDATION_RULES}, got {rule!r}")
    if rule == "loss":  # the logged clicks, every candidate: what the training loss reads
        return Validation(None, None, "neg_heldout_loss")
    seen = examined(lists) if rule == "examined" else None
    if seen is not None:
        return Validation(None, seen, "examined_ndcg@10")
    labels = validation_labels(lists, props, bias)
    return Validation(labels, None, "ndcg@10" if labels is None else "ips_ndcg@10")


def rank_data(
    lists: Lists,
    manifest: Manifest,
    weights: np.ndarray | None = None,
    extra_num: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    eval_mask: np.ndarray | None = None,
) -> RankData:
    from ranker.data import RankData

    return RankData(
        lists,
        extra_num=extra_num,
        weights=weights,
        max_history=manifest.history_max_len or 50,
        labels=labels,
        eval_mask=eval_mask,
    )
