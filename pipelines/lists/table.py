"""``Lists``: a batch of requests as flat arrays with offsets, the in-memory form of a split."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class Lists:
    """B requests with N candidates in all (and M history events when present).

    Candidates of request ``b`` are rows ``offsets[b]:offsets[b + 1]`` of the per-candidate
    arrays; history events likewise through ``hist_offsets``.
    """

    request_id: np.ndarray  # (B,) str
    offsets: np.ndarray  # (B + 1,) int64
    item_ids: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) int8
    num: np.ndarray  # (N, F) float32
    cat: np.ndarray  # (N, C) int32
    positions: np.ndarray | None = None  # (N,) int16, logged (displayed) position
    policy_positions: np.ndarray | None = None  # (N,) int16, the logger's intended position
    ts: np.ndarray | None = None  # (B,) datetime64[us]
    user_id: np.ndarray | None = None  # (B,) str
    query: np.ndarray | None = None  # (B,) str
    randomized: np.ndarray | None = None  # (B,) bool
    hist_offsets: np.ndarray | None = None  # (B + 1,) int64
    hist_item_ids: np.ndarray | None = None  # (M,) str
    hist_num: np.ndarray | None = None  # (M, Hn) float32
    hist_cat: np.ndarray | None = None  # (M, Hc) int32

    def __len__(self) -> int:
        return len(self.request_id)

    @property
    def n_items(self) -> int:
        return int(self.offsets[-1])

    def list_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def select(self, idx: np.ndarray) -> Lists:
        """The requests ``idx`` (in that order) as a new ``Lists``."""
        idx = np.asarray(idx, dtype=np.int64)
        rows, offsets = _gather(self.offsets, idx)
        out: dict[str, Any] = {"request_id": self.request_id[idx], "offsets": offsets}
        for name in ("item_ids", "labels", "num", "cat", "positions", "policy_positions"):
            v = getattr(self, name)
            out[name] = None if v is None else v[rows]
        for name in ("ts", "user_id", "query", "randomized"):
            v = getattr(self, name)
            out[name] = None if v is None else v[idx]
        if self.hist_offsets is not None:
            hrows, hoff = _gather(self.hist_offsets, idx)
            out["hist_offsets"] = hoff
            for name in ("hist_item_ids", "hist_num", "hist_cat"):
                v = getattr(self, name)
                out[name] = None if v is None else v[hrows]
        return Lists(**out)

    @staticmethod
    def concat(parts: list[Lists]) -> Lists:
        if not parts:
            raise ValueError("nothing to concatenate")
        out: dict[str, Any] = {}
        for f in fields(Lists):
            vals = [getattr(p, f.name) for p in parts]
            if f.name in ("offsets", "hist_offsets"):
                if vals[0] is None:
                    out[f.name] = None
                    continue
                shifted, base = [np.zeros(1, np.int64)], 0
                for v in vals:
                    shifted.append(v[1:] + base)
                    base += int(v[-1])
                out[f.name] = np.concatenate(shifted)
            else:
                out[f.name] = None if vals[0] is None else np.concatenate(vals)
        return Lists(**out)


def _gather(offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of segments ``idx`` and the offsets of the gathered segments."""
    lens = offsets[idx + 1] - offsets[idx]
    new_off = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(lens, out=new_off[1:])
    rows = np.repeat(offsets[idx] - new_off[:-1], lens) + np.arange(new_off[-1])
    return rows, new_off


# ---- Arrow conversion ------------------------------------------------------------------------


def list_array(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def matrix_list_array(offsets: np.ndarray, m: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """(N, K) matrix -> list<fixed_size_list<value_type>[K]> with the given offsets."""
    k = m.shape[1]
    flat = pa.array(np.ascontiguousarray(m).reshape(-1), value_type)
    return list_array(offsets, pa.FixedSizeListArray.from_arrays(flat, k))


def flat_values(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(offsets (B+1,), flattened values) of a list column."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, pc.list_flatten(arr)


def flat_matrix(col: pa.ChunkedArray | pa.Array, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, (N, K) matrix) of a list<fixed_size_list> column."""
    offsets, inner = flat_values(col)
    k = inner.type.list_size
    values = pc.list_flatten(inner).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return offsets, values.reshape(-1, k)
