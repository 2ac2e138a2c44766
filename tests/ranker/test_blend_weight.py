"""The blend's weight chosen on validation (``--set blend=auto``): the click likelihood against a
loop reference, the choice on judged labels and on clicks, and the trained re-ranker's card and
scores."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from _shared_models import SMALL_TRANSFORMER

from ranker.data import mask_of, to_padded
from ranker.scoring import load
from ranker.train.blend_weight import (
    FALLBACK_WEIGHT,
    SCALES,
    WEIGHTS,
    choose_weight,
    click_likelihood,
)
from ranker.train.prepare import load_splits, propensities_from
from ranker.train.run import TrainRequest, run_training


def likelihood_reference(
    scores: np.ndarray, clicks: np.ndarray, mask: np.ndarray, log_p: np.ndarray
) -> float:
    """List by list: minus the cross-entropy of softmax(scale x score + log p) against the
    clicks' gain shares, averaged over lists with a click; the best scale of SCALES."""
    best = -np.inf
    for scale in SCALES:
        losses = []
        for i in range(len(scores)):
            m = mask[i]
            gain = 2.0 ** clicks[i, m] - 1
            if gain.sum() <= 0:
                continue
            logits = scale * scores[i, m].astype(np.float64) + log_p[i, m]
            log_soft = logits - np.logaddexp.reduce(logits)
            losses.append(-(gain / gain.sum() * log_soft).sum())
        best = max(best, -float(np.mean(losses)))
    return best


def z_padded(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row by row z-scores over the real entries (population sd; a constant row gives 0)."""
    out = np.zeros(scores.shape)
    for i, m in enumerate(mask):
        s = scores[i, m].astype(np.float64)
        if len(s):
            out[i, m] = (s - s.mean()) / (s.std() or 1.0)
    return out


def ragged(rng: np.random.Generator, lists: int) -> np.ndarray:
    mask = np.zeros((lists, 8), bool)
    for i, n in enumerate(rng.integers(1, 9, lists)):
        mask[i, :n] = True
    return mask


def test_the_click_likelihood_matches_a_loop_reference() -> None:
    rng = np.random.default_rng(0)
    mask = ragged(rng, 40)
    scores = rng.normal(size=mask.shape)
    clicks = (rng.random(mask.shape) < 0.2) & mask
    clicks[3] = False  # a list without a click does not count
    log_p = np.log(1.0 / (1 + np.arange(8)))[None, :].repeat(40, 0)
    got = click_likelihood(scores, clicks.astype(float), mask=mask, log_propensity=log_p)
    want = likelihood_reference(scores, clicks.astype(float), mask, log_p)
    assert got == pytest.approx(want, abs=1e-5)


def test_judged_labels_choose_the_model_that_ranks_them() -> None:
    rng = np.random.default_rng(1)
    mask = np.ones((300, 10), bool)
    rel = rng.integers(0, 5, mask.shape).astype(float)
    good, noise = rel + rng.normal(0, 0.5, mask.shape), rng.normal(size=mask.shape)
    alone = choose_weight(good, noise, rel, mask=mask, log_propensity=None)
    assert alone.weight == 1.0 and alone.signal == "ndcg@10"
    assert list(alone.curve) == [str(w) for w in WEIGHTS]
    assert choose_weight(noise, good, rel, mask=mask, log_propensity=None).weight == 0.0
    # two models with independent errors: a mix of the two ranks better than either
    other = rel + rng.normal(0, 1.5, mask.shape)
    noisy = rel + rng.normal(0, 1.5, mask.shape)
    assert 0.0 < choose_weight(noisy, other, rel, mask=mask, log_propensity=None).weight < 1.0
    # nothing to tell apart: the baseline (ties go to the smaller weight)
    assert choose_weight(good, good, rel, mask=mask, log_propensity=None).weight == 0.0


def test_nothing_to_read_gives_the_equal_blend_and_says_so() -> None:
    rng = np.random.default_rng(3)
    mask = ragged(rng, 30)
    a, b = rng.normal(size=mask.shape), rng.normal(size=mask.shape)
    log_p = np.zeros(mask.shape)
    for log_propensity in (None, log_p):  # no click, no positive judgement
        got = choose_weight(a, b, np.zeros(mask.shape), mask=mask, log_propensity=log_propensity)
        assert (got.weight, got.signal) == (FALLBACK_WEIGHT, "none")
    clicks = np.where(mask, rng.random(mask.shape) < 0.3, 0).astype(float)
    a[0, 0] = np.nan  # one score that is not a number: no weight's value is finite (0 x NaN)
    got = choose_weight(a, b, clicks, mask=mask, log_propensity=log_p)
    assert all(np.isnan(v) for v in got.curve.values()) and len(got.curve) == len(WEIGHTS)
    assert (got.weight, got.signal) == (FALLBACK_WEIGHT, "none")


def test_clicks_under_position_bias_choose_the_model_that_knows_relevance() -> None:
    """One click per list, drawn from softmax(relevance + log p(position)) with the logged
    order random: the likelihood leans to the model that scores relevance, whichever side."""
    rng = np.random.default_rng(2)
    mask = ragged(rng, 600)
    rel = rng.normal(size=mask.shape)
    log_p = np.log(1.0 / (1 + np.argsort(rng.random(mask.shape), axis=1)))
    logits = np.where(mask, 2 * rel + log_p, -np.inf)
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    clicks = np.zeros(mask.shape)
    clicks[np.arange(600), [rng.choice(8, p=p) for p in prob]] = 1
    knows, guesses = rel + rng.normal(0, 0.3, mask.shape), rng.normal(size=mask.shape)
    got = choose_weight(knows, guesses, clicks, mask=mask, log_propensity=log_p)
    assert got.signal == "click_likelihood" and got.weight >= 0.8, got
    assert choose_weight(guesses, knows, clicks, mask=mask, log_propensity=log_p).weight <= 0.2


def test_the_default_reranker_serves_the_blend_weight_its_card_chose(
    small_registry: Path, small_lists: Path, tmp_path: Path
) -> None:
    reg = tmp_path / "registry"
    for name in ("lgbm", "transformer"):
        shutil.copytree(small_registry / name, reg / name)
    ref = run_training(
        TrainRequest(
            "transformer",
            small_lists,
            reg,
            name="auto",
            bias="tower",
            reranker="lgbm",
            progress=False,
            overrides=SMALL_TRANSFORMER,  # the default re-ranker: blend=auto
        )
    )
    blend, alone = load(ref.path), load(reg / "transformer")
    line = blend.card.details["blend"]
    assert blend.card.reranker is not None and blend.card.reranker["blend"] == "auto"
    assert line["chosen_by"] == "click_likelihood"  # the small world logs positions
    curve = line["curve"]
    assert list(curve) == [str(w) for w in WEIGHTS]
    assert line["weight"] == max(WEIGHTS, key=lambda w: curve[str(w)])
    # the curve, recomputed apart on validation: the two models' scores, the logged clicks and
    # positions, the propensities of the train split (the loop reference above)
    w = line["weight"]
    sp, test = load_splits(small_lists, with_test=True)
    assert test is not None
    valid, props = sp.valid, propensities_from(sp.train)
    assert props is not None and valid.positions is not None
    vmask = mask_of(valid.offsets)
    vz = [
        z_padded(to_padded(load(reg / n).score(valid, sp.manifest), valid.offsets), vmask)
        for n in ("lgbm", "transformer")
    ]
    clicks = to_padded(valid.labels.astype(float), valid.offsets)
    log_p = to_padded(np.log(props.at(valid.positions)), valid.offsets)
    for at in sorted({0.0, w}):
        want = likelihood_reference((1 - at) * vz[0] + at * vz[1], clicks, vmask, log_p)
        assert curve[str(at)] == pytest.approx(want, abs=2e-4)
    got = to_padded(blend.score(test, sp.manifest), test.offsets)
    base = to_padded(load(reg / "lgbm").score(test, sp.manifest), test.offsets)
    own = to_padded(alone.score(test, sp.manifest), test.offsets)
    for i, m in enumerate(mask_of(test.offsets)):
        z = [
            (s[i, m] - s[i, m].mean()) / (s[i, m].std() or 1.0)
            for s in (base.astype(float), own.astype(float))
        ]
        np.testing.assert_allclose(got[i, m], (1 - w) * z[0] + w * z[1], atol=1e-4)
