"""Behaviour sequences: each user's most recent clicks, as of any time.

A request at time ``t`` sees the user's last ``max_len`` clicks with time strictly before ``t``
(no delay: sequences are real-time, unlike counters). Ties in time keep the order of position.
The same store serves the batch pipeline (fed the logged clicks in time order) and the server
(fed clicks posted to /v1/events).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass
class Sequences:
    """History of B requests: events ``offsets[b]:offsets[b+1]``, oldest first."""

    offsets: np.ndarray  # (B + 1,) int64
    item_id: np.ndarray  # (M,) str
    t_us: np.ndarray  # (M,) int64
    ordered: np.ndarray  # (M,) bool


class HistoryStore:
    def __init__(self, max_len: int):
        self.max_len = max_len
        # user -> events sorted by (t_us, position): parallel lists, trimmed to 2 * max_len
        self._keys: dict[str, list[tuple[int, int]]] = {}
        self._items: dict[str, list[str]] = {}
        self._ordered: dict[str, list[bool]] = {}

    def add(self, user: str, t_us: int, position: int, item_id: str, ordered: bool) -> None:
        if self.max_len == 0:
            return
        keys = self._keys.setdefault(user, [])
        items = self._items.setdefault(user, [])
        flags = self._ordered.setdefault(user, [])
        key = (t_us, position)
        at = len(keys) if not keys or keys[-1] <= key else bisect.bisect_right(keys, key)
        keys.insert(at, key)
        items.insert(at, item_id)
        flags.insert(at, ordered)
        extra = len(keys) - 2 * self.max_len  # a margin for events that arrive out of order
        if extra > 0:
            del keys[:extra], items[:extra], flags[:extra]

    def mark_ordered(self, user: str, t_us: int, item_id: str) -> None:
        """An order reported on its own (online: after its click): flag that click as ordered;
        without a click on record, it counts as a click that was ordered."""
        keys, items = self._keys.get(user, []), self._items.get(user, [])
        for j in range(len(keys) - 1, -1, -1):
            if items[j] == item_id and keys[j][0] == t_us:
                self._ordered[user][j] = True
                return
        self.add(user, t_us, 0, item_id, True)

    def __len__(self) -> int:
        """Users with a stored history."""
        return len(self._keys)

    def evict_least_recent(self, keep: int) -> int:
        """Forget the histories of all but the ``keep`` users who clicked most recently (ties
        by user id, so every worker evicts the same users). Returns how many were forgotten."""
        extra = len(self._keys) - keep
        if extra <= 0:
            return 0
        last = sorted((keys[-1][0], user) for user, keys in self._keys.items())
        for _, user in last[:extra]:
            del self._keys[user], self._items[user], self._ordered[user]
        return extra

    def lookup(self, users: np.ndarray, t_us: np.ndarray) -> Sequences:
        """The last ``max_len`` clicks before each (user, time)."""
        offsets = np.zeros(len(users) + 1, dtype=np.int64)
        items: list[str] = []
        times: list[int] = []
        flags: list[bool] = []
        for b, (u, t) in enumerate(zip(users, t_us, strict=True)):
            keys = self._keys.get(u)
            if keys:
                end = bisect.bisect_left(keys, (int(t), -(2**62)))
                start = max(0, end - self.max_len)
                items += self._items[u][start:end]
                times += [k[0] for k in keys[start:end]]
                flags += self._ordered[u][start:end]
            offsets[b + 1] = len(items)
        return Sequences(
            offsets=offsets,
            item_id=np.array(items, dtype=object),
            t_us=np.array(times, dtype=np.int64),
            ordered=np.array(flags, dtype=bool),
        )

    def save(self, path: Path) -> None:
        users, t, pos, items, flags = [], [], [], [], []
        for u in sorted(self._keys):
            keys = self._keys[u]
            users += [u] * len(keys)
            t += [k[0] for k in keys]
            pos += [k[1] for k in keys]
            items += self._items[u]
            flags += self._ordered[u]
        table = pa.table(
            {
                "user_id": pa.array(users, pa.string()),
                "t_us": pa.array(t, pa.int64()),
                "position": pa.array(pos, pa.int64()),
                "item_id": pa.array(items, pa.string()),
                "ordered": pa.array(flags, pa.bool_()),
            }
        )
        pq.write_table(table, path, compression="zstd")

    @classmethod
    def load(cls, path: Path, max_len: int) -> HistoryStore:
        store = cls(max_len)
        d = pq.read_table(path).to_pydict()
        for u, t, p, i, o in zip(
            d["user_id"], d["t_us"], d["position"], d["item_id"], d["ordered"], strict=True
        ):
            store._keys.setdefault(u, []).append((t, p))
            store._items.setdefault(u, []).append(i)
            store._ordered.setdefault(u, []).append(o)
        return store
