"""Split the impressions table by request day into scratch Parquet files, in one streaming pass.

Impressions carry no time of their own; each record batch is joined to the requests' day and
written out, so later steps hold one day of impressions in memory at a time.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipelines.logs.schema import ids_as_str

BATCH_ROWS = 500_000


def iter_impression_batches(path: Path) -> list[pa.RecordBatch] | object:
    """Record batches of the impressions table, from Parquet (file or directory) or CSV."""
    if path.suffix == ".csv":
        opts = pacsv.ConvertOptions(
            column_types={"request_id": pa.string(), "item_id": pa.string()}
        )
        return pacsv.open_csv(path, convert_options=opts)
    return ds.dataset(path, format="parquet").to_batches(batch_size=BATCH_ROWS)


def partition_by_day(
    impressions: Path, day_of_request: pd.Series, scratch: Path
) -> tuple[list[int], Counter[str]]:
    """Write ``scratch/day=<d>/part-*.parquet``; returns the days present and dropped-row counts.

    ``day_of_request``: day number indexed by request_id (str). Impressions of unknown
    requests are counted (``unknown_request``) and dropped here.
    """
    counts: Counter[str] = Counter()
    req_index = pd.Index(day_of_request.index)
    days_arr = day_of_request.to_numpy(np.int64)
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for batch in iter_impression_batches(impressions):  # type: ignore[attr-defined]
            df = batch.to_pandas()
            if "request_id" not in df.columns:
                raise ValueError("impressions: no request_id column")
            df["request_id"] = ids_as_str(df["request_id"])
            if "item_id" in df.columns:
                df["item_id"] = ids_as_str(df["item_id"])
            pos = req_index.get_indexer(df["request_id"])
            known = pos >= 0
            n_bad = int((~known).sum())
            if n_bad:
                n_null = int((df["request_id"].isna() & ~known).sum())
                if n_null:
                    counts["null_value"] += n_null
                counts["unknown_request"] += n_bad - n_null
            df = df.loc[known]
            day = days_arr[pos[known]]
            for d in np.unique(day):
                part = pa.Table.from_pandas(df.loc[day == d], preserve_index=False)
                w = writers.get(int(d))
                if w is None:
                    (scratch / f"day={d}").mkdir(parents=True, exist_ok=True)
                    w = pq.ParquetWriter(scratch / f"day={d}" / "part.parquet", part.schema)
                    writers[int(d)] = w
                w.write_table(part.cast(w.schema))
    finally:
        for w in writers.values():
            w.close()
    return sorted(writers), counts


def read_day(scratch: Path, day: int) -> pd.DataFrame:
    return pq.read_table(scratch / f"day={day}" / "part.parquet").to_pandas()
