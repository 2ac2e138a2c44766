"""Position-bias propensities read from logged traffic (ranker.propensity.observed_propensities)
and their reconciliation with the randomised-swap estimate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.world.world import World
from ranker.propensity import Propensities, observed_propensities, power_law, reconcile
from ranker.train.prepare import load_splits, propensities_from


def logged_clicks(
    eta: float, hidden: float, seed: int, n_lists: int = 4000, length: int = 20
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lists ranked by a noisy logger, clicked under examination k ** -eta.

    Relevance follows two features and, with weight ``hidden``, a signal the logger ranks by
    but the features do not carry. Returns features (N, 3), 1-based positions (N,), clicks (N,).
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_lists, length, 3))  # (B, L, 3)
    h = rng.normal(size=(n_lists, length))  # (B, L), seen by the logger only
    merit = x[..., 0] + 0.5 * x[..., 1] + hidden * h  # (B, L)
    logger = merit + rng.normal(0.0, 1.0, merit.shape)
    position = np.argsort(np.argsort(-logger, axis=1), axis=1) + 1  # (B, L), 1 = top
    p_click = position.astype(np.float64) ** -eta / (1.0 + np.exp(3.0 - merit))
    clicked = rng.random(p_click.shape) < p_click
    return x.reshape(-1, 3), position.reshape(-1), clicked.reshape(-1)  # (N, 3), (N,), (N,)


@pytest.mark.parametrize("eta", [0.6, 1.0, 1.4])
def test_the_observational_slope_recovers_a_known_power_law(eta: float) -> None:
    """Against clicks drawn with a known examination curve: the logger's noise moves the same
    features across positions, which is what identifies the slope."""
    features, position, clicked = logged_clicks(eta, hidden=0.0, seed=1)
    p = observed_propensities(features, position, clicked)
    assert p is not None and p.source == "observational"
    assert abs(p.eta - eta) < 0.06, p.eta
    assert p.clicks_used == int(clicked.sum())
    np.testing.assert_allclose(p.values[:5], np.arange(1, 6) ** -p.eta)


def test_a_logger_ranking_by_what_the_features_lack_steepens_the_observational_slope() -> None:
    """The documented failure: confounding makes the slope too steep. This is why randomised
    traffic may overrule it (``reconcile``)."""
    features, position, clicked = logged_clicks(0.8, hidden=1.5, seed=2)
    p = observed_propensities(features, position, clicked)
    assert p is not None
    assert p.eta > 0.8 + 0.2, p.eta


def test_observed_propensities_refuse_data_without_spread() -> None:
    features = np.zeros((50, 2))
    assert observed_propensities(features, np.arange(50) % 5 + 1, np.zeros(50, bool)) is None
    assert observed_propensities(features, np.ones(50), np.arange(50) % 2 == 0) is None


def test_observed_propensities_are_deterministic() -> None:
    features, position, clicked = logged_clicks(1.0, hidden=0.0, seed=3, n_lists=1500)
    a = observed_propensities(features, position, clicked)
    b = observed_propensities(features, position, clicked)
    assert a is not None and b is not None and a.eta == b.eta


def props(eta: float, source: str, se: float | None = None) -> Propensities:
    return Propensities(power_law(eta, 30), clicks_used=100, eta=eta, source=source, eta_se=se)


def test_reconcile_keeps_an_observational_slope_the_experiment_does_not_show_too_steep() -> None:
    # flatter than a noisy experiment, even by 1.98 of its standard errors (world 59)
    chosen = reconcile(props(1.39, "randomised", se=0.2467), props(0.903, "observational"))
    assert chosen is not None and chosen.source == "observational" and chosen.eta == 0.903
    assert chosen.considered == {
        "randomised": 1.39,
        "observational": 0.903,
        "randomised_se": 0.2467,
    }
    # steeper, but inside the one-sided interval: 0.4 < 1.645 * 0.25
    kept = reconcile(props(0.9, "randomised", se=0.25), props(1.3, "observational"))
    assert kept is not None and kept.source == "observational"


def test_reconcile_lets_the_experiment_overrule_a_too_steep_observational_slope() -> None:
    """What confounding does (the test above with a hidden signal): the experiment wins."""
    chosen = reconcile(props(0.95, "randomised", se=0.1), props(1.4, "observational"))
    assert chosen is not None and chosen.source == "randomised" and chosen.eta == 0.95
    assert chosen.eta_se == 0.1 and chosen.considered["observational"] == 1.4
    # just past the one-sided bound: 0.42 > 1.645 * 0.25
    past = reconcile(props(0.9, "randomised", se=0.25), props(1.32, "observational"))
    assert past is not None and past.source == "randomised"


def test_reconcile_with_one_estimate_or_none() -> None:
    only = reconcile(None, props(0.9, "observational"))
    assert only is not None and only.eta == 0.9 and only.considered == {"observational": 0.9}
    alone = reconcile(props(1.1, "randomised", se=None), None)
    assert alone is not None and alone.source == "randomised"
    # a randomised estimate without pairs to fit carries no standard error: it cannot overrule
    kept = reconcile(props(1.0, "randomised", se=None), props(0.7, "observational"))
    assert kept is not None and kept.source == "observational"
    assert reconcile(None, None) is None


def test_the_splits_propensities_follow_the_worlds_effective_examination(
    small_sim: Path, small_lists: Path
) -> None:
    """On the simulated world (the same tolerance as the randomised estimate's own test in
    test_training.py), with both estimates recorded."""
    splits, _ = load_splits(small_lists)
    p = splits.propensities
    assert p is not None
    assert set(p.considered) >= {"randomised", "observational"}
    world = World.load(small_sim / "world")
    truth = world.effective_examination(
        world.sample_searches(800, np.random.default_rng(0)), np.random.default_rng(1), 10
    )
    err = np.abs(np.log(p.values[:10]) - np.log(truth))
    assert err.max() < 0.3, (p.source, np.round(p.values[:10], 3), np.round(truth, 3))
    # A streamed split carries no features: only the randomised estimate is left.
    light = splits.train.select(np.arange(len(splits.train)))
    light.num, light.cat = light.num[:, :0], light.cat[:, :0]
    alone = propensities_from(light)
    assert alone is not None and alone.source == "randomised"


def test_the_card_records_which_estimate_was_used(small_lists: Path, tmp_path: Path) -> None:
    from ranker.registry import resolve
    from ranker.train.run import TrainRequest, run_training

    ref = run_training(
        TrainRequest("lgbm", small_lists, tmp_path, progress=False, overrides={"max_rounds": 5})
    )
    recorded = resolve(ref.path).card().propensities
    assert recorded is not None
    assert recorded["source"] in ("observational", "randomised")
    assert recorded["requested"] == "auto"
    assert set(recorded["considered"]) == {"randomised", "randomised_se", "observational"}
    chosen = recorded["considered"][recorded["source"]]
    assert recorded["eta"] == chosen
    np.testing.assert_allclose(recorded["values"][:3], np.arange(1, 4) ** -chosen)


def test_the_propensity_fit_uses_the_trainings_threads(
    small_lists: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranks of a launch on one host each fit the propensities: with a fixed two threads each,
    two ranks on two cores spun against each other (50 s instead of 3 under torchrun)."""
    from ranker.train import prepare
    from ranker.train.run import TrainRequest, run_training

    seen: list[int] = []

    def recording(*args: object, threads: int, **kwargs: object) -> Propensities | None:
        seen.append(threads)
        return observed_propensities(*args, threads=threads, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(prepare, "_PROPENSITIES", {})  # not from an earlier test's fit
    monkeypatch.setattr(prepare, "observed_propensities", recording)
    overrides = {"max_rounds": 3}
    run_training(TrainRequest("lgbm", small_lists, tmp_path, threads=1, overrides=overrides))
    assert seen == [1]


def test_a_requested_estimate_is_used_and_recorded_or_refused(
    small_lists: Path, tmp_path: Path
) -> None:
    from ranker.registry import resolve
    from ranker.train.run import TrainRequest, run_training

    train = load_splits(small_lists)[0].train
    forced = propensities_from(train, source="randomised")
    auto = propensities_from(train)
    assert forced is not None and auto is not None
    assert forced.source == "randomised" and forced.eta == auto.considered["randomised"]
    observed = propensities_from(train, source="observational")
    assert observed is not None and observed.eta == auto.considered["observational"]
    # the card says what was asked for and what was used
    ref = run_training(
        TrainRequest(
            "lgbm",
            small_lists,
            tmp_path,
            propensities="randomised",
            progress=False,
            overrides={"max_rounds": 3},
        )
    )
    recorded = resolve(ref.path).card().propensities
    assert recorded is not None
    assert (recorded["requested"], recorded["source"]) == ("randomised", "randomised")
    np.testing.assert_allclose(recorded["values"], forced.to_list()[:20])
    # what cannot be had is refused, naming the reason, not quietly swapped
    with pytest.raises(ValueError, match="one of"):
        propensities_from(train, source="swaps")
    no_swaps = train.select(np.arange(len(train)))
    assert no_swaps.randomized is not None
    no_swaps.randomized = np.zeros_like(no_swaps.randomized)
    with pytest.raises(ValueError, match="no randomised requests"):
        propensities_from(no_swaps, source="randomised")
    no_positions = train.select(np.arange(len(train)))
    no_positions.positions = None
    with pytest.raises(ValueError, match="need logged positions"):
        propensities_from(no_positions, source="observational")
    assert propensities_from(no_positions) is None  # auto: judged labels simply have none
    streamed = train.select(np.arange(len(train)))
    streamed.num, streamed.cat = streamed.num[:, :0], streamed.cat[:, :0]
    with pytest.raises(ValueError, match="stream=true"):
        propensities_from(streamed, source="observational")
