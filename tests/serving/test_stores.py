"""The shared store's contract, held by both stores: SQLite (one machine) and Redis (replicas
on several). The Redis cases run a real redis-server on a free port."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.online.redis_proc import RedisServer, redis_available, redis_server
from serving.store import SharedStore
from serving.store_rows import ServedRanking, StoreError, now_us
from serving.stores import Store

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    why = redis_available()
    if why:
        pytest.skip(why)
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store
    if request.param == "sqlite":
        s = SharedStore(tmp_path / "store.sqlite")
    else:
        from serving.redis_store import RedisStore

        server: RedisServer = request.getfixturevalue("redis_url")
        # one server for the module; a fresh key prefix per test keeps tests apart
        s = RedisStore(server.url, served_ttl_s=3600, prefix=f"t{next(_prefixes)}:")
    yield s
    s.close()


def click(k: int, key: str = "") -> tuple[str, str, str, str, int | None, int, str, str, str]:
    return ("click", f"r{k}", "u", "a", 1, k, "q", "", key)


def test_rankings_belong_to_their_user(store: Store) -> None:
    assert store.record_request(ServedRanking("r1", "u1", "hotpot", 5, "A", ["a", "b"]))
    # a retry
    assert store.record_request(ServedRanking("r1", "u1", "coffee", 6, "A", ["a", "b", "c"]))
    # another user's id
    assert not store.record_request(ServedRanking("r1", "u2", "tea", 7, "B", ["x"]))
    served = store.served(["r1", "r1", "missing"])
    assert list(served) == ["r1"]
    s = served["r1"]
    assert (s.user_id, s.query, s.t_us, s.variant) == ("u1", "coffee", 6, "A")
    assert s.candidates == frozenset("abc") and s.n_candidates == 3


def test_the_shared_clock_is_the_latest_ranking_time(store: Store) -> None:
    assert store.poll(0).clock_us == 0
    store.record_request(ServedRanking("r1", "u", "q", 500, "", ["a"]))
    # an older time never moves it back
    store.record_request(ServedRanking("r2", "u", "q", 300, "", ["a"]))
    assert store.poll(0).clock_us == 500
    # refused: no move
    assert not store.record_request(ServedRanking("r1", "other", "q", 900, "", ["a"]))
    assert store.poll(0).clock_us == 500


def test_events_are_ordered_and_a_retry_counts_once(store: Store) -> None:
    assert store.add_events([click(1, "k1"), click(2, "k2")]) == [True, True]
    assert store.add_events([click(1, "k1"), click(3, "k3"), click(4)]) == [False, True, True]
    assert store.add_events([click(5), click(5)]) == [True, True]  # no key: stored each time
    rows = store.events_since(0)
    assert [e.id for e in rows] == [1, 2, 3, 4, 5, 6]
    assert [e.request_id for e in rows] == ["r1", "r2", "r3", "r4", "r5", "r5"]
    e = rows[0]
    assert (e.type, e.user_id, e.item_id, e.position, e.t_us, e.query, e.variant) == (
        "click",
        "u",
        "a",
        1,
        1,
        "q",
        "",
    )
    assert [e.id for e in store.events_since(2, limit=3)] == [3, 4, 5]
    assert store.last_event_id() == 6
    assert store.poll(5).pending and not store.poll(6).pending


def test_a_position_may_be_absent(store: Store) -> None:
    store.add_events([("impression", "r", "u", "a", None, 1, "", "", "")])
    assert store.events_since(0)[0].position is None


def test_generation_leases_and_checkpoints(store: Store) -> None:
    assert store.generation() == 0 and store.pinned_models() is None
    assert store.publish_models({"lgbm": "v1"}, bump=False) == 0
    assert store.publish_models({"lgbm": "v2"}, bump=True) == 1
    assert store.generation() == 1 and store.pinned_models() == {"lgbm": "v2"}
    assert store.claim("retention", 7, ttl_s=60) and store.claim("retention", 7, ttl_s=60)
    assert not store.claim("retention", 8, ttl_s=60)
    assert store.set_checkpoint('{"event_id": 5}', 5)
    assert not store.set_checkpoint('{"event_id": 4}', 4)  # never back to an older one
    assert store.get("checkpoint") == '{"event_id": 5}'
    assert store.register_worker(9, 0) == '{"event_id": 5}'
    assert [(w.pid, w.last_event) for w in store.workers()] == [(9, 5)]
    store.probe()


def test_a_new_snapshot_starts_afresh(store: Store) -> None:
    assert store.reset_for("snap-1")
    store.record_request(ServedRanking("r1", "u", "q", 1, "", ["a"]))
    store.add_events([click(1)])
    assert not store.reset_for("snap-1")
    assert store.counts()["events"] == 1
    assert store.reset_for("snap-2")
    assert store.counts()["events"] == 0 and store.served(["r1"]) == {}


def test_retention_keeps_what_workers_still_need(store: Store) -> None:
    for k in range(10):
        store.record_request(ServedRanking(f"r{k}", "u", "q", k, "", ["a", "b"]))
    store.add_events([click(k) for k in range(10)])
    store.heartbeat(1, 0, 0, 7, {})
    deleted = store.prune(
        served_before_us=0, max_served=4, events_upto=5, workers_before_us=now_us() + 1
    )
    assert deleted == 6 + 5
    assert store.counts() == {"requests": 4, "events": 5, "workers": 0}
    assert sorted(store.served([f"r{k}" for k in range(10)])) == ["r6", "r7", "r8", "r9"]
    assert [e.id for e in store.events_since(0)] == [6, 7, 8, 9, 10]


def test_worker_ids_are_unique(store: Store) -> None:
    a, b = store.worker_id(1234), store.worker_id(1234)
    # SQLite: one machine, the pid itself; Redis: numbered across machines
    assert (a == b == 1234) if store.shares_files else a != b


def test_redis_down_is_a_store_error(tmp_path: Path) -> None:
    why = redis_available()
    if why:
        pytest.skip(why)
    from serving.redis_store import RedisStore

    with redis_server(tmp_path / "r") as server:
        store = RedisStore(server.url, served_ttl_s=60)
        store.add_events([click(1)])
    # The server is gone: every call says so as a StoreError (the service answers 503).
    with pytest.raises(StoreError, match="add_events failed"):
        store.add_events([click(2)])
    with pytest.raises(StoreError):
        store.served(["r1"])
    with pytest.raises(StoreError, match="cannot reach"):
        RedisStore(server.url, served_ttl_s=60)


def test_an_acknowledged_event_survives_a_redis_restart_with_aof(tmp_path: Path) -> None:
    why = redis_available()
    if why:
        pytest.skip(why)
    from serving.redis_store import RedisStore

    with redis_server(tmp_path / "r", appendonly=True) as server:
        store = RedisStore(server.url, served_ttl_s=60)
        assert store.add_events([click(k, f"k{k}") for k in range(50)]) == [True] * 50
        os.kill(server.pid, signal.SIGKILL)  # no shutdown: only what was fsynced is left
        port = server.port
    store.close()
    with redis_server(tmp_path / "r", appendonly=True, port=port) as again:
        store = RedisStore(again.url, served_ttl_s=60)
        assert [e.id for e in store.events_since(0)] == list(range(1, 51))
        assert store.add_events([click(3, "k3")]) == [False]  # its key survived too
        store.close()
