"""Stable 64-bit keys for counters and a growing key -> dense id index.

Keys are hashed with pandas' SipHash (fixed key, so the same string gives the same hash in
every process and on every machine); composite keys mix the hashes of their parts. Collisions
of 64-bit hashes are ignored: at ten million keys the chance of any is about 3e-6.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads the bits of a uint64 array."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def hash_strings(values: np.ndarray | list[str]) -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    if len(arr) == 0:
        return np.zeros(0, dtype=np.uint64)
    return pd.util.hash_array(arr, categorize=False).astype(np.uint64)


def combine(*parts: np.ndarray) -> np.ndarray:
    """One key from several hashed columns (order matters)."""
    out = parts[0].astype(np.uint64)
    with np.errstate(over="ignore"):
        for p in parts[1:]:
            out = _mix(out * _GOLDEN + p.astype(np.uint64))
    return out


class KeyIndex:
    """Maps 64-bit keys to dense ids 0, 1, 2, ... in order of first insertion.

    Vectorised lookups go through a pandas Index; keys added since the last rebuild wait in a
    dict, and the Index is rebuilt when that dict grows past a fraction of it (amortised cost).
    """

    def __init__(self, keys: np.ndarray | None = None):
        self._base = pd.Index(
            np.zeros(0, dtype=np.uint64) if keys is None else keys.astype(np.uint64)
        )
        self._extra: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._base) + len(self._extra)

    def keys(self) -> np.ndarray:
        """All keys in id order."""
        extra = np.array(sorted(self._extra, key=self._extra.__getitem__), dtype=np.uint64)
        return np.concatenate([self._base.to_numpy(np.uint64), extra])

    def get(self, keys: np.ndarray) -> np.ndarray:
        """Ids of ``keys``; -1 for keys never added."""
        ids = (
            self._base.get_indexer(pd.Index(keys.astype(np.uint64)))
            if len(self._base)
            else np.full(len(keys), -1)
        )
        ids = np.asarray(ids, dtype=np.int64)
        if self._extra:
            miss = np.flatnonzero(ids < 0)
            if len(miss):
                extra = self._extra
                ids[miss] = [extra.get(int(k), -1) for k in keys[miss]]
        return ids

    def add(self, keys: np.ndarray) -> np.ndarray:
        """Ids of ``keys``, adding the new ones (in first-seen order)."""
        ids = self.get(keys)
        miss = np.flatnonzero(ids < 0)
        if len(miss):
            new_keys, first = np.unique(keys[miss], return_index=True)
            new_keys = new_keys[np.argsort(first, kind="stable")]
            start = len(self)
            for j, k in enumerate(new_keys):
                self._extra[int(k)] = start + j
            ids[miss] = [self._extra[int(k)] for k in keys[miss]]
            if len(self._extra) > max(10_000, len(self._base) // 4):
                self._base = pd.Index(self.keys())
                self._extra = {}
        return ids
