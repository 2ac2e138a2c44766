"""Offline evaluation: cluster bootstrap, paired tests, the report's contract and verdict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ops.cli import main
from ranker.evaluate.stats import Clusters, mean_ci, paired_difference


def test_cluster_bootstrap_is_wider_than_a_request_bootstrap_when_users_matter() -> None:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(100), 20)  # 100 users, 20 requests each
    user_effect = rng.normal(0, 1, 100)[users]
    values = user_effect + rng.normal(0, 0.1, len(users))
    by_user = mean_ci(values, Clusters.of(users, n_boot=500, seed=1))
    by_request = mean_ci(values, Clusters.of(np.arange(len(users)), n_boot=500, seed=1))
    assert by_user.ci95[0] < values.mean() < by_user.ci95[1]
    width = lambda e: e.ci95[1] - e.ci95[0]  # noqa: E731
    assert width(by_user) > 3 * width(by_request)


def test_nan_requests_are_left_out_and_counted() -> None:
    v = np.array([1.0, np.nan, 0.0, np.nan])
    est = mean_ci(v, Clusters.of(np.array(["a", "a", "b", "b"]), n_boot=200))
    assert est.value == 0.5 and est.n == 2


def test_paired_test_detects_a_real_difference_and_not_a_null_one() -> None:
    rng = np.random.default_rng(2)
    users = np.repeat(np.arange(200), 5)
    base = rng.normal(0.5, 0.2, len(users))
    cl = Clusters.of(users, n_boot=500, n_perm=2000, seed=0)
    better = paired_difference(base + 0.05 + rng.normal(0, 0.05, len(users)), base, cl)
    assert better.ci95[0] > 0 and better.p_value < 0.001
    same = paired_difference(base + rng.normal(0, 0.05, len(users)), base, cl)
    assert same.ci95[0] < 0 < same.ci95[1] and same.p_value > 0.01


@pytest.fixture(scope="module")
def registry(small_registry: Path) -> Path:
    return small_registry


def test_evaluate_writes_the_three_reports_with_the_contract(
    small_lists: Path, registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "evaluate",
            "--data",
            str(small_lists),
            "--models",
            str(registry / "lgbm"),
            str(registry / "transformer"),
            "--out",
            str(tmp_path),
            "--bootstrap",
            "200",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "verdict (oracle_ndcg@10)" in out
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["primary"] == "oracle_ndcg@10" and rep["empty_lists"] == "exclude"
    assert set(rep["metrics"]) == {"lgbm", "transformer", "logged", "oracle"}
    for model in ("lgbm", "transformer", "logged"):
        for metric in ("ndcg@10", "oracle_ndcg@10", "mrr", "map", "auc", "gauc"):
            e = rep["metrics"][model][metric]
            assert e["ci95"][0] <= e["value"] <= e["ci95"][1], (model, metric)
    pair = [
        c
        for c in rep["comparisons"]
        if {c["a"], c["b"]} == {"lgbm", "transformer"} and c["metric"] == "ndcg@10"
    ]
    assert len(pair) == 1 and 0 < pair[0]["p_value"] <= 1 and pair[0]["test"].startswith("paired")
    assert rep["verdict"]["baseline"] == "lgbm" and "transformer" in rep["verdict"]["outcomes"]
    assert set(rep["gap_closed"]) == {"lgbm", "transformer"}
    assert rep["empty_lists_count"]["ndcg@10"] > 0
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# Offline evaluation") and "**Verdict" in md
    html = (tmp_path / "report.html").read_text()
    assert "<table>" in html and "<svg" in html
    for fetch in ('src="http', "src='http", 'href="http', "<link", "@import", "url("):
        assert fetch not in html  # self-contained: nothing is fetched at view time


def test_empty_list_rules_change_click_metrics_only(
    small_lists: Path, registry: Path, tmp_path: Path
) -> None:
    vals = {}
    for rule in ("exclude", "zero", "one"):
        main(
            [
                "evaluate",
                "--data",
                str(small_lists),
                "--models",
                str(registry / "lgbm"),
                "--out",
                str(tmp_path / rule),
                "--bootstrap",
                "50",
                "--empty-lists",
                rule,
            ]
        )
        rep = json.loads((tmp_path / rule / "report.json").read_text())
        vals[rule] = (
            rep["metrics"]["lgbm"]["ndcg@10"]["value"],
            rep["metrics"]["lgbm"]["oracle_ndcg@10"]["value"],
        )
        assert rep["empty_lists"] == rule
    assert vals["zero"][0] < vals["exclude"][0] < vals["one"][0]
    assert vals["zero"][1] == vals["exclude"][1] == vals["one"][1]


def test_seed_verdict_reads_every_seed_and_the_spread() -> None:
    from ranker.evaluate.offline import comparison_of
    from ranker.evaluate.seeds import seed_verdict

    def report(diffs: list[tuple[float, float, float]], values: dict[str, float]) -> dict:
        comps = [
            {
                "a": f"b/v{i}",
                "b": f"a/v{i}",
                "metric": "m",
                "diff": d,
                "ci95": [lo, hi],
                "p_value": 0.5,
                "test": "t",
            }
            for i, (d, lo, hi) in enumerate(diffs)
        ]
        metrics = {k: {"m": {"value": v}} for k, v in values.items()}
        return {
            "primary": "m",
            "comparisons": comps,
            "metrics": metrics,
            "models": {k: {"seed": int(k[-1])} for k in values},
        }

    groups = {"a": ["a/v0", "a/v1", "a/v2"], "b": ["b/v0", "b/v1", "b/v2"]}
    spread_values = {
        "a/v0": 0.50,
        "a/v1": 0.51,
        "a/v2": 0.52,
        "b/v0": 0.51,
        "b/v1": 0.50,
        "b/v2": 0.52,
    }
    every = report([(0.01, 0.001, 0.02)] * 3, spread_values)
    assert seed_verdict(every, groups, comparison_of)["outcomes"]["b"]["outcome"] == (
        "better under every seed"
    )
    # One seed's CI crosses zero and the mean (+0.002) is within the seeds' s.d. (0.01)
    mixed = report(
        [(0.01, 0.001, 0.02), (-0.01, -0.02, 0.001), (0.006, -0.001, 0.01)], spread_values
    )
    v = seed_verdict(mixed, groups, comparison_of)
    assert v["outcomes"]["b"]["outcome"] == "within the training-seed spread"
    assert v["outcomes"]["b"]["mean_diff"] == pytest.approx(0.002)
    assert "over 3 seeds" in v["text"] and "within the training-seed spread" in v["text"]
    tight = {k: round(0.5 + 0.0001 * int(k[-1]), 4) for k in spread_values}
    v = seed_verdict(
        report([(0.01, 0.001, 0.02), (0.01, -0.001, 0.02)] * 1 + [(0.01, 0.001, 0.02)], tight),
        groups,
        comparison_of,
    )
    assert v["outcomes"]["b"]["outcome"] == "not consistent across seeds"


def test_train_and_evaluate_with_seeds_report_the_spread(
    small_lists: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = tmp_path / "reg"
    for name, rounds in (("a", "20"), ("b", "40")):
        assert (
            main(
                [
                    "train",
                    "--model",
                    "lgbm",
                    "--data",
                    str(small_lists),
                    "--registry",
                    str(reg),
                    "--name",
                    name,
                    "--seeds",
                    "2",
                    "--seed",
                    "3",
                    "--no-progress",
                    "--set",
                    f"max_rounds={rounds}",
                    "--set",
                    "bagging_fraction=0.7",
                ]
            )
            == 0
        )
    out = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(small_lists),
                "--models",
                str(reg / "a"),
                str(reg / "b"),
                "--seeds",
                "2",
                "--out",
                str(out),
                "--bootstrap",
                "100",
            ]
        )
        == 0
    )
    rep = json.loads((out / "report.json").read_text())
    assert rep["seed_spread"]["a"]["seeds"] == [3, 4] and rep["seed_spread"]["b"]["models"] == [
        "b/v1",
        "b/v2",
    ]
    assert "over 2 seeds" in rep["verdict"]["text"] and rep["verdict"]["baseline"] == "a"
    assert "## Training seeds" in (out / "report.md").read_text()
    code = main(
        [
            "evaluate",
            "--data",
            str(small_lists),
            "--models",
            str(reg / "a"),
            "--seeds",
            "3",
            "--out",
            str(out),
        ]
    )
    assert code == 2 and "--seeds 3 needs 3" in capsys.readouterr().err
