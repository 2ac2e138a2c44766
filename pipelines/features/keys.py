"""Stable 64-bit keys for counters and a growing key -> dense id index.

Keys are hashed with pandas' SipHash (fixed key, so the same string gives the same hash in
every process and on every machine); composite keys mix the hashes of their parts. Collisions
of 64-bit hashes are ignored: at ten million keys the chance of any is about 3e-6.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.features.jit import jit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@jit
def _combine_into(out: np.ndarray, part: np.ndarray) -> None:
    """out = splitmix64(out * golden + part), in place. uint64 arithmetic wraps modulo 2**64,
    as the finaliser wants; every constant is a uint64 so that no step widens to a float.
    One compiled loop: at one request's hundred keys the dozen numpy calls of the array
    version, not the arithmetic, were the cost."""
    for i in range(len(out)):
        h = out[i] * _GOLDEN + part[i]
        h ^= h >> _S30
        h *= _M1
        h ^= h >> _S27
        h *= _M2
        h ^= h >> _S31
        out[i] = h


def hash_strings(values: np.ndarray | list[str]) -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    if len(arr) == 0:
        return np.zeros(0, dtype=np.uint64)
    if len(arr) == 1 and type(arr[0]) is str:  # one user or query of a live request
        return np.array([_hash_one(arr[0])], dtype=np.uint64)
    return pd.util.hash_array(arr, categorize=False).astype(np.uint64)


try:  # pandas' own SipHash of an object array, without hash_array's ~7 us of dispatch
    from pandas._libs.hashing import hash_object_array as _siphash
except ImportError:  # pragma: no cover - a pandas without it
    _siphash = None
_PANDAS_HASH_KEY = "0123456789123456"  # hash_array's default; tests/pipelines pins the equality
_U64 = (1 << 64) - 1


def _hash_one(value: str) -> int:
    """``hash_strings`` of one string: pandas' SipHash, then the mixing ``hash_array`` applies,
    in 1.6 us instead of 9. Not remembered: a cache of the users seen grew a replica's memory
    with its users (15 MB at its 100,000 entries; the replica growth check), and at this cost
    a cache would save about 4 us a ranking."""
    if _siphash is None:  # pragma: no cover
        return int(pd.util.hash_array(np.array([value], dtype=object), categorize=False)[0])
    h = int(_siphash(np.array([value], dtype=object), _PANDAS_HASH_KEY, "utf8")[0])
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & _U64
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & _U64
    return h ^ (h >> 31)


def combine(*parts: np.ndarray) -> np.ndarray:
    """One key from several hashed columns (order matters)."""
    out = np.array(parts[0], dtype=np.uint64)  # a fresh array: changed in place below
    for p in parts[1:]:
        _combine_into(out, np.ascontiguousarray(p, dtype=np.uint64))
    return out


class KeyIndex:
    """Maps 64-bit keys to dense ids 0, 1, 2, ... in order of first insertion.

    Backed by pandas' C hash table (``pandas._libs.hashtable.UInt64HashTable``): vectorised
    inserts and lookups with no Python loop. It is an internal pandas API, stable for years;
    constraints.txt pins the pandas release it is tested with, and a dict-based fallback keeps
    the project working should it move.
    """

    def __init__(self, keys: np.ndarray | None = None):
        self._parts: list[np.ndarray] = []
        self._n = 0
        self._table = _HashTable()
        if keys is not None and len(keys):
            self.add(keys.astype(np.uint64))

    def __len__(self) -> int:
        return self._n

    def __reduce__(self) -> tuple[type[KeyIndex], tuple[np.ndarray]]:
        """Pickled as its keys (pandas' hash table is not picklable): key shards on Ray."""
        return KeyIndex, (self.keys().copy(),)

    def keys(self) -> np.ndarray:
        """All keys in id order."""
        if len(self._parts) > 1:
            self._parts = [np.concatenate(self._parts)]
        return self._parts[0] if self._parts else np.zeros(0, np.uint64)

    def get(self, keys: np.ndarray) -> np.ndarray:
        """Ids of ``keys``; -1 for keys never added."""
        return self._table.lookup(np.ascontiguousarray(keys, dtype=np.uint64))

    def add(self, keys: np.ndarray) -> np.ndarray:
        """Ids of ``keys``, adding the new ones (in first-seen order)."""
        ids, new = self._table.insert(np.ascontiguousarray(keys, dtype=np.uint64), self._n)
        if len(new):
            self._parts.append(new)
            self._n += len(new)
        return ids


class _HashTable:
    def __init__(self) -> None:
        try:
            from pandas._libs import hashtable  # type: ignore[attr-defined]

            self._ht = hashtable.UInt64HashTable()
            self._vector = hashtable.UInt64Vector
            self._dict: dict[int, int] | None = None
        except (ImportError, AttributeError):  # pragma: no cover - a pandas without it
            self._dict = {}

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        if self._dict is not None:
            d = self._dict
            return np.fromiter((d.get(int(k), -1) for k in keys), np.int64, len(keys))
        return np.asarray(self._ht.lookup(keys), dtype=np.int64)

    def insert(self, keys: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids of keys, the new keys in first-seen order); new ids start at ``count``."""
        if self._dict is not None:
            d, new = self._dict, list[int]()
            for k in keys.tolist():
                if k not in d:
                    d[k] = count + len(new)
                    new.append(k)
            return self.lookup(keys), np.array(new, dtype=np.uint64)
        uniques = self._vector()
        ids = self._ht.get_labels(keys, uniques, count, -1)
        return np.asarray(ids, dtype=np.int64), uniques.to_array().copy()
