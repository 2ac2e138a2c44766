"""Online experiments: the statistics, and a whole A/B test played by simulated users."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ops.online.abtest import run_abtest
from ops.online.online import online_report
from ops.online.online_report import write_online_report
from ops.online.online_stats import (
    interleaving_preference,
    ratio,
    relative_lift,
    sample_ratio_mismatch,
)
from ops.online.server_proc import background_server
from serving.experiments import Experiment, Variant, two_arm_toml


def test_srm_passes_a_correct_split_and_fails_a_planted_55_45_bug() -> None:
    exp = Experiment(
        "e", "salt", "ab", (Variant("control", "a", 50), Variant("treatment", "b", 50))
    )
    users = [f"user-{i}" for i in range(20_000)]
    assigned = [exp.assign(u).name for u in users]
    counts = {v: assigned.count(v) for v in ("control", "treatment")}
    ok = sample_ratio_mismatch(counts, {"control": 50, "treatment": 50})
    assert not ok.alarm and ok.p_value > 0.001
    # The bug: one treatment user in ten is served (and counted) as control.
    buggy = [("control" if v == "treatment" and i % 10 == 0 else v) for i, v in enumerate(assigned)]
    counts = {v: buggy.count(v) for v in ("control", "treatment")}
    assert 0.54 < counts["control"] / len(users) < 0.56
    bad = sample_ratio_mismatch(counts, {"control": 50, "treatment": 50})
    assert bad.alarm and bad.p_value < 1e-6


def test_delta_method_variance_agrees_with_a_user_bootstrap() -> None:
    rng = np.random.default_rng(0)
    n = rng.integers(1, 20, 3000).astype(float)  # requests per user
    x = rng.binomial(n.astype(int), rng.beta(2, 8, 3000)).astype(float)  # orders per user
    r = ratio(x, n)
    boot = [(x[i].sum() / n[i].sum()) for i in (rng.integers(0, 3000, 3000) for _ in range(400))]
    assert r.value == pytest.approx(x.sum() / n.sum())
    assert np.sqrt(r.var) == pytest.approx(np.std(boot), rel=0.2)


def test_lift_ci_mde_and_power() -> None:
    rng = np.random.default_rng(1)

    def arm(rate: float, users: int) -> tuple[np.ndarray, np.ndarray]:
        n = rng.integers(1, 10, users).astype(float)
        return rng.binomial(n.astype(int), rate).astype(float), n

    big = relative_lift(ratio(*arm(0.30, 20_000)), ratio(*arm(0.33, 20_000)))
    assert big.ci95[0] > 0 and big.p_value < 0.001 and 0.05 < big.lift < 0.15
    small = relative_lift(ratio(*arm(0.30, 500)), ratio(*arm(0.30, 500)))
    assert small.ci95[0] < 0 < small.ci95[1]
    assert small.mde > big.mde > 0  # less traffic, larger detectable effect


def test_interleaving_preference_binomial_test() -> None:
    p = interleaving_preference(40, 60, 7)
    assert p.share_b == 0.6 and p.ci95[0] < 0.6 < p.ci95[1]
    assert p.p_value == pytest.approx(0.0569, abs=1e-3)
    assert (
        interleaving_preference(0, 0, 3).share_b != interleaving_preference(0, 0, 3).share_b
    )  # NaN


@pytest.mark.parametrize("mode", ["ab", "interleave"])
def test_simulated_users_play_an_experiment_and_the_report_judges_it(
    mode: str, small_registry: Path, small_sim: Path, small_lists: Path, tmp_path: Path
) -> None:
    exp = tmp_path / "exp.toml"
    exp.write_text(two_arm_toml("lgbm-vs-transformer", "s", mode, "lgbm", "transformer"))
    logs = tmp_path / "logs"
    with background_server(
        small_registry, small_lists / "state", logs, experiment=exp
    ) as server:  # `ranker serve`, as the demo runs it
        summary = run_abtest(
            server.url,
            small_sim / "world",
            requests=120,
            users=60,
            seed=3,
            progress=False,
            token=server.client_token,
        )
    assert summary.errors == 0 and summary.requests == 120 and summary.users <= 60
    assert summary.clicks > 0
    report = online_report(logs, small_sim / "world")
    paths = write_online_report(report, tmp_path / "report")
    saved = json.loads(paths["json"].read_text())
    if mode == "ab":
        assert set(saved["variants"]) == {"control", "treatment"}
        t = saved["variants"]["treatment"]
        assert t["model"] == "transformer" and 0 <= t["oracle_ndcg@10"]["value"] <= 1
        assert {"orders_per_request", "clicks_per_request", "ctr"} <= set(
            saved["lifts"]["treatment"]
        )
        assert (
            saved["srm"]["p_value"] is not None
            and "vs control on orders per request" in saved["verdict"]
        )
        assert sum(v["requests"] for v in saved["variants"].values()) == 120
    else:
        pref = saved["preference"]
        assert (
            pref["wins_a"] + pref["wins_b"] > 0
            and "interleaving treatment vs control" in saved["verdict"]
        )
    assert "Interference" in paths["md"].read_text() and "<svg" in paths["html"].read_text()
