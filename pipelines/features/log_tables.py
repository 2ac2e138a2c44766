"""Reading the log tables the feature pipeline starts from, and splitting requests by time."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.features.config import FeatureConfig
from pipelines.logs.clean import clean_entities, clean_requests
from pipelines.logs.schema import find_table, read_table, table_columns


def assign_splits(t_us: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """train / valid / test by time: dates when given, else fractions of the requests."""
    sc = cfg.split
    n = len(t_us)
    out = np.full(n, "train", dtype=object)
    if n == 0:
        return out
    if sc.valid_start or sc.test_start:
        v = to_us(pd.Series([sc.valid_start or sc.test_start]))[0]
        te = to_us(pd.Series([sc.test_start]))[0] if sc.test_start else np.iinfo(np.int64).max
        out[t_us >= v] = "valid"
        out[t_us >= te] = "test"
        return out
    # Thresholds at quantile times; requests at the same instant land in the same split.
    ordered = np.sort(t_us)
    v_at = ordered[min(n - 1, int(np.floor(n * (1 - sc.valid_fraction - sc.test_fraction))))]
    t_at = ordered[min(n - 1, int(np.floor(n * (1 - sc.test_fraction))))]
    if sc.valid_fraction > 0:
        out[t_us >= v_at] = "valid"
    if sc.test_fraction > 0:
        out[t_us >= t_at] = "test"
    return out


def read_requests(logs: Path, bad: dict[str, Counter[str]]) -> pd.DataFrame:
    path = find_table(logs, "requests")
    if path is None:
        raise FileNotFoundError(f"{logs}: no requests table")
    if find_table(logs, "impressions") is None:
        raise FileNotFoundError(f"{logs}: no impressions table")
    missing = [c for c in ("request_id", "ts", "user_id", "query") if c not in table_columns(path)]
    if missing:
        raise ValueError(f"requests: missing required column(s) {missing}")
    req, c = clean_requests(read_table(path))
    bad["requests"].update(c)
    req["user_id"] = req["user_id"].astype("str")
    return req


def read_entities(
    logs: Path, name: str, key: str, bad: dict[str, Counter[str]]
) -> pd.DataFrame | None:
    path = find_table(logs, name)
    if path is None:
        return pd.DataFrame({key: pd.Series([], dtype="str")}) if name == "items" else None
    df, c = clean_entities(read_table(path), key)
    bad[name].update(c)
    return df.reset_index(drop=True)


def to_us(ts: pd.Series) -> np.ndarray:
    t = pd.to_datetime(ts, utc=True).astype("datetime64[us, UTC]")
    return ((t - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)).to_numpy(np.int64)


def float_col(df: pd.DataFrame, cols: list[str], j: int) -> np.ndarray:
    if not cols or cols[j] not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[cols[j]], errors="coerce").to_numpy(np.float64)


def log_source(logs: Path) -> dict[str, object]:
    world = logs.parent / "world"
    return {
        "kind": "logs",
        "logs": str(logs.resolve()),
        "world": str(world.resolve()) if (world / "world.json").exists() else None,
    }
