"""Row-level checks of the log tables: each cleaner returns the usable rows and, by reason, how
many rows it set aside. Nothing is dropped without being counted.

Reasons (stable names, used in reports and manifests):
``null_value`` (a required field is empty), ``wrong_type`` (a value that cannot be read as
its column's type), ``duplicate_id``, ``unknown_request`` (an impression of a request that is
not in ``requests``), ``duplicate_impression`` (the same item twice in one request; the first
is kept), ``bad_position`` (not a whole number >= 1, or a position taken twice in a request),
``request_without_impressions``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_TRUE = {"true", "1", "t", "yes", "y"}
_FALSE = {"false", "0", "f", "no", "n", ""}


def _drop(df: pd.DataFrame, bad: pd.Series, reason: str, counts: Counter[str]) -> pd.DataFrame:
    n = int(bad.sum())
    if n:
        counts[reason] += n
        return df.loc[~bad.to_numpy()]
    return df


def isin(col: pd.Series, values: pd.Series | pd.Index) -> pd.Series:
    """``col.isin(values)`` through Arrow (pandas' own loops in Python over string values)."""
    value_set = pa.array(pd.Series(values).dropna().astype("str").unique())
    mask = pc.is_in(pa.array(col.astype("str")), value_set=value_set, skip_nulls=True)
    return (
        pd.Series(mask.to_numpy(zero_copy_only=False), index=col.index).fillna(False).astype(bool)
    )


def parse_bool(col: pd.Series) -> pd.Series:
    """Booleans from bool, 0/1 numbers or true/false strings; anything else becomes NA."""
    if pd.api.types.is_bool_dtype(col) and not col.isna().any():
        return col.astype(bool)
    if pd.api.types.is_numeric_dtype(col):
        out = pd.Series(pd.NA, index=col.index, dtype="boolean")
        out[col == 1] = True
        out[col == 0] = False
        return out
    text = col.astype("str").str.strip().str.lower()
    out = pd.Series(pd.NA, index=col.index, dtype="boolean")
    out[text.isin(_TRUE)] = True
    out[text.isin(_FALSE) & col.notna()] = False
    return out


def parse_ts(col: pd.Series) -> pd.Series:
    """UTC timestamps (microseconds) from timestamps, ISO-8601 strings or Unix seconds."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        out = pd.to_datetime(col, unit="s", utc=True, errors="coerce")
    else:
        out = pd.to_datetime(col, utc=True, errors="coerce", format="mixed")
    return out.astype("datetime64[us, UTC]")


def clean_requests(df: pd.DataFrame) -> tuple[pd.DataFrame, Counter[str]]:
    counts: Counter[str] = Counter()
    df = df.reset_index(drop=True)  # unique labels: the steps below align on them
    df = _drop(
        df,
        df["request_id"].isna() | df["user_id"].isna() | df["query"].isna(),
        "null_value",
        counts,
    )
    ts = parse_ts(df["ts"])
    df = _drop(df, df["ts"].isna(), "null_value", counts)
    ts = ts.loc[df.index]
    df = _drop(df, ts.isna(), "wrong_type", counts)
    df = df.assign(ts=ts.loc[df.index])
    for c in ("lat", "lon"):
        if c in df.columns:
            num = pd.to_numeric(df[c], errors="coerce")
            df = _drop(df, df[c].notna() & num.isna(), "wrong_type", counts)
            df = df.assign(**{c: num.loc[df.index].astype(np.float64)})
    df = _drop(df, df["request_id"].duplicated(keep="first"), "duplicate_id", counts)
    return df, counts


def clean_impressions(df: pd.DataFrame, request_ids: pd.Index) -> tuple[pd.DataFrame, Counter[str]]:
    """Usable impressions of known requests; ``clicked``/``ordered`` become bool, position int."""
    counts: Counter[str] = Counter()
    df = df.reset_index(drop=True)
    df = _drop(df, df["request_id"].isna() | df["item_id"].isna(), "null_value", counts)
    df = _drop(df, ~isin(df["request_id"], request_ids), "unknown_request", counts)

    df = _drop(df, df["clicked"].isna() | df["position"].isna(), "null_value", counts)
    clicked = parse_bool(df["clicked"])
    df = _drop(df, clicked.isna(), "wrong_type", counts)
    df = df.assign(clicked=clicked.loc[df.index].astype(bool))
    if "ordered" in df.columns:
        ordered = parse_bool(df["ordered"])
        df = _drop(df, ordered.isna() & df["ordered"].notna(), "wrong_type", counts)
        df = df.assign(ordered=ordered.loc[df.index].fillna(False).astype(bool))
    pos = pd.to_numeric(df["position"], errors="coerce")
    df = _drop(df, pos.isna(), "wrong_type", counts)
    pos = pos.loc[df.index]
    df = _drop(df, (pos < 1) | (pos != np.floor(pos)), "bad_position", counts)
    df = df.assign(position=pos.loc[df.index].astype(np.int64))

    df = _drop(
        df, df.duplicated(["request_id", "item_id"], keep="first"), "duplicate_impression", counts
    )
    df = _drop(df, df.duplicated(["request_id", "position"], keep="first"), "bad_position", counts)
    return df, counts


def clean_entities(df: pd.DataFrame, key: str) -> tuple[pd.DataFrame, Counter[str]]:
    """Items or users: one row per non-null, unique key (the first is kept)."""
    counts: Counter[str] = Counter()
    df = df.reset_index(drop=True)
    df = _drop(df, df[key].isna(), "null_value", counts)
    df = _drop(df, df[key].duplicated(keep="first"), "duplicate_id", counts)
    return df, counts


def drop_requests_without_impressions(
    requests: pd.DataFrame, impressions: pd.DataFrame
) -> tuple[pd.DataFrame, Counter[str]]:
    counts: Counter[str] = Counter()
    shown = isin(requests["request_id"], impressions["request_id"])
    return _drop(requests, ~shown, "request_without_impressions", counts), counts
