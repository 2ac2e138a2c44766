"""Windowed counters against a brute-force count, and their snapshot round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.features.counters import CounterTable
from pipelines.features.keys import KeyIndex, combine, hash_strings


def test_counts_match_a_brute_force_count_through_time(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 3000
    keys = rng.integers(0, 20, n).astype(np.uint64)
    ev_bucket = np.sort(rng.integers(0, 300, n))
    counts = rng.integers(0, 3, (n, 2))
    windows: list[int | None] = [5, 40, None]
    t = CounterTable(("imp", "click"), windows)
    added = 0
    checks = 0
    for step, b in enumerate(np.sort(rng.integers(0, 320, 300))):
        while added < n and ev_bucket[added] < b + 3:  # some events are still in the future
            t.add(keys[added : added + 1], ev_bucket[added : added + 1], counts[added : added + 1])
            added += 1
        t.advance_to(int(b))
        if step == 150:  # a snapshot mid-stream resumes exactly
            t.save(tmp_path / "c.npz")
            t = CounterTable.load(tmp_path / "c.npz", ("imp", "click"), windows)
        q = rng.integers(0, 25, 10).astype(np.uint64)  # includes keys never seen
        got = t.lookup(q)
        for w in windows:
            for j, key in enumerate(q):
                sel = (keys[:added] == key) & (ev_bucket[:added] < b)
                if w is not None:
                    sel &= ev_bucket[:added] >= b - w
                np.testing.assert_array_equal(got[w][j], counts[:added][sel].sum(axis=0))
                checks += 1
    assert checks > 5000


def test_events_of_the_current_bucket_are_not_visible_and_late_events_count_next() -> None:
    t = CounterTable(("imp",), [None])
    key = np.array([7], np.uint64)
    t.advance_to(10)
    t.add(key, np.array([10]), np.array([[1]]))
    assert t.lookup(key)[None][0, 0] == 0  # its bucket has not closed
    t.add(key, np.array([3]), np.array([[1]]))  # late: a bucket already closed
    assert t.lookup(key)[None][0, 0] == 0
    t.advance_to(11)
    assert t.lookup(key)[None][0, 0] == 2


def test_key_index_assigns_ids_in_first_seen_order() -> None:
    idx = KeyIndex()
    a = hash_strings(["x", "y", "x"])
    np.testing.assert_array_equal(idx.add(a), [0, 1, 0])
    np.testing.assert_array_equal(idx.add(hash_strings(["z", "y"])), [2, 1])
    np.testing.assert_array_equal(idx.get(hash_strings(["y", "nope"])), [1, -1])
    np.testing.assert_array_equal(KeyIndex(idx.keys()).get(hash_strings(["x", "z"])), [0, 2])
    # Stable hashes: the same text hashes the same in every process; order matters in combine.
    assert hash_strings(["hotpot"])[0] == hash_strings(np.array(["hotpot"], dtype=object))[0]
    h1, h2 = hash_strings(["u1"]), hash_strings(["i9"])
    assert combine(h1, h2)[0] != combine(h2, h1)[0]


def test_one_string_hashes_as_pandas_hash_array_does() -> None:
    """The live path hashes a request's one user and one query without pandas' hash_array
    (``keys._hash_one``); the keys must equal the batch path's, which uses it."""
    rng = np.random.default_rng(3)
    texts = ["", "0", "hotpot", "u1", "火锅 店", "café", "a" * 300, "\u0000x", "emoji 🍜"]
    texts += [
        "".join(rng.choice(list("abcxyz0189-_ é火"), rng.integers(1, 40))) for _ in range(300)
    ]
    batch = pd.util.hash_array(np.array(texts, dtype=object), categorize=False)
    one = [int(hash_strings([t])[0]) for t in texts]
    assert one == [int(h) for h in batch]


def test_eviction_forgets_the_least_recent_keys_and_keeps_the_rest_exact(tmp_path: Path) -> None:
    """Against a table that never evicts: kept keys count exactly as before (totals, windows,
    events still queued), forgotten ones count zero, through a snapshot round trip."""
    rng = np.random.default_rng(1)
    windows: list[int | None] = [4, None]
    full = CounterTable(("imp", "click"), windows)
    bounded = CounterTable(("imp", "click"), windows)
    bounded.track_recency()
    last: dict[int, int] = {}
    ever_forgotten: set[int] = set()
    for b in range(60):
        keys = rng.integers(0, 40 + b, 8).astype(np.uint64)  # new keys keep coming
        counts = rng.integers(0, 3, (8, 2))
        buckets = np.full(8, b + 2)  # two buckets in the future: queued when evicting
        for t in (full, bounded):
            t.add(keys, buckets, counts)
            t.advance_to(b)
        last.update({int(k): b + 2 for k in keys})
        if b % 10 == 9:
            before = set(bounded.index.keys().tolist())
            gone = bounded.evict_least_recent(25)
            after = set(bounded.index.keys().tolist())
            assert len(after) == min(25, len(full.index)) and gone == len(before - after)
            ever_forgotten |= before - after
    bounded.save(tmp_path / "c.npz")
    bounded = CounterTable.load(tmp_path / "c.npz", ("imp", "click"), windows)
    for t in (full, bounded):
        t.advance_to(70)
    everything = np.array(sorted(last), np.uint64)
    kept = bounded.index.get(everything) >= 0
    assert 0 < kept.sum() <= 25
    # The kept keys are the most recently counted ones.
    assert (
        min(last[int(k)] for k in everything[kept])
        >= max(last[int(k)] for k in everything[~kept]) - 10
    )
    never = np.array([int(k) not in ever_forgotten for k in everything])
    assert (kept & never).any() and (kept & ~never).any()
    a, b = full.lookup(everything[kept & never]), bounded.lookup(everything[kept & never])
    again = bounded.lookup(everything[kept & ~never])  # forgotten once: counting afresh
    for w in windows:
        np.testing.assert_array_equal(a[w], b[w])
        assert (bounded.lookup(everything[~kept])[w] == 0).all()
        assert (again[w] <= full.lookup(everything[kept & ~never])[w]).all()


def test_history_eviction_keeps_the_users_who_clicked_last() -> None:
    from pipelines.features.history import HistoryStore

    h = HistoryStore(max_len=3)
    for k in range(10):
        h.add(f"u{k}", 100 - k if k < 5 else 100 + k, 1, f"i{k}", False)
    assert h.evict_least_recent(4) == 6 and len(h) == 4
    left = h.lookup(np.array([f"u{k}" for k in range(10)], dtype=object), np.full(10, 10**6))
    assert np.diff(left.offsets).tolist() == [0] * 6 + [1] * 4  # u6..u9 clicked last
    assert h.evict_least_recent(10) == 0
