"""Shared fixtures: one small simulated world per test session (about 3 s to make)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from _shared_models import SMALL_TRANSFORMER

from pipelines.features.batch import build_features
from pipelines.features.config import load_config
from pipelines.world.config import WorldConfig
from pipelines.world.simulate import simulate

SMALL_WORLD = WorldConfig(seed=7, n_requests=3000, n_users=400, n_items=800, days=10)


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


def _slice_logs(src: Path, dst: Path, days: float) -> Path:
    """The first ``days`` days of a simulated log, as a logs directory."""
    dst.mkdir(parents=True)
    req = pd.read_parquet(src / "requests.parquet")
    req = req[req["ts"] < req["ts"].min() + pd.Timedelta(days=days)]
    imp = pd.read_parquet(src / "impressions.parquet")
    req.to_parquet(dst / "requests.parquet")
    imp[imp["request_id"].isin(req["request_id"])].to_parquet(dst / "impressions.parquet")
    for name in ("items", "users"):
        pd.read_parquet(src / f"{name}.parquet").to_parquet(dst / f"{name}.parquet")
    return dst


@pytest.fixture(scope="session")
def slice_logs(small_sim: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small world's first 3 days of logs (a run directory's ``logs/``, its ``world/``
    beside it as ``ranker simulate`` lays it out): for replays that visit every request."""
    root = tmp_path_factory.mktemp("run")
    (root / "world").symlink_to(small_sim / "world")
    return _slice_logs(small_sim / "logs", root / "logs", 3)


@pytest.fixture(scope="session")
def slice_lists(slice_logs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lists dataset of ``slice_logs``, built in this process."""
    out = tmp_path_factory.mktemp("ds") / "lists"
    build_features(slice_logs, out, load_config("sim"), progress=False)
    return out


@pytest.fixture(scope="session")
def slice_lists_by_ray(slice_logs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same dataset written by a real local Ray cluster (2 workers holding 7 key shards,
    started and stopped by the build); built once, it costs a cluster start."""
    from pipelines.features.config import EngineConfig

    pytest.importorskip("ray", reason="Ray is in the cluster and test extras")
    out = tmp_path_factory.mktemp("ray") / "lists"
    engine = EngineConfig("ray", shards=7, workers=2)
    build_features(slice_logs, out, load_config("sim"), progress=False, engine=engine)
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
