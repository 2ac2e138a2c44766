"""LightGBM's training features streamed from the split's Parquet row groups (``--set
stream=true``), so that training memory follows LightGBM's binned dataset, not the data.

In memory the train split costs its float32 features, LightGBM's (N, F) float32 copy and the
binned dataset. Streamed, LightGBM reads rows through ``lgb.Sequence``: the rows it samples to
cut bins (sorted, so one decoded row group serves many), then every row once in row-group
batches to bin them; what stays is the binned dataset (a byte or two per value) and the
per-candidate labels, weights and positions. ``light_split`` reads those without the features.
The bins come from rows the trainer draws from the whole split
(``ranker.train.lgbm.bin_sample``), not from LightGBM's own sampling of the Sequence, so the
trees are the in-memory path's (tested). Under torchrun each worker's Sequence is a view of its own lists' rows.
"""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow.parquet as pq

from pipelines.lists.io import from_arrow
from pipelines.lists.manifest import Manifest
from pipelines.lists.table import Lists, flat_matrix, flat_values
from ranker.inputs import lgbm_matrix


def light_split(path: Path, manifest: Manifest) -> Lists:
    """A split without its features, item ids and histories: request ids, times, labels and
    positions (zero-width feature matrices; item ids left as None)."""
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    return from_arrow(pf.read(columns=[c for c in LIGHT_COLUMNS if c in names]), 0, 0)


# What weights, propensities and LightGBM's groups need: everything but features and ids.
LIGHT_COLUMNS = ("request_id", "ts", "randomized", "labels", "positions", "policy_positions")


class ParquetRows(lgb.Sequence):
    """The LightGBM feature rows (``ranker.inputs.lgbm_matrix``) of a split, one candidate a
    row, decoded a row group at a time (the last one kept for the next read). ``rows``: only
    these candidate rows (ascending), e.g. a torchrun worker's lists; it still decodes every
    row group its rows touch, and keeps only its rows."""

    def __init__(self, path: Path, keep_cat: list[int], rows: np.ndarray | None = None):
        self.file = pq.ParquetFile(path)
        self.keep_cat = keep_cat
        self.rows = rows
        meta = self.file.metadata
        # Candidates per row group, from the small labels column (a list per request).
        sizes = [
            int(flat_values(self.file.read_row_group(r, columns=["labels"]).column(0))[0][-1])
            for r in range(meta.num_row_groups)
        ]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.batch_size = max(1, max(sizes, default=1))  # LightGBM reads this many at a time
        self._cached: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1]) if self.rows is None else len(self.rows)

    def _group(self, r: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != r:
            cols = [c for c in ("num", "cat") if c in self.file.schema_arrow.names]
            t = self.file.read_row_group(r, columns=cols)
            num = flat_matrix(t.column("num"), np.float32)[1]
            cat = (
                flat_matrix(t.column("cat"), np.int32)[1]
                if "cat" in t.column_names
                else np.zeros((len(num), 0), np.int32)
            )
            # float64 (exactly the float32 values): LightGBM samples bins from doubles only
            self._cached = (r, lgbm_matrix(num, cat, self.keep_cat).astype(np.float64))
        return self._cached[1]

    def __getitem__(self, idx: int | slice | list[int]) -> np.ndarray:
        if isinstance(idx, slice):
            lo, hi, step = idx.indices(len(self))
            if step != 1:
                raise IndexError("ParquetRows takes contiguous slices only")
            return self._rows(np.arange(lo, hi))
        picks = np.atleast_1d(np.asarray(idx, np.int64))
        picks = np.where(picks < 0, picks + len(self), picks)
        if len(picks) and (picks.min() < 0 or picks.max() >= len(self)):
            raise IndexError(f"row {idx} out of range")
        out = self._rows(picks)
        return out if isinstance(idx, list) else out[0]

    def _rows(self, picks: np.ndarray) -> np.ndarray:
        """This view's rows ``picks`` in that order, each row group decoded once for all its
        rows (LightGBM asks in ascending order: its samples, then contiguous batches)."""
        order = np.argsort(picks, kind="stable")
        rows = picks[order] if self.rows is None else self.rows[picks[order]]  # of the file
        groups = np.searchsorted(self.starts, rows, side="right") - 1
        cut = np.flatnonzero(np.diff(groups)) + 1  # where the next row group begins
        parts = [
            self._group(int(g[0]))[r - self.starts[g[0]]]
            for g, r in zip(np.split(groups, cut), np.split(rows, cut), strict=True)
            if len(r)
        ]
        if not parts:
            return np.zeros((0, 0), np.float64)
        out = np.empty((len(picks), parts[0].shape[1]), np.float64)
        out[order] = np.concatenate(parts)
        return out
