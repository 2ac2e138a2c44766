"""The log schema every input must follow (DESIGN.md, "Input: what a user brings").

Four tables, each a Parquet file, a directory of Parquet partitions, or a CSV file, named
``requests``, ``impressions``, ``items`` and ``users`` inside the logs directory. Identifiers may
be strings or integers; they are compared as strings. Extra columns are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds


@dataclass(frozen=True)
class TableSpec:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    must_exist: bool


REQUESTS = TableSpec("requests", ("request_id", "ts", "user_id", "query"), ("lat", "lon"), True)
IMPRESSIONS = TableSpec(
    "impressions", ("request_id", "item_id", "position", "clicked"), ("ordered", "dwell_ms"), True
)
ITEMS = TableSpec("items", ("item_id",), (), False)
USERS = TableSpec("users", ("user_id",), (), False)
TABLES = (REQUESTS, IMPRESSIONS, ITEMS, USERS)
ID_COLUMNS = ("request_id", "user_id", "item_id")


def find_table(logs: Path, name: str) -> Path | None:
    """``name.parquet``, ``name/`` (Parquet partitions) or ``name.csv`` inside ``logs``."""
    for candidate in (logs / f"{name}.parquet", logs / name, logs / f"{name}.csv"):
        if candidate.exists():
            return candidate
    return None


def table_columns(path: Path) -> list[str]:
    if path.suffix == ".csv":
        return list(pd.read_csv(path, nrows=0).columns)
    return list(ds.dataset(path, format="parquet").schema.names)


def read_table(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a table; identifier columns come back as strings (pandas ``object`` of ``str``)."""
    if path.suffix == ".csv":
        df = pd.read_csv(path, usecols=columns, dtype={c: str for c in ID_COLUMNS})
    else:
        table = ds.dataset(path, format="parquet").to_table(columns=columns)
        df = table.to_pandas()
    for c in ID_COLUMNS:
        if c in df.columns:
            df[c] = ids_as_str(df[c])
    return df


def ids_as_str(col: pd.Series) -> pd.Series:
    """Identifiers as pandas strings; nulls stay null, integral floats (from CSV) lose '.0'."""
    if col.dtype == "str":
        return col
    if pd.api.types.is_float_dtype(col):
        known = col.dropna()
        if (known == known.round()).all():
            return col.astype("Int64").astype("str")
    return col.astype("str")
