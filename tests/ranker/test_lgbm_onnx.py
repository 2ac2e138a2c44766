"""Parity of the LightGBM -> ONNX export with ``booster.predict(raw_score=True)``.

Tolerance: max abs difference <= 1e-5, and (stronger) within one float32 ulp of LightGBM's
float64 raw score, since the graph computes in double and rounds once at the end.
"""

from __future__ import annotations

import json
from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
import pytest

from ranker.export.lgbm_onnx import booster_to_onnx, onnx_scores

BAND = np.float32(1e-35)  # LightGBM's kZeroThreshold: |x| <= BAND reads as 0.0
BAND_EDGES = [BAND, -BAND, np.nextafter(BAND, np.float32(1)), np.nextafter(-BAND, np.float32(-1))]
SPECIAL = np.array(
    [np.nan, 0.0, -0.0, 1e-40, -1e-40, 1e-36, -1e-36, np.inf, -np.inf, 1e30, -1e30, *BAND_EDGES],
    dtype=np.float32,
)


def _params(**extra: Any) -> dict[str, Any]:
    base = {"verbose": -1, "num_leaves": 8, "learning_rate": 0.3, "seed": 1, "deterministic": True}
    return {**base, **extra}


def _data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Five features: 0 has NaNs, 1 has zeros, 2 has both, 3-4 are plain."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    X[rng.random(n) < 0.15, 0] = np.nan
    X[rng.random(n) < 0.25, 1] = 0.0
    X[rng.random(n) < 0.15, 2] = np.nan
    X[rng.random(n) < 0.25, 2] = 0.0
    y = np.nan_to_num(X[:, 0], nan=1.5) + 2 * (X[:, 1] == 0) + np.nan_to_num(X[:, 2], nan=-2.0)
    y = y + X[:, 3] * X[:, 4] + rng.normal(scale=0.1, size=n)
    return X, y


def _probe(X: np.ndarray, seed: int = 1) -> np.ndarray:
    """Training rows plus rows where each column in turn takes every special value."""
    rng = np.random.default_rng(seed)
    base = X[rng.choice(len(X), size=4, replace=False)]
    rows = [X[:64]]
    for col in range(X.shape[1]):
        for value in SPECIAL:
            block = base.copy()
            block[:, col] = value
            rows.append(block)
    return np.concatenate(rows).astype(np.float32)


def _splits(booster: lgb.Booster) -> list[dict[str, Any]]:
    """Every split node of the dumped trees."""
    out, stack = [], [t["tree_structure"] for t in booster.dump_model()["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_feature" in node:
            out.append(node)
            stack += [node["left_child"], node["right_child"]]
    return out


def _missing_types(booster: lgb.Booster) -> set[str]:
    return {f"{n['decision_type']} {n['missing_type']}" for n in _splits(booster)}


def assert_parity(
    booster: lgb.Booster, X: np.ndarray, num_iteration: int | None = None
) -> onnx.ModelProto:
    model = booster_to_onnx(booster, num_iteration=num_iteration)
    got = onnx_scores(model, X)
    want = booster.predict(X, raw_score=True, num_iteration=num_iteration)
    assert got.dtype == np.float32
    assert got.shape == (len(X),)
    assert np.max(np.abs(got - want)) <= 1e-5
    # One float32 rounding of a double sum: within one ulp (1e-12 covers summation order near 0).
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(got - want) <= ulp + 1e-12)
    return model


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, {"<= NaN", "<= None"}),  # default: NaN type where training saw NaN
        ({"use_missing": False}, {"<= None"}),  # NaN read as 0.0
        ({"zero_as_missing": True}, {"<= Zero"}),  # 0, NaN and |x| <= 1e-35 are missing
    ],
)
def test_regression_missing_types(extra: dict[str, Any], expected: set[str]) -> None:
    X, y = _data()
    booster = lgb.train(_params(objective="regression", **extra), lgb.Dataset(X, y), 15)
    assert _missing_types(booster) == expected
    assert_parity(booster, _probe(X))


def test_binary() -> None:
    X, y = _data(seed=2)
    booster = lgb.train(_params(objective="binary"), lgb.Dataset(X, (y > 0.5).astype(float)), 15)
    model = assert_parity(booster, _probe(X))
    assert _props(model)["objective"].startswith("binary")


@pytest.fixture(scope="module")
def lambdarank() -> tuple[lgb.Booster, np.ndarray]:
    X, y = _data(n=600, seed=3)
    rng = np.random.default_rng(3)
    sizes = rng.integers(3, 16, size=80)
    sizes = sizes[np.cumsum(sizes) <= len(X)]
    n = int(sizes.sum())
    labels = np.digitize(y[:n], np.quantile(y[:n], [0.5, 0.8, 0.95]))
    params = _params(objective="lambdarank", label_gain=[0, 1, 3, 7], min_data_in_leaf=5)
    booster = lgb.train(params, lgb.Dataset(X[:n], labels, group=sizes), 20)
    return booster, X


@pytest.mark.parametrize("batch", [1, 3, 32])
def test_lambdarank_batch_sizes(lambdarank: tuple[lgb.Booster, np.ndarray], batch: int) -> None:
    booster, X = lambdarank
    probe = _probe(X)
    for start in range(0, len(probe) - batch + 1, max(batch, 17)):
        assert_parity(booster, probe[start : start + batch])


def test_metadata_and_graph(lambdarank: tuple[lgb.Booster, np.ndarray]) -> None:
    booster, _ = lambdarank
    model = booster_to_onnx(booster)
    onnx.checker.check_model(model, full_check=True)
    props = _props(model)
    assert json.loads(props["feature_names"]) == booster.feature_name()
    assert props["lightgbm_version"] == lgb.__version__
    assert props["objective"] == "lambdarank"
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("features", "score")
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 5]
    assert [d.dim_param for d in out.type.tensor_type.shape.dim] == ["batch"]


def test_custom_names_and_bytes(lambdarank: tuple[lgb.Booster, np.ndarray]) -> None:
    booster, X = lambdarank
    model = booster_to_onnx(booster, input_name="x", output_name="y")
    got = onnx_scores(model.SerializeToString(), X[:10])
    assert np.max(np.abs(got - booster.predict(X[:10], raw_score=True))) <= 1e-5
    for names in [("a", "a"), ("lgbm_x", "y")]:  # clashes with each other or internal names
        with pytest.raises(ValueError, match="names"):
            booster_to_onnx(booster, input_name=names[0], output_name=names[1])


@pytest.mark.parametrize("extra", [{}, {"use_missing": False}])
def test_categorical(extra: dict[str, Any]) -> None:
    rng = np.random.default_rng(4)
    X, _ = _data(n=600, seed=4)
    X[:, 3] = rng.integers(0, 12, size=len(X))
    X[rng.random(len(X)) < 0.1, 3] = np.nan
    y = np.where(np.isin(X[:, 3], [1, 4, 5, 9]), 2.0, 0.0) + X[:, 4] + rng.normal(0, 0.1, len(X))
    params = _params(objective="regression", min_data_per_group=5, cat_smooth=1, **extra)
    booster = lgb.train(params, lgb.Dataset(X, y, categorical_feature=[3]), 15)
    # Sets of several categories (not one-hot), so the membership test is exercised.
    assert any("||" in str(n["threshold"]) for n in _splits(booster) if n["decision_type"] == "==")
    # LightGBM truncates toward zero; negative, NaN and out-of-int-range values go right.
    odd = [-1.0, -0.5, -0.0, 0.5, 2.7, 4.999, 11.0, 12.0, 100.0, 2.0**31, 3e9, 1e10]
    odd += [float(np.nextafter(np.float32(2.0**31), 0, dtype=np.float32)), *range(12)]
    probe = _probe(X)
    blocks = [probe]
    for value in np.asarray(odd, dtype=np.float32):
        block = probe[:16].copy()
        block[:, 3] = value
        blocks.append(block)
    assert_parity(booster, np.concatenate(blocks))


@pytest.mark.parametrize("extra", [{}, {"zero_as_missing": True}, {"use_missing": False}])
def test_values_at_thresholds(extra: dict[str, Any]) -> None:
    X, y = _data(seed=5)
    booster = lgb.train(_params(objective="regression", **extra), lgb.Dataset(X, y), 20)
    base = X[:3]
    blocks = []
    numeric = [n for n in _splits(booster) if n["decision_type"] == "<="]
    for feature, t in ((int(n["split_feature"]), float(n["threshold"])) for n in numeric):
        # float32 nearest to t, the largest float32 <= t, and their neighbours on both sides.
        near = np.float32(t)
        down = near if float(near) <= t else np.nextafter(near, -np.inf, dtype=np.float32)
        for v in {near, down, *np.nextafter([near, down], [[np.inf], [-np.inf]]).ravel()}:
            block = base.copy()
            block[:, feature] = v
            blocks.append(block)
    assert len(blocks) > 50
    assert_parity(booster, np.concatenate(blocks).astype(np.float32))


def test_early_stopping_uses_best_iteration() -> None:
    X, y = _data(n=600, seed=6)
    train, valid = lgb.Dataset(X[:300], y[:300]), lgb.Dataset(X[300:], y[300:])
    booster = lgb.train(
        _params(objective="regression", learning_rate=0.8, num_leaves=31, min_data_in_leaf=2),
        train,
        200,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(3, verbose=False)],
        keep_training_booster=True,  # else train() saves only the trees up to the best iteration
    )
    assert 0 < booster.best_iteration < booster.num_trees()
    probe = _probe(X)
    model = assert_parity(booster, probe)  # default: best iteration, like predict
    assert _props(model)["num_iteration"] == str(booster.best_iteration)
    assert_parity(booster, probe, num_iteration=2)
    assert_parity(booster, probe, num_iteration=-1)  # <= 0: all trees
    full = booster_to_onnx(booster, num_iteration=0)
    assert _props(full)["num_iteration"] == str(booster.num_trees())


def test_constant_model() -> None:
    X, _ = _data(n=100)
    # Constant labels, or too few rows for any split: a single tree with a single leaf.
    cases: list[tuple[np.ndarray, dict[str, Any]]] = [
        (np.full(100, 2.5), {"objective": "regression"}),
        (np.arange(100) % 3 == 0, {"objective": "binary", "min_data_in_leaf": 200}),
    ]
    for y, extra in cases:
        booster = lgb.train(_params(**extra), lgb.Dataset(X, y.astype(float)), 5)
        assert booster.dump_model()["tree_info"][0]["num_leaves"] == 1
        for batch in (1, 3, 32):
            assert_parity(booster, _probe(X)[:batch])


def test_random_forest_raw_score_is_the_sum() -> None:
    X, y = _data(seed=7)
    params = _params(objective="regression", boosting="rf", bagging_freq=1, bagging_fraction=0.6)
    assert_parity(lgb.train(params, lgb.Dataset(X, y), 8), _probe(X))


def test_unsupported_boosters_raise() -> None:
    X, y = _data(n=200)
    linear = lgb.train(_params(objective="regression", linear_tree=True), lgb.Dataset(X, y), 2)
    with pytest.raises(NotImplementedError, match="linear_tree"):
        booster_to_onnx(linear)
    classes = np.arange(200) % 3
    multi = lgb.train(_params(objective="multiclass", num_class=3), lgb.Dataset(X, classes), 2)
    with pytest.raises(NotImplementedError, match="multiclass"):
        booster_to_onnx(multi)


def _props(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}
