"""Counter summaries a stateless replica read from Redis, kept for the clock bucket they were
read at: exact, not stale.

A read at clock bucket ``B`` sees the buckets before ``B`` only, and an event always lands in
the current bucket or a later one (``serving.redis_state``): once the shared clock is in ``B``,
nothing can change what a read at ``B`` returns. So a key read once at ``B`` needs no second
trip while the clock stays there (600 s by default); when Redis answers at a later bucket
(this replica's clock guess was behind another's), everything cached is dropped. The history
is not cached: a click is in it at once.

Bounded: at ``max_keys`` keys the cache starts afresh (0: nothing is kept from one read to the
next); each key holds its table's summary (8 bytes per count and window) and an index entry.
``ranker_counter_keys_total{source}`` counts the keys read from the cache and from Redis.
"""

from __future__ import annotations

import threading

import numpy as np

from pipelines.features.keys import KeyIndex
from serving import metrics


class _Table:
    def __init__(self, width: int):
        self.index = KeyIndex()
        self.rows = np.zeros((64, width), np.int64)

    def put(self, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
        ids = self.index.add(keys)
        if len(self.index) > len(self.rows):  # grow by doubling
            grown = np.zeros((2 * len(self.index), self.rows.shape[1]), np.int64)
            grown[: len(self.rows)] = self.rows
            self.rows = grown
        self.rows[ids] = rows
        return ids


class BucketCache:
    def __init__(self, widths: dict[str, int], max_keys: int = 100_000):
        self.widths = widths  # table -> values per key (counts x (1 + finite windows))
        self.max_keys = max_keys
        self.lock = threading.Lock()
        self.bucket = -1
        self.hits = self.misses = 0
        self._tables: dict[str, _Table] = {}
        self._from = {s: metrics.COUNTER_KEYS.labels(s) for s in ("cache", "redis")}

    def at(self, bucket: int) -> None:
        """Serve reads at ``bucket`` from now on (a new bucket drops everything)."""
        if bucket != self.bucket or self.size() > self.max_keys:
            self._tables = {}
        self.bucket = bucket

    def size(self) -> int:
        return sum(len(t.index) for t in self._tables.values())

    def find(self, table: str, keys: np.ndarray) -> np.ndarray:
        """(n,) cache ids of ``keys``, -1 where not cached."""
        t = self._tables.get(table)
        return np.full(len(keys), -1, np.int64) if t is None else t.index.get(keys)

    def count(self, hits: int, misses: int) -> None:
        """One read's keys by source (for the metric; once a read, not once a table)."""
        self.hits += hits
        self.misses += misses
        self._from["cache"].inc(hits)
        self._from["redis"].inc(misses)

    def put(self, table: str, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Keys read at the current bucket and their (n, width) summaries; their cache ids."""
        if not len(keys):
            return np.zeros(0, np.int64)
        return self._tables.setdefault(table, _Table(self.widths[table])).put(keys, rows)

    def rows(self, table: str, ids: np.ndarray) -> np.ndarray:
        """(n, width) summaries at cache ids (from ``find`` or ``put``)."""
        t = self._tables.get(table)
        return np.zeros((0, self.widths[table]), np.int64) if t is None else t.rows[ids]

    def get(self, table: str, keys: np.ndarray) -> np.ndarray:
        """(n, width) summaries of keys all cached."""
        return self.rows(table, self._tables[table].index.get(keys))
