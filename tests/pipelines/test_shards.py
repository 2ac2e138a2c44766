"""The replay on key shards (``--shards``, ``--engine ray``): the same files as one state."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from pipelines.features.batch import build_features
from pipelines.features.config import EngineConfig, engine_flags, load_config
from pipelines.features.counters import CounterTable
from pipelines.features.history import HistoryStore
from pipelines.features.keys import KeyIndex

SIM = load_config("sim")


def _differing(a: Path, b: Path) -> list[str]:
    """Files of dataset ``a`` whose bytes differ in ``b`` (the manifest records its time)."""
    files = [p for p in sorted(a.rglob("*")) if p.is_file() and p.name != "manifest.json"]
    assert any(p.name == "counters_ui.npz" for p in files) and (a / "train.parquet").exists()
    return [
        str(p.relative_to(a))
        for p in files
        if p.read_bytes() != (b / p.relative_to(a)).read_bytes()
    ]


@pytest.mark.parametrize("shards", [1, 2, 7])
def test_key_shards_give_the_single_state_files_byte_for_byte(
    slice_logs: Path, slice_lists: Path, tmp_path: Path, shards: int
) -> None:
    out = tmp_path / "lists"
    build_features(slice_logs, out, SIM, progress=False, engine=EngineConfig(shards=shards))
    assert _differing(slice_lists, out) == []


def test_merged_counters_equal_one_table_fed_every_event() -> None:
    """Keys split into shards by a hash, each shard fed its keys' events in order (and every
    advance): the merged table holds the keys, ids, totals and buckets of one table."""
    rng = np.random.default_rng(3)
    n, windows = 4000, [4, None]
    keys = rng.integers(0, 300, n).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    buckets = np.sort(rng.integers(0, 60, n))
    counts = rng.integers(0, 3, (n, 2))
    one = CounterTable(("imp", "click"), windows)
    shards = [CounterTable(("imp", "click"), windows) for _ in range(3)]
    stamps: list[list[np.ndarray]] = [[] for _ in shards]
    owner = (keys % np.uint64(3)).astype(int)
    for b in range(0, 64, 2):  # pairs of buckets: the last ones stay pending
        sel = np.flatnonzero((buckets >= b) & (buckets < b + 2))
        one.advance_to(b)
        one.add(keys[sel], buckets[sel] + 1, counts[sel])
        for s, t in enumerate(shards):
            t.advance_to(b)
            mine = sel[owner[sel] == s]
            n0 = len(t.index)
            ids = t.insert(keys[mine])
            _, first = np.unique(ids[ids >= n0], return_index=True)
            stamps[s].append(mine[ids >= n0][first])
            t.add_ids(ids, buckets[mine] + 1, counts[mine])
    merged = CounterTable.merge_shards(
        [(t, np.concatenate(st)) for t, st in zip(shards, stamps, strict=True)]
    )
    np.testing.assert_array_equal(merged.index.keys(), one.index.keys())
    a, b = merged.export(), one.export()
    assert a.bucket == b.bucket and len(a.buckets) == len(b.buckets) > 2
    np.testing.assert_array_equal(a.total, b.total)
    np.testing.assert_array_equal(a.windows[4], b.windows[4])
    for (ba, ia, ca), (bb, ib, cb) in zip(a.buckets[:-2], b.buckets[:-2], strict=True):
        assert ba == bb
        np.testing.assert_array_equal(ia, ib)  # closed buckets: one row per key, ids ascending
        np.testing.assert_array_equal(ca, cb)
    q = keys[:50]
    for w in windows:  # and it goes on counting alike
        merged.advance_to(70)
        one.advance_to(70)
        np.testing.assert_array_equal(merged.lookup(q)[w], one.lookup(q)[w])


def test_merging_counters_refuses_shards_at_different_times() -> None:
    a, b = CounterTable(("imp",), [None]), CounterTable(("imp",), [None])
    a.advance_to(3)
    with pytest.raises(ValueError, match="different buckets"):
        CounterTable.merge_shards([(a, np.zeros(0, np.int64)), (b, np.zeros(0, np.int64))])


def test_merged_histories_hold_every_users_clicks() -> None:
    rng = np.random.default_rng(1)
    one, parts = HistoryStore(3), [HistoryStore(3), HistoryStore(3)]
    users = np.array([f"u{i}" for i in rng.integers(0, 20, 200)], dtype=object)
    items = np.array([f"i{i}" for i in rng.integers(0, 9, 200)], dtype=object)
    t = np.sort(rng.integers(0, 10_000, 200))
    pos, flag = rng.integers(1, 9, 200), rng.random(200) < 0.2
    one.add_many(users, t, pos, items, flag)
    for s, part in enumerate(parts):
        sel = np.array([int(u[1:]) % 2 == s for u in users])
        part.add_many(users[sel], t[sel], pos[sel], items[sel], flag[sel])
    merged = HistoryStore.merge_shards(parts)
    assert merged.stored() and sorted(merged.stored().items()) == sorted(one.stored().items())
    for name, col in merged.records().items():
        np.testing.assert_array_equal(col, one.records()[name])


def test_key_index_pickles_as_its_keys() -> None:
    idx = KeyIndex(np.array([5, 3, 9], np.uint64))
    back = pickle.loads(pickle.dumps(idx))
    np.testing.assert_array_equal(back.keys(), idx.keys())
    np.testing.assert_array_equal(back.get(np.array([9, 4], np.uint64)), [2, -1])
    assert back.add(np.array([4], np.uint64))[0] == 3


def test_engine_settings_are_checked_and_become_flags() -> None:
    assert [f for f, _ in engine_flags()] == ["--engine", "--shards", "--workers", "--address"]
    with pytest.raises(ValueError, match="engine"):
        EngineConfig(engine="spark")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Ray cluster"):
        EngineConfig(address="10.0.0.1:6379")
    assert EngineConfig(engine="ray", workers=3).shard_count == 3
    assert EngineConfig().shard_count == 0


def test_ray_with_two_workers_and_seven_shards_writes_the_same_files(
    slice_lists: Path, slice_lists_by_ray: Path
) -> None:
    """A real local Ray cluster (started and stopped by the run; conftest's fixture, shared
    with the live replay of tests/pipelines/test_features.py)."""
    assert _differing(slice_lists, slice_lists_by_ray) == []
