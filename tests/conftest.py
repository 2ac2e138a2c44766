"""Shared fixtures: one small simulated world per test session (about 3 s to make)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _shared_models import SMALL_TRANSFORMER

from pipelines.features.batch import build_features
from pipelines.features.config import load_config
from pipelines.world.config import WorldConfig
from pipelines.world.simulate import simulate

SMALL_WORLD = WorldConfig(seed=7, n_requests=4000, n_users=400, n_items=800, days=10)


@pytest.fixture(scope="session")
def small_sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated run directory with ``logs/`` and ``world/`` (read-only for tests)."""
    out = tmp_path_factory.mktemp("small_sim")
    simulate(SMALL_WORLD, out, progress=False)
    return out


@pytest.fixture(scope="session")
def small_lists(small_sim: Path) -> Path:
    """The small world's lists dataset (``small_sim/lists``, with ``state/``)."""
    out = small_sim / "lists"
    if not out.exists():
        build_features(small_sim / "logs", out, load_config("sim"), progress=False)
    return out


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port for the session (skips where it cannot run); tests
    keep apart by key prefix."""
    from ops.online.redis_proc import redis_available, redis_server

    why = redis_available()
    if why:
        pytest.skip(why)
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(scope="session")
def small_registry(small_lists: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with a small LightGBM (lgbm/v1), Transformer (transformer/v1), re-ranker
    over that LightGBM (rerank/v1) and CTR ranker (ctr/v1), all exported to ONNX. Shared by the evaluation, export and serving tests: treat as read-only."""
    from ranker.export.run import export_model
    from ranker.train.run import TrainRequest, run_training

    reg = tmp_path_factory.mktemp("registry")
    run_training(
        TrainRequest(
            "lgbm", small_lists, reg, bias="none", progress=False, overrides={"max_rounds": 60}
        )
    )
    run_training(
        TrainRequest(
            "transformer",
            small_lists,
            reg,
            bias="tower",
            progress=False,
            overrides=SMALL_TRANSFORMER,
        )
    )
    # A re-ranker over the LightGBM baseline: the residual one (blend=0), whose out-of-fold
    # card the tests read; the default (blend=auto) is tests/ranker/test_blend_weight.py's.
    run_training(
        TrainRequest(
            "transformer",
            small_lists,
            reg,
            name="rerank",
            bias="tower",
            reranker="lgbm",
            progress=False,
            overrides={**SMALL_TRANSFORMER, "blend": 0},
        )
    )
    run_training(TrainRequest("ctr", small_lists, reg, progress=False))
    for name in ("lgbm", "transformer", "rerank", "ctr"):
        export_model(str(reg / name))
    return reg
