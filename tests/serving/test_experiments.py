"""A/B assignment by salted hash, interleaving, and micro-batching across requests."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _tolerance import batched_tolerance

from pipelines.io import read_jsonl
from serving.experiments import Experiment, Variant, load_experiment, team_draft


def _exp(tmp_path: Path, mode: str = "ab", weights: tuple[int, int] = (50, 50)) -> Path:
    p = tmp_path / "exp.toml"
    p.write_text(
        f'name = "t-vs-l"\nsalt = "s1"\nmode = "{mode}"\n'
        f'[[variants]]\nname = "control"\nmodel = "lgbm"\nweight = {weights[0]}\n'
        f'[[variants]]\nname = "treatment"\nmodel = "transformer"\nweight = {weights[1]}\n'
    )
    return p


def test_assignment_is_deterministic_salted_and_follows_the_weights(tmp_path: Path) -> None:
    exp = load_experiment(_exp(tmp_path, weights=(30, 70)))
    users = [f"u{i}" for i in range(20_000)]
    counts = Counter(exp.assign(u).name for u in users)
    assert abs(counts["control"] / len(users) - 0.3) < 0.015
    assert [exp.assign(u).name for u in users[:50]] == [exp.assign(u).name for u in users[:50]]
    other = Experiment(exp.name, "another-salt", exp.mode, exp.variants)
    changed = sum(exp.assign(u).name != other.assign(u).name for u in users[:2000])
    assert 600 < changed < 1200  # a new salt reshuffles about 42% (2 * 0.3 * 0.7)


def test_bad_experiment_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    for text, msg in (
        ('name="x"\nsalt="s"\n', "variants"),
        ('name="x"\nsalt="s"\nmode="ab"\n[[variants]]\nname="a"\nmodel="m"\nweight=0\n', "weight"),
        ('name="x"\nsalt="s"\nmode="interleave"\n[[variants]]\nname="a"\nmodel="m"\n', "two"),
        ("not toml [", "experiment file"),
    ):
        bad.write_text(text)
        with pytest.raises(ValueError, match=msg):
            load_experiment(bad)


def test_team_draft_interleaving_keeps_each_teams_order() -> None:
    rng = np.random.default_rng(0)
    a, b = list("abcdef"), list("fedcba")
    items, teams = team_draft(a, b, rng)
    assert sorted(items) == sorted(a) and len(teams) == 6
    assert abs(teams.count("a") - teams.count("b")) <= 1
    for team, ranking in (("a", a), ("b", b)):
        picked = [i for i, t in zip(items, teams, strict=True) if t == team]
        assert picked == sorted(picked, key=ranking.index)  # each team's picks in its own order
    assert team_draft(list("abc"), list("abc"), rng)[0] == list("abc")


def test_ab_serving_names_the_variant_and_logs_it(
    open_client: Any, small_registry: Path, settings_for: Any, tmp_path: Path
) -> None:
    s = settings_for(small_registry, tmp_path / "logs", experiment=_exp(tmp_path))
    with open_client(s) as c:
        seen = {}
        for i in range(40):
            out = c.post(
                "/v1/rank",
                json={
                    "user_id": f"user{i}",
                    "query": "tea",
                    "candidates": [{"item_id": "x"}, {"item_id": "y"}],
                },
            ).json()
            seen[out["variant"]] = out["model"]
        assert seen == {"control": "lgbm", "treatment": "transformer"}
        assert c.get("/v1/models").json()["experiment"]["name"] == "t-vs-l"
        logged = read_jsonl(s.log_dir, "rankings").records
        assert {r["variant"] for r in logged} == {"control", "treatment"} and logged[0][
            "experiment"
        ] == "t-vs-l"
        # The request's model field still picks a model explicitly.
        out = c.post(
            "/v1/rank",
            json={
                "user_id": "user1",
                "query": "tea",
                "model": "lgbm",
                "candidates": [{"item_id": "x"}],
            },
        ).json()
        assert out["variant"] == "explicit"


def test_interleaving_marks_each_item_with_its_team(
    open_client: Any, small_registry: Path, settings_for: Any, tmp_path: Path
) -> None:
    s = settings_for(
        small_registry,
        tmp_path / "logs",
        experiment=_exp(tmp_path, "interleave"),
    )
    with open_client(s) as c:
        ids = [{"item_id": f"i{j:03d}"} for j in range(12)]
        out = c.post("/v1/rank", json={"user_id": "u", "query": "hotpot", "candidates": ids}).json()
        assert out["variant"] == "interleave"
        assert {i["team"] for i in out["items"]} == {"control", "treatment"}
        assert [i["rank"] for i in out["items"]] == list(range(1, 13))
        assert read_jsonl(s.log_dir, "rankings").records[-1]["teams"] is not None


def test_micro_batching_gives_each_request_its_own_scores(
    open_client: Any, small_registry: Path, settings_for: Any, tmp_path: Path
) -> None:
    plain = settings_for(small_registry, tmp_path / "a")
    batched = settings_for(small_registry, tmp_path / "b", batch_window_ms=20.0)
    # One fixed time for both runs: with the wall clock the second run's features (ages, the
    # hour) differ from the first's, which is not what this test measures.
    snapshot_us = json.loads((plain.state / "state.json").read_text())["clock_us"]
    ts = f"{np.datetime64(snapshot_us + 60 * 10**6, 'us')}Z"
    bodies = [
        {
            "user_id": f"u{i}",
            "query": "hotpot",
            "ts": ts,
            "model": "transformer",
            "candidates": [{"item_id": f"i{(i * 7 + j) % 500:03d}"} for j in range(3 + i % 9)],
        }
        for i in range(12)
    ]
    with open_client(plain) as c:
        expected = [c.post("/v1/rank", json=b).json()["items"] for b in bodies]
    with open_client(batched) as c:
        got: dict[int, list] = {}

        def go(i: int) -> None:
            got[i] = c.post("/v1/rank", json=bodies[i]).json()["items"]

        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        batcher = c.app.state.service.models.current.get("transformer").batcher  # type: ignore[attr-defined]
        assert batcher is not None and batcher.batches < batcher.items  # requests shared calls
    for i in range(len(bodies)):
        assert [x["item_id"] for x in got[i]] == [x["item_id"] for x in expected[i]]
        np.testing.assert_allclose(  # the per-device tolerance of batched scoring
            [x["score"] for x in got[i]],
            [x["score"] for x in expected[i]],
            atol=batched_tolerance(),
        )


def test_variants_are_validated_against_served_models(
    open_client: Any, small_registry: Path, settings_for: Any, tmp_path: Path
) -> None:
    p = tmp_path / "exp.toml"
    p.write_text('name="x"\nsalt="s"\n[[variants]]\nname="a"\nmodel="missing-model"\n')
    s = settings_for(small_registry, tmp_path / "logs", experiment=p)
    with pytest.raises(Exception, match="missing-model"), open_client(s):
        pass
    assert Variant("a", "m", 1.0).weight == 1.0
