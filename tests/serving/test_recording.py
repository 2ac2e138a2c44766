"""Recording served rankings: on the embedded store at the end of the ranking; on a stateless
replica inside the featurisation's own Redis read (one round trip), with a record of its own
when that read did not carry it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ops.online.redis_proc import redis_available
from serving.recording import Recorder
from serving.store import SharedStore
from serving.store_rows import ServedRanking, StoreError


def test_the_embedded_store_records_when_the_outcome_is_asked(tmp_path: Path) -> None:
    store = SharedStore(tmp_path / "store.sqlite")
    rec = Recorder(store, None)
    with rec.around_featurisation(
        ServedRanking("r1", "u1", "q", 1, "default", ["a", "b"])
    ) as outcome:
        assert store.served(["r1"]) == {}  # nothing yet: the ranking is not scored
    got = outcome()
    assert got.mine and got.failure is None and store.served(["r1"])["r1"].user_id == "u1"
    with rec.around_featurisation(
        ServedRanking("r1", "someone else", "q", 1, "default", ["a"])
    ) as outcome:
        pass
    assert not outcome().mine
    store.close()

    def broken(ranking: ServedRanking) -> bool:
        raise StoreError("store down")

    store.record_request = broken  # type: ignore[method-assign]
    with rec.around_featurisation(ServedRanking("r2", "u1", "q", 1, "default", ["a"])) as outcome:
        pass
    assert outcome().mine and outcome().failure == "store down"  # degraded, still served


@pytest.mark.skipif(redis_available() is not None, reason=str(redis_available()))
def test_a_replica_records_in_its_featurisation_read(redis_url: str, small_lists: Path) -> None:
    import redis

    from pipelines.features.live import LiveFeaturizer
    from pipelines.features.state import FeatureState
    from serving.redis_store import RedisStore
    from serving.remote_state import remote_state
    from serving.state_load import CLOCK_KEY, load_state

    url = redis_url.rsplit("/", 1)[0] + "/1"  # a database of its own: other tests load too
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    state_dir = small_lists / "state"
    prefix = load_state(client, state_dir, progress=False).prefix
    base = FeatureState.load(state_dir)
    state = remote_state(base, client, prefix, CLOCK_KEY)
    live = LiveFeaturizer(state)
    store = RedisStore(url, served_ttl_s=60)
    rec = Recorder(store, state)
    items = [str(i) for i in base.items.ids[:5]]
    t = int(base.clock_us or 0) + 10**6

    def scripts() -> int:
        stats = client.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    live.featurize(user_id="u0", query="q", t_us=t, item_ids=items)  # the scripts loaded
    before = scripts()
    with rec.around_featurisation(ServedRanking("r1", "u1", "q", t, "default", items)) as outcome:
        live.featurize(user_id="u1", query="q", t_us=t, item_ids=items)
        assert state.ride is None  # taken by the read
    got = outcome()
    assert got.mine and got.failure is None
    assert scripts() - before == 1  # one trip: the read carried the record
    served = store.served(["r1"])["r1"]
    assert served.user_id == "u1" and served.candidates == frozenset(items)

    with rec.around_featurisation(ServedRanking("r1", "u2", "q", t, "default", items)) as outcome:
        live.featurize(user_id="u2", query="q", t_us=t, item_ids=items)
    assert not outcome().mine and store.served(["r1"])["r1"].user_id == "u1"

    # A featurisation that made no read (it failed first): the ride is not left for the next
    # ranking's read, and the record is made on its own.
    with (
        pytest.raises(RuntimeError),
        rec.around_featurisation(ServedRanking("r2", "u3", "q", t, "default", items)) as outcome,
    ):
        raise RuntimeError("featurisation failed")
    assert state.ride is None
    assert outcome().mine and store.served(["r2"])["r2"].user_id == "u3"
    np.testing.assert_array_equal(sorted(store.served(["r1", "r2"])), ["r1", "r2"])
    store.close()
