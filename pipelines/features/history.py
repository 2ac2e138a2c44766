"""Behaviour sequences: each user's most recent clicks, as of any time.

A request at time ``t`` sees the user's last ``max_len`` clicks with time strictly before ``t``
(no delay: sequences are real-time, unlike counters). Ties in time keep the order of position.
The same store serves the batch pipeline (fed the logged clicks in time order) and the server
(fed clicks posted to /v1/events).

Storage is one fixed-width row per user (``2 * max_len`` slots, the margin for events that
arrive out of order), in four arrays: time, position, item code and the ordered flag, sorted
by (time, position) within the row. Why arrays: a lookup is a binary search and a slice, a
batch of clicks is inserted by one compiled loop, and a user with a full history costs 21
bytes per slot (about 2 KB at ``max_len`` 50) where Python lists of tuples cost about 150
bytes per event.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.features.jit import jit
from pipelines.features.keys import KeyIndex, hash_strings


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
        self.width = 2 * max_len
        self._users = KeyIndex()  # hashed user id -> row
        self._user_ids: list[str] = []  # row -> user id (saving, and eviction's tie order)
        self._items = KeyIndex()  # hashed item id -> code
        self._item_ids = np.zeros(0, dtype=object)  # code -> item id
        self._n_items = 0
        w = self.width
        self._t = np.zeros((0, w), np.int64)  # (capacity, W) time of each slot
        self._pos = np.zeros((0, w), np.int32)  # (capacity, W) position (tie order)
        self._item = np.zeros((0, w), np.int32)  # (capacity, W) item code
        self._flag = np.zeros((0, w), np.bool_)  # (capacity, W) ordered
        self._len = np.zeros(0, np.int32)  # (capacity,) slots in use, from slot 0

    # ---- storage ---------------------------------------------------------------------------
    def _grow_rows(self, rows: int) -> None:
        """Room for ``rows`` users (capacity doubles, so appending users stays amortised O(1))."""
        have = len(self._len)
        if rows <= have:
            return
        cap = max(rows, 2 * have, 16)

        def grown(old: np.ndarray) -> np.ndarray:
            new = np.zeros((cap, *old.shape[1:]), dtype=old.dtype)
            new[:have] = old
            return new

        self._t, self._pos, self._item = grown(self._t), grown(self._pos), grown(self._item)
        self._flag, self._len = grown(self._flag), grown(self._len)

    def _rows(self, users: np.ndarray) -> np.ndarray:
        """Rows of ``users``, adding new ones."""
        rows = self._users.add(hash_strings(users))
        fresh = np.flatnonzero(rows >= len(self._user_ids))
        if len(fresh):
            seen: set[int] = set()
            for j in fresh:  # new users in first-seen order (their rows were given so)
                if int(rows[j]) not in seen:
                    seen.add(int(rows[j]))
                    self._user_ids.append(str(users[j]))
            self._grow_rows(len(self._user_ids))
        return rows

    def _codes(self, items: np.ndarray) -> np.ndarray:
        """Codes of ``items``, adding new ones."""
        codes = self._items.add(hash_strings(items))
        if len(self._items) > self._n_items:
            new = np.zeros(len(self._items), dtype=object)
            new[: self._n_items] = self._item_ids[: self._n_items]
            for j in np.flatnonzero(codes >= self._n_items):
                new[codes[j]] = str(items[j])
            self._item_ids, self._n_items = new, len(self._items)
        return codes.astype(np.int32)

    # ---- writes ----------------------------------------------------------------------------
    def add_many(
        self,
        users: np.ndarray,
        t_us: np.ndarray,
        position: np.ndarray,
        item_id: np.ndarray,
        ordered: np.ndarray,
    ) -> None:
        """Clicks in the order given (each as ``add`` would store it)."""
        if self.max_len == 0 or len(users) == 0:
            return
        rows = self._rows(np.asarray(users, dtype=object))
        codes = self._codes(np.asarray(item_id, dtype=object))
        _insert(
            self._t,
            self._pos,
            self._item,
            self._flag,
            self._len,
            rows,
            np.asarray(t_us, dtype=np.int64),
            np.asarray(position, dtype=np.int32),
            codes,
            np.asarray(ordered, dtype=np.bool_),
        )

    def add(self, user: str, t_us: int, position: int, item_id: str, ordered: bool) -> None:
        self.add_many(
            np.array([user], dtype=object),
            np.array([t_us]),
            np.array([position]),
            np.array([item_id], dtype=object),
            np.array([ordered]),
        )

    def mark_ordered(self, user: str, t_us: int, item_id: str) -> None:
        """An order reported on its own (online: after its click): flag that click as ordered;
        without a click on record, it counts as a click that was ordered."""
        r = int(self._users.get(hash_strings([user]))[0])
        c = int(self._items.get(hash_strings([item_id]))[0])
        if r >= 0 and c >= 0:
            n = int(self._len[r])
            hit = np.flatnonzero((self._item[r, :n] == c) & (self._t[r, :n] == t_us))
            if len(hit):
                self._flag[r, hit[-1]] = True
                return
        self.add(user, t_us, 0, item_id, True)

    def __len__(self) -> int:
        """Users with a stored history."""
        return len(self._user_ids)

    def users_with_at_least(self, events: int) -> list[str]:
        """Users with at least ``events`` stored clicks (benchmarks pick full histories so)."""
        n = self._len[: len(self._user_ids)]
        return [self._user_ids[r] for r in np.flatnonzero(n >= events)]

    def stored(self) -> dict[str, list[tuple[int, str, bool]]]:
        """Every user's stored clicks as (time, item id, ordered), oldest first (a plain copy,
        for tools that want Python lists, e.g. the straightforward server benchmark)."""
        return {
            u: list(
                zip(
                    self._t[r, : self._len[r]].tolist(),
                    self._item_ids[self._item[r, : self._len[r]]].tolist(),
                    self._flag[r, : self._len[r]].tolist(),
                    strict=True,
                )
            )
            for r, u in enumerate(self._user_ids)
        }

    def evict_least_recent(self, keep: int) -> int:
        """Forget the histories of all but the ``keep`` users who clicked most recently (ties
        by user id, so every worker evicts the same users). Returns how many were forgotten."""
        u = len(self._user_ids)
        extra = u - keep
        if extra <= 0:
            return 0
        last = self._t[np.arange(u), self._len[:u] - 1]
        order = sorted(range(u), key=lambda r: (int(last[r]), self._user_ids[r]))
        kept = np.sort(np.array(order[extra:], dtype=np.int64))
        self._rebuild(kept)
        return extra

    def _rebuild(self, kept: np.ndarray) -> None:
        """Keep only the rows ``kept`` (in that order); item codes no row uses are dropped."""
        users = np.array([self._user_ids[r] for r in kept], dtype=object)
        t, pos, item, flag = (a[kept] for a in (self._t, self._pos, self._item, self._flag))
        lens, names = self._len[kept], self._item_ids
        self.__init__(self.max_len)  # type: ignore[misc]
        k = len(kept)
        self._rows(users)
        self._t[:k], self._pos[:k], self._flag[:k], self._len[:k] = t, pos, flag, lens
        used = np.arange(self.width)[None, :] < lens[:, None]  # (K, W)
        recoded = np.zeros_like(item)
        recoded[used] = self._codes(names[item[used]])
        self._item[:k] = recoded

    # ---- reads -----------------------------------------------------------------------------
    def lookup(self, users: np.ndarray, t_us: np.ndarray) -> Sequences:
        """The last ``max_len`` clicks before each (user, time)."""
        b = len(users)
        rows = self._users.get(hash_strings(users)) if b else np.zeros(0, np.int64)
        if b == 1 and rows[0] >= 0:  # a live request: slices of one row (the loop costs ~10 us)
            one = int(rows[0])
            end = int(np.searchsorted(self._t[one, : self._len[one]], t_us[0], side="left"))
            s = slice(max(0, end - self.max_len), end)
            return Sequences(
                offsets=np.array([0, s.stop - s.start], dtype=np.int64),
                item_id=self._item_ids[self._item[one, s]],
                t_us=self._t[one, s].copy(),
                ordered=self._flag[one, s].copy(),
            )
        start, stop = _windows(self._t, self._len, rows, np.asarray(t_us, np.int64), self.max_len)
        counts = stop - start  # (B,)
        offsets = np.zeros(b + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        # Flat (row, slot) of every event returned, request by request.
        r = np.repeat(np.maximum(rows, 0), counts)  # (M,)
        slot = np.arange(offsets[-1]) - np.repeat(offsets[:-1] - start, counts)  # (M,)
        return Sequences(
            offsets=offsets,
            item_id=self._item_ids[self._item[r, slot]],
            t_us=self._t[r, slot],
            ordered=self._flag[r, slot],
        )

    # ---- files -----------------------------------------------------------------------------
    def _flat(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows in user-id order, each repeated per event, and the slot of each event."""
        u = len(self._user_ids)
        by_id = np.array(sorted(range(u), key=self._user_ids.__getitem__), dtype=np.int64)
        lens = self._len[by_id].astype(np.int64)
        rows = np.repeat(by_id, lens)
        starts = np.repeat(np.cumsum(lens) - lens, lens)
        return rows, np.arange(len(rows)) - starts

    def records(self) -> dict[str, np.ndarray]:
        """Every stored click, users in id order, each user's oldest first (as saved):
        user_id, t_us, position, item_id, ordered."""
        rows, slot = self._flat()
        names = np.array(self._user_ids, dtype=object)
        return {
            "user_id": names[rows],
            "t_us": self._t[rows, slot],
            "position": self._pos[rows, slot].astype(np.int64),
            "item_id": self._item_ids[self._item[rows, slot]],
            "ordered": self._flag[rows, slot],
        }

    def save(self, path: Path) -> None:
        r = self.records()
        table = pa.table(
            {
                "user_id": pa.array(r["user_id"], pa.string()),
                "t_us": pa.array(r["t_us"], pa.int64()),
                "position": pa.array(r["position"], pa.int64()),
                "item_id": pa.array(r["item_id"], pa.string()),
                "ordered": pa.array(r["ordered"], pa.bool_()),
            }
        )
        pq.write_table(table, path, compression="zstd")

    @classmethod
    def load(cls, path: Path, max_len: int) -> HistoryStore:
        """A saved store (events sorted per user, as ``save`` writes them)."""
        d = pq.read_table(path)
        return cls.from_records(
            {c: d[c].to_numpy(zero_copy_only=False) for c in d.column_names}, max_len
        )

    @classmethod
    def merge_shards(cls, shards: list[HistoryStore]) -> HistoryStore:
        """One store from stores that hold disjoint users (key shards of one replay)."""
        parts = [s.records() for s in shards]
        max_len = shards[0].max_len
        return cls.from_records(
            {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}, max_len
        )

    @classmethod
    def from_records(cls, d: dict[str, np.ndarray], max_len: int) -> HistoryStore:
        """A store from ``records()``-shaped columns: each user's events together, oldest
        first (users in any order)."""
        store = cls(max_len)
        if max_len == 0 or len(d["user_id"]) == 0:
            return store
        users = np.asarray(d["user_id"]).astype(object)
        rows = store._rows(users)
        first = np.r_[True, rows[1:] != rows[:-1]]
        run_start = np.maximum.accumulate(np.where(first, np.arange(len(rows)), 0))
        slot = np.arange(len(rows)) - run_start
        lens = np.bincount(rows, minlength=len(store)).astype(np.int32)
        over = lens[rows] - store.width  # a file kept more than this width: its oldest go
        keep = slot >= over
        rows, slot = rows[keep], (slot - np.maximum(over, 0))[keep]
        store._t[rows, slot] = np.asarray(d["t_us"])[keep]
        store._pos[rows, slot] = np.asarray(d["position"])[keep]
        store._item[rows, slot] = store._codes(np.asarray(d["item_id"]).astype(object)[keep])
        store._flag[rows, slot] = np.asarray(d["ordered"])[keep]
        store._len[: len(store)] = np.minimum(lens, store.width)
        return store


@jit
def _insert(
    t: np.ndarray,
    pos: np.ndarray,
    item: np.ndarray,
    flag: np.ndarray,
    lens: np.ndarray,
    rows: np.ndarray,
    et: np.ndarray,
    ep: np.ndarray,
    ei: np.ndarray,
    eo: np.ndarray,
) -> None:
    """Insert events in order into their rows, sorted by (time, position), after equal keys;
    a full row drops its oldest event (the new one itself when it is the oldest)."""
    width = t.shape[1]
    for j in range(len(rows)):
        r = rows[j]
        m = lens[r]
        at = m
        while at > 0 and (
            t[r, at - 1] > et[j] or (t[r, at - 1] == et[j] and pos[r, at - 1] > ep[j])
        ):
            at -= 1
        if m == width:  # full: shift the older part left over the oldest, insert before ``at``
            if at == 0:
                continue
            for s in range(1, at):
                t[r, s - 1], pos[r, s - 1] = t[r, s], pos[r, s]
                item[r, s - 1], flag[r, s - 1] = item[r, s], flag[r, s]
            at -= 1
        else:
            for s in range(m, at, -1):
                t[r, s], pos[r, s] = t[r, s - 1], pos[r, s - 1]
                item[r, s], flag[r, s] = item[r, s - 1], flag[r, s - 1]
            lens[r] = m + 1
        t[r, at], pos[r, at], item[r, at], flag[r, at] = et[j], ep[j], ei[j], eo[j]


@jit
def _windows(
    t: np.ndarray, lens: np.ndarray, rows: np.ndarray, t_us: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per request: the slots [start, end) of the last ``max_len`` events before its time."""
    b = len(rows)
    start = np.zeros(b, np.int64)
    end = np.zeros(b, np.int64)
    for j in range(b):
        r = rows[j]
        if r < 0:
            continue
        lo, hi = 0, lens[r]  # binary search: the first slot whose time is >= t_us[j]
        while lo < hi:
            mid = (lo + hi) // 2
            if t[r, mid] < t_us[j]:
                lo = mid + 1
            else:
                hi = mid
        end[j] = lo
        start[j] = max(0, lo - max_len)
    return start, end
