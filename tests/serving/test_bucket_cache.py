"""The stateless replica's per-bucket cache of counter summaries (no Redis needed here; the
exactness against Redis is in test_redis_state.py)."""

from __future__ import annotations

import numpy as np

from serving.bucket_cache import BucketCache


def test_keys_come_back_with_their_rows_and_a_new_bucket_forgets_them() -> None:
    c = BucketCache({"item": 2}, max_keys=1000)
    c.at(7)
    keys = np.array([5, 9, 5], np.uint64)  # a key named twice (user x category)
    assert (c.find("item", keys) == -1).all()
    c.put("item", keys, np.array([[1, 2], [3, 4], [1, 2]]))
    assert c.get("item", np.array([9, 5], np.uint64)).tolist() == [[3, 4], [1, 2]]
    assert (c.find("item", keys) >= 0).all()
    c.count(2, 1)
    assert c.hits == 2 and c.misses == 1
    c.at(7)
    assert c.size() == 2
    c.at(8)
    assert c.size() == 0 and (c.find("item", keys) == -1).all()


def test_it_grows_past_its_first_allocation_and_starts_afresh_past_max_keys() -> None:
    c = BucketCache({"ui": 1}, max_keys=500)
    c.at(1)
    keys = np.arange(400, dtype=np.uint64)
    c.put("ui", keys, keys[:, None].astype(np.int64) * 10)
    assert c.get("ui", keys[::-1])[:, 0].tolist() == (keys[::-1] * 10).tolist()
    c.put("ui", keys + 400, np.zeros((400, 1), np.int64))
    c.at(1)  # same bucket, but 800 keys > 500: dropped
    assert c.size() == 0


def test_max_keys_zero_keeps_nothing_from_one_read_to_the_next() -> None:
    c = BucketCache({"item": 1}, max_keys=0)
    c.at(3)
    keys = np.array([1, 2], np.uint64)
    c.put("item", keys, np.array([[10], [20]]))
    assert c.get("item", keys)[:, 0].tolist() == [10, 20]  # the read that fetched them
    c.at(3)
    assert (c.find("item", keys) == -1).all()
