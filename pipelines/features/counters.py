"""Windowed event counters that advance in time buckets, exactly alike offline and online.

Semantics. An event at time ``ts`` falls in bucket ``floor((ts + delay) / bucket_s)``. A request
at time ``t`` (bucket ``B = floor(t / bucket_s)``) sees the events of closed buckets only:
buckets ``< B``, and for a window of ``W`` buckets, buckets ``>= B - W``. So an event is never
seen before ``delay`` has passed, nor by any request of its own bucket, and the order of
requests inside a bucket cannot matter.

The table is a stream processor: ``advance_to(B)`` folds closed buckets into per-key running
totals, ``add`` queues new events, ``lookup`` reads totals. The batch pipeline drives it bucket
by bucket through the logs; the server drives it as requests and events arrive. Both get the
same numbers because they run the same code.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.features.jit import jit
from pipelines.features.keys import KeyIndex

MERGE_CHUNKS = 64  # queued chunks of one bucket that are merged into one


@dataclass
class _Bucket:
    ids: list[np.ndarray] = field(default_factory=list)
    counts: list[np.ndarray] = field(default_factory=list)  # (n, K) per chunk

    def arrays(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.ids:
            return np.zeros(0, np.int64), np.zeros((0, k), np.int64)
        return np.concatenate(self.ids), np.concatenate(self.counts)

    def merge(self, k: int) -> None:
        """One chunk, one row per key, instead of many: the server queues a few events per
        call, so a bucket's queue is bounded by its distinct keys, not by its events."""
        ids, counts = _per_key(*self.arrays(k))
        self.ids, self.counts = [ids], [counts]


@dataclass
class CounterExport:
    """A table's state: per key (rows in ``keys`` order) its totals as of ``bucket`` and its
    sums over each finite window; and every bucket still needed later (closed ones inside the
    longest window, pending ones), as (bucket, key rows, counts (n, K))."""

    keys: np.ndarray  # (n,) uint64
    bucket: int | None
    total: np.ndarray  # (n, K)
    windows: dict[int, np.ndarray]  # window -> (n, K)
    buckets: list[tuple[int, np.ndarray, np.ndarray]]


class CounterTable:
    """Counts of K event kinds per key, over several windows.

    ``windows``: window lengths in buckets, ``None`` meaning all time.
    """

    def __init__(self, kinds: tuple[str, ...], windows: list[int | None]):
        self.kinds = kinds
        self.windows = windows
        self.index = KeyIndex()
        self.bucket: int | None = None  # the current bucket: totals cover buckets < this
        k = len(kinds)
        self._total = np.zeros((0, k), np.int64)  # events in buckets < bucket
        self._lag = {
            w: np.zeros((0, k), np.int64) for w in windows if w is not None
        }  # < bucket - w
        self._pending: dict[int, _Bucket] = {}  # buckets >= self.bucket
        # Closed buckets still inside some window, oldest first; ``_first`` is the running
        # number of the oldest, ``_folded[w]`` the running number of the first not yet in lag w.
        self._closed: deque[tuple[int, np.ndarray, np.ndarray]] = deque()
        self._first = 0
        self._folded = {w: 0 for w in self._lag}
        self._max_window = max((w for w in windows if w is not None), default=0)
        # Per key, the last bucket it was counted in: kept only where keys may be evicted
        # (the server), from ``track_recency`` on.
        self._recency: np.ndarray | None = None

    # ---- writing ---------------------------------------------------------------------------
    def insert(self, keys: np.ndarray) -> np.ndarray:
        """Ids of ``keys`` (uint64), adding the new ones with zero counts."""
        ids = self.index.add(keys)
        self._grow(len(self.index))
        return ids

    def add(self, keys: np.ndarray, buckets: np.ndarray, counts: np.ndarray) -> None:
        """Queue events: keys (n,) uint64, their buckets (n,), counts (n, K) of each kind."""
        self.add_ids(self.insert(keys), buckets, counts)

    def add_ids(self, ids: np.ndarray, buckets: np.ndarray, counts: np.ndarray) -> None:
        """Queue events by key id (from ``insert``).

        An event whose bucket is already closed (a late arrival) counts from the next advance.
        """
        if len(ids) == 0:
            return
        if ids.min() < 0:
            raise ValueError("counter events need inserted keys (id -1 given)")
        counts = np.asarray(counts, np.int64).reshape(len(ids), len(self.kinds))
        if self.bucket is not None:
            buckets = np.maximum(buckets, self.bucket)
        if self._recency is not None:
            np.maximum.at(self._recency, ids, np.asarray(buckets, np.int64))
        first = int(buckets[0])
        if (buckets == first).all():  # the usual case: one bucket per call
            slot = self._pending.setdefault(first, _Bucket())
            slot.ids.append(ids)
            slot.counts.append(counts)
            if len(slot.ids) >= MERGE_CHUNKS:
                slot.merge(len(self.kinds))
            return
        for b in np.unique(buckets):
            sel = buckets == b
            slot = self._pending.setdefault(int(b), _Bucket())
            slot.ids.append(ids[sel])
            slot.counts.append(counts[sel])

    def advance_to(self, bucket: int) -> None:
        """Close every bucket before ``bucket``; time never goes back."""
        if self.bucket is not None and bucket <= self.bucket:
            return
        k = len(self.kinds)
        for b in sorted(x for x in self._pending if x < bucket):
            # One row per key: a closed bucket stays in memory for the longest window.
            ids, cnt = _per_key(*self._pending.pop(b).arrays(k))
            _add_rows(self._total, ids, cnt)
            if self._lag:
                self._closed.append((b, ids, cnt))
        # A window of w buckets at bucket B leaves out buckets < B - w: fold the closed buckets
        # that have just fallen out of each window into its lag totals.
        for w, lag in self._lag.items():
            j = self._folded[w]
            while j - self._first < len(self._closed):
                b, ids, cnt = self._closed[j - self._first]
                if b >= bucket - w:
                    break
                _add_rows(lag, ids, cnt)
                j += 1
            self._folded[w] = j
        self.bucket = bucket
        while self._closed and self._closed[0][0] < bucket - self._max_window:
            self._closed.popleft()
            self._first += 1

    def _grow(self, n: int) -> None:
        """Room for ``n`` keys and one spare zero row past them: id -1 (a key never seen)
        reads that last row, so a lookup is a plain gather with no mask."""
        if n < len(self._total):
            return
        cap = max(n + 1, 2 * len(self._total), 1024)
        self._total = _resize(self._total, cap)
        for w in self._lag:
            self._lag[w] = _resize(self._lag[w], cap)
        if self._recency is not None:
            self._recency = _resize(self._recency[:, None], cap)[:, 0]

    # ---- bounding memory (the server) ------------------------------------------------------
    def track_recency(self) -> None:
        """Start recording when each key was last counted. Keys already here count as last
        seen in the current bucket (older than anything counted later)."""
        if self._recency is None:
            self._recency = np.full(len(self._total), self.bucket or 0, np.int64)

    def evict_least_recent(self, keep: int) -> int:
        """Forget all but the ``keep`` most recently counted keys (ties: the earliest added
        go first), with their totals and queued events; a forgotten key counts zero again.
        Deterministic, so workers fed the same events evict the same keys. Returns how many
        were forgotten."""
        n = len(self.index)
        if n <= keep:
            return 0
        self.track_recency()
        assert self._recency is not None
        order = np.lexsort((np.arange(n), self._recency[:n]))  # oldest first
        alive = np.ones(n, bool)
        alive[order[: n - keep]] = False
        new_id = np.full(n, -1, np.int64)
        new_id[alive] = np.arange(keep)
        self.index = KeyIndex(self.index.keys()[alive])
        cap = max(keep + 1, 1024)  # the spare zero row: see ``_grow``
        self._total = _resize(self._total[:n][alive], cap)
        for w in self._lag:
            self._lag[w] = _resize(self._lag[w][:n][alive], cap)
        self._recency = _resize(self._recency[:n][alive][:, None], cap)[:, 0]

        def remap(ids: np.ndarray, cnt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            mapped = new_id[ids]
            return mapped[mapped >= 0], cnt[mapped >= 0]

        k = len(self.kinds)
        for b, slot in self._pending.items():
            ids, cnt = remap(*slot.arrays(k))
            self._pending[b] = _Bucket([ids], [cnt])
        self._closed = deque((b, *remap(ids, cnt)) for b, ids, cnt in self._closed)
        return n - keep

    # ---- reading ---------------------------------------------------------------------------
    def lookup(self, keys: np.ndarray) -> dict[int | None, np.ndarray]:
        """Counts per window: {window: (n, K)} for ``keys`` as of the current bucket."""
        return self.lookup_ids(self.index.get(keys))

    def lookup_ids(self, ids: np.ndarray) -> dict[int | None, np.ndarray]:
        """``lookup`` by key id; -1 (a key never seen) counts zero."""
        if not len(self._total):
            return {w: np.zeros((len(ids), len(self.kinds)), np.int64) for w in self.windows}
        # Id -1 reads the spare zero row past the keys. A window's counts in one compiled pass
        # (total - lag at the ids): the array version was three calls per window and table.
        return {
            w: self._total[ids] if w is None else _window_counts(self._total, self._lag[w], ids)
            for w in self.windows
        }

    # ---- snapshot --------------------------------------------------------------------------
    def export(self) -> CounterExport:
        """Everything a store needs to continue this table elsewhere (``ranker state load``)."""
        n, k = len(self.index), len(self.kinds)
        total = self._total[:n].copy()
        entries = [(b, ids, cnt) for b, ids, cnt in self._closed]
        entries += [(b, *self._pending[b].arrays(k)) for b in sorted(self._pending)]
        return CounterExport(
            keys=self.index.keys().copy(),
            bucket=self.bucket,
            total=total,
            windows={w: total - lag[:n] for w, lag in self._lag.items()},
            buckets=entries,
        )

    def save(self, path: Path) -> None:
        k = len(self.kinds)
        n = len(self.index)
        arrays: dict[str, np.ndarray] = {
            "keys": self.index.keys(),
            "total": self._total[:n],
            "bucket": np.array([-1 if self.bucket is None else self.bucket]),
        }
        for w, lag in self._lag.items():
            arrays[f"lag_{w}"] = lag[:n]
        if self._recency is not None:
            arrays["recency"] = self._recency[:n]
        pend = sorted(self._pending)
        # A pending bucket saved as one row per key, ids ascending: the sums it closes to,
        # whatever order its events came in (so key shards merged give the same file).
        parts = [_per_key(*self._pending[b].arrays(k)) for b in pend]
        closed = list(self._closed)
        arrays["pending_bucket"] = _cat(
            [np.full(len(p[0]), b) for b, p in zip(pend, parts, strict=True)], (0,)
        )
        arrays["pending_ids"] = _cat([p[0] for p in parts], (0,))
        arrays["pending_counts"] = _cat([p[1] for p in parts], (0, k))
        arrays["closed_bucket"] = _cat([np.full(len(c[1]), c[0]) for c in closed], (0,))
        arrays["closed_ids"] = _cat([c[1] for c in closed], (0,))
        arrays["closed_counts"] = _cat([c[2] for c in closed], (0, k))
        with path.open("wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy stubs mistype **kwds

    @classmethod
    def merge_shards(cls, shards: list[tuple[CounterTable, np.ndarray]]) -> CounterTable:
        """One table from tables that counted disjoint keys (key shards of one replay), each
        with the stamp of every key's first event (its row in the whole replay): keys are
        ordered by stamp, which is the order one table fed every event would have given them.
        Every shard must have been advanced to the same bucket."""
        first = shards[0][0]
        if len({t.bucket for t, _ in shards}) > 1:
            raise ValueError("key shards were advanced to different buckets")
        sizes = [len(t.index) for t, _ in shards]
        stamps = np.concatenate([s for _, s in shards])
        if len(stamps) != sum(sizes):
            raise ValueError("one stamp per key is needed to merge key shards")
        order = np.argsort(stamps, kind="stable")  # merged id -> row of the concatenation
        new_id = np.empty(len(order), np.int64)
        new_id[order] = np.arange(len(order))
        base = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        n, k = len(order), len(first.kinds)

        def stacked(arrays: list[np.ndarray]) -> np.ndarray:
            """Per-key rows of every shard, in merged id order, with the spare zero row."""
            rows = [a[:m] for a, m in zip(arrays, sizes, strict=True)]
            return _resize(np.concatenate(rows)[order], n + 1)

        out = cls(first.kinds, first.windows)
        out.index = KeyIndex(np.concatenate([t.index.keys() for t, _ in shards])[order])
        out._total = stacked([t._total for t, _ in shards])
        for w in out._lag:
            out._lag[w] = stacked([t._lag[w] for t, _ in shards])
        out.bucket = first.bucket

        def by_bucket(
            entries: list[tuple[int, int, np.ndarray, np.ndarray]],
        ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
            """(shard, bucket, ids, counts) -> bucket: merged ids ascending, counts."""
            got: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
            for j, b, ids, cnt in entries:
                got.setdefault(b, []).append((new_id[base[j] + ids], cnt))
            return {
                b: _per_key(np.concatenate([i for i, _ in p]), np.concatenate([c for _, c in p]))
                for b, p in sorted(got.items())
            }

        pending = [
            (j, b, *t._pending[b].arrays(k)) for j, (t, _) in enumerate(shards) for b in t._pending
        ]
        out._pending = {b: _Bucket([i], [c]) for b, (i, c) in by_bucket(pending).items()}
        closed = [(j, b, i, c) for j, (t, _) in enumerate(shards) for b, i, c in t._closed]
        out._closed = deque((b, i, c) for b, (i, c) in by_bucket(closed).items())
        for w in out._folded:  # closed buckets already older than a window are in its lag
            out._folded[w] = sum(
                1 for b, _, _ in out._closed if out.bucket is not None and b < out.bucket - w
            )
        return out

    @classmethod
    def load(cls, path: Path, kinds: tuple[str, ...], windows: list[int | None]) -> CounterTable:
        t = cls(kinds, windows)
        with np.load(path) as z:
            t.index = KeyIndex(z["keys"])
            n = len(t.index)
            t._total = _resize(z["total"].astype(np.int64), n + 1)  # + the spare zero row
            for w in t._lag:
                t._lag[w] = _resize(z[f"lag_{w}"].astype(np.int64), n + 1)
            b = int(z["bucket"][0])
            t.bucket = None if b < 0 else b
            if "recency" in z.files:
                t._recency = _resize(z["recency"].astype(np.int64)[:, None], n + 1)[:, 0]
            buckets, ids, counts = z["pending_bucket"], z["pending_ids"], z["pending_counts"]
            for bb in np.unique(buckets):
                sel = buckets == bb
                t._pending[int(bb)] = _Bucket([ids[sel]], [counts[sel]])
            buckets, ids, counts = z["closed_bucket"], z["closed_ids"], z["closed_counts"]
            for bb in np.unique(buckets):  # ascending
                sel = buckets == bb
                t._closed.append((int(bb), ids[sel], counts[sel]))
            # Closed buckets already older than a window are in its lag totals.
            for w in t._folded:
                t._folded[w] = sum(
                    1 for c in t._closed if t.bucket is not None and c[0] < t.bucket - w
                )
        return t


@jit
def _window_counts(total: np.ndarray, lag: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(n, K) total[ids] - lag[ids]; id -1 reads the last row, as numpy indexing does."""
    if lag.shape != total.shape:  # both grow together; a mismatch would read past the end
        raise ValueError("counter lag and total differ in shape")
    out = np.empty((len(ids), total.shape[1]), np.int64)
    for i in range(len(ids)):
        r = ids[i] if ids[i] >= 0 else len(total) + ids[i]
        for k in range(total.shape[1]):
            out[i, k] = total[r, k] - lag[r, k]
    return out


def _add_rows(total: np.ndarray, ids: np.ndarray, cnt: np.ndarray) -> None:
    """total[ids] += cnt with repeated ids; numpy's fast ufunc.at path needs 1-D indices."""
    k = total.shape[1]
    flat_idx = (ids[:, None] * k + np.arange(k)).reshape(-1)
    np.add.at(total.reshape(-1), flat_idx, cnt.reshape(-1))


def _per_key(ids: np.ndarray, cnt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a bucket summed per key (keys ascending): the same totals, fewer rows."""
    if len(ids) < 2:
        return ids, cnt
    keys, where = np.unique(ids, return_inverse=True)
    out = np.zeros((len(keys), cnt.shape[1]), np.int64)
    _add_rows(out, where.reshape(-1), cnt)
    return keys, out


def _cat(parts: list[np.ndarray], empty_shape: tuple[int, ...]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(empty_shape, np.int64)


def _resize(a: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, a.shape[1]), a.dtype)
    out[: len(a)] = a
    return out
