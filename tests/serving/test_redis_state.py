"""Counters and histories in Redis give what the in-memory state gives on the same events:
random events (some late, some on the same bucket, orders after their clicks) and reads at
increasing times, compared read by read with ``CounterTable`` and ``HistoryStore``."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from ops.online.redis_proc import redis_available
from pipelines.features.counters import CounterTable
from pipelines.features.history import HistoryStore
from serving.redis_state import CountWrite, HistoryWrite, RedisState

pytestmark = pytest.mark.skipif(redis_available() is not None, reason=str(redis_available()))
BUCKET_US, DELAY_US, MAX_LEN = 600_000_000, 3_600_000_000, 4
KINDS = {"item": 3, "user": 1}
_prefixes = itertools.count()


def _state(redis_url: str, windows: list[int | None]) -> RedisState:
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    prefix = f"s{next(_prefixes)}:"
    clock = prefix + "clock"
    return RedisState(client, prefix, clock, KINDS, windows, BUCKET_US, DELAY_US, MAX_LEN)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counters_match_the_in_memory_tables(redis_url: str, seed: int) -> None:
    windows: list[int | None] = [3, None, 12]  # buckets; None: all time
    remote = _state(redis_url, windows)
    local = {t: CounterTable(("imp", "click", "order")[:k], windows) for t, k in KINDS.items()}
    rng = np.random.default_rng(seed)
    t = 1_700_000_000_000_000
    for step in range(300):
        t += int(rng.integers(0, 4 * BUCKET_US))
        if rng.random() < 0.6:  # events, sometimes late (before the clock) or far ahead
            n = int(rng.integers(1, 5))
            writes = []
            for _ in range(n):
                table = str(rng.choice(list(KINDS)))
                key = int(rng.integers(0, 6))
                at = t + int(rng.integers(-12, 3)) * BUCKET_US  # delay: 6 buckets
                counts = tuple(int(c) for c in rng.integers(0, 3, KINDS[table]))
                writes.append(CountWrite(table, key, at, counts))
                local[table].add(
                    np.array([key], np.uint64),
                    np.array([(at + DELAY_US) // BUCKET_US]),
                    np.array([counts]),
                )
            remote.observe(writes, [])
        else:  # a read at time t, of every key of every table
            keys = [(table, key) for table in KINDS for key in range(7)]  # key 6: never seen
            got, _ = remote.lookup(t, keys, None)
            for table in KINDS:
                local[table].advance_to(t // BUCKET_US)
            for (table, key), per in zip(keys, got, strict=True):
                want = local[table].lookup(np.array([key], np.uint64))
                for w in windows:
                    assert per[w].tolist() == want[w][0].tolist(), (step, table, key, w)


def test_a_key_twice_in_one_read_is_caught_up_once(redis_url: str) -> None:
    """Candidates of one category share their user x category key: one read names it many
    times, and it must move to the clock once (it was counted twice, once per mention)."""
    remote = _state(redis_url, [3, None])
    t0 = 1_700_000_000_000_000
    remote.observe([CountWrite("user", 5, t0, (1,))], [])
    # Late enough that the bucket also leaves the 3-bucket window and is dropped.
    later = t0 + DELAY_US + 10 * BUCKET_US
    per, _ = remote.lookup_groups(later, [("user", np.array([5, 5, 5], np.uint64))], None)
    assert per[0][None].tolist() == [[1], [1], [1]] and per[0][3].tolist() == [[0], [0], [0]]
    (again,), _ = remote.lookup(later, [("user", 5)], None)
    assert again[None].tolist() == [1]


def test_a_replica_behind_the_shared_clock_does_not_serve_its_cached_bucket(
    redis_url: str,
) -> None:
    """Counts are cached per clock bucket (``serving.bucket_cache``). Replica A read a key at
    bucket e; replica B then moved the shared clock to e + 1, where an event became visible;
    A's next read, at a time still in e, must give the count at e + 1, as Redis does."""
    a = _state(redis_url, [3, None])
    b = RedisState(a.r, a.p, a.clock_key, KINDS, [3, None], BUCKET_US, DELAY_US, MAX_LEN)
    t0 = 1_700_000_000_000_000 // BUCKET_US * BUCKET_US
    a.observe([CountWrite("item", 1, t0, (1, 0, 0))], [])
    in_e = t0 + DELAY_US  # the event's bucket: not visible until the clock leaves it
    (before,), _ = a.lookup(in_e, [("item", 1)], None)
    assert before[None].tolist() == [0, 0, 0]
    hits = b.cache.hits
    (after,), _ = b.lookup(in_e + BUCKET_US, [("item", 1)], None)
    (again,), _ = b.lookup(in_e + BUCKET_US, [("item", 1)], None)
    assert after[None].tolist() == again[None].tolist() == [1, 0, 0]
    assert b.cache.hits == hits + 1  # the second read of one bucket came from the cache
    (late,), _ = a.lookup(in_e, [("item", 1)], None)
    assert late[None].tolist() == [1, 0, 0]


def test_histories_match_the_in_memory_store(redis_url: str) -> None:
    remote = _state(redis_url, [None])
    local = HistoryStore(MAX_LEN)
    rng = np.random.default_rng(7)
    users, items = ["u1", "u2", "a user|with bars"], ["i1", "i2", "i|3"]
    t = 1_700_000_000_000_000
    for _ in range(400):
        t += int(rng.integers(0, 3)) * 1_000_000  # equal times happen
        user, item = str(rng.choice(users)), str(rng.choice(items))
        at = t - int(rng.integers(0, 3)) * 1_000_000  # some out of order
        if rng.random() < 0.8:
            pos, ordered = int(rng.integers(1, 4)), bool(rng.random() < 0.2)
            local.add(user, at, pos, item, ordered)
            remote.observe([], [HistoryWrite("click", user, at, pos, item, ordered)])
        else:  # an order on its own: flags its click, or counts as an ordered click
            local.mark_ordered(user, at, item)
            remote.observe([], [HistoryWrite("order", user, at, 0, item, True)])
        for u in users:
            read_at = t + int(rng.integers(-2, 2)) * 1_000_000
            want = local.lookup(np.array([u], dtype=object), np.array([read_at]))
            _, got = remote.lookup(read_at, [], u)
            assert got.item_id.tolist() == want.item_id.tolist()
            assert got.t_us.tolist() == want.t_us.tolist()
            assert got.ordered.tolist() == want.ordered.tolist()


def test_a_read_moves_the_shared_clock_forward_only(redis_url: str) -> None:
    remote = _state(redis_url, [2, None])
    t0 = 1_700_000_000_000_000
    remote.observe([CountWrite("item", 1, t0, (1, 0, 0))], [])
    # Closed after the delay: at t0 + delay + a bucket the event is counted, and an older
    # read after that still sees it (the clock does not go back).
    (late,), _ = remote.lookup(t0 + DELAY_US + BUCKET_US, [("item", 1)], None)
    (early,), _ = remote.lookup(t0, [("item", 1)], None)
    assert late[None].tolist() == early[None].tolist() == [1, 0, 0]


def test_a_loaded_snapshot_reads_as_the_in_memory_state(redis_url: str, small_lists: Path) -> None:
    """``ranker state load`` then a stateless replica's reads: every counter and sequence of
    requests after the snapshot equals the in-memory state's, before and after new events,
    and a second load changes nothing."""
    import redis

    from pipelines.features.live import LiveFeaturizer
    from pipelines.features.state import Events, FeatureState
    from serving.remote_state import remote_state
    from serving.state_load import CLOCK_KEY, is_loaded, load_state

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    state_dir = small_lists / "state"
    first = load_state(client, state_dir, progress=False)
    assert not first.already_loaded and is_loaded(client, state_dir)
    assert first.counter_keys["item"] > 100 and first.users > 50
    assert load_state(client, state_dir, progress=False).already_loaded
    load_state(client, state_dir, progress=False, force=True)  # a rerun: the same state
    local = LiveFeaturizer(FeatureState.load(state_dir))
    base = FeatureState.load(state_dir)
    remote = LiveFeaturizer(remote_state(base, client, first.prefix, CLOCK_KEY))
    rng = np.random.default_rng(3)
    users = base.history.users_with_at_least(3)[:20]
    items = [str(i) for i in base.items.ids]
    t = int(base.clock_us or 0)
    for step in range(40):
        t += int(rng.integers(0, 1200)) * 10**6
        user = users[step % len(users)]
        cands = [items[int(i)] for i in rng.choice(len(items), 12, replace=False)]
        a = local.featurize(user_id=user, query="hotpot", t_us=t, item_ids=cands)
        b = remote.featurize(user_id=user, query="hotpot", t_us=t, item_ids=cands)
        np.testing.assert_array_equal(a.num, b.num, err_msg=str(step))
        np.testing.assert_array_equal(a.hist_num, b.hist_num)
        np.testing.assert_array_equal(a.hist_cat, b.hist_cat)
        clicked = rng.random(3) < 0.5
        ev = Events(
            np.full(3, user, object), np.full(3, "hotpot", object),
            np.array(cands[:3], object), np.full(3, t), np.arange(1, 4),
            clicked, clicked & (rng.random(3) < 0.3),
        )  # fmt: skip
        local.observe(ev)
        remote.observe(ev)
