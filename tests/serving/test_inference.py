"""The one inference path: the adaptive batcher, and batched scores equal to one-at-a-time
(within the per-device tolerance of ``_tolerance``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from _tolerance import batched_tolerance

from pipelines.features.live import LiveFeaturizer
from pipelines.features.state import FeatureState
from serving.inference import Batcher
from serving.models import LoadOptions, load_model_set
from serving.runtime import choose_device


class Recorder:
    """score_many that records its batches; scores are the items themselves."""

    def __init__(self, fail_on: int | None = None):
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[int]) -> list[np.ndarray]:
        with self.lock:
            self.batches.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError("model failed")
        return [np.array([float(i)]) for i in items]


def in_threads(fn: object, n: int) -> list[object]:
    out: list[object] = [None] * n

    def run(i: int) -> None:
        try:
            out[i] = fn(i)  # type: ignore[operator]
        except Exception as e:
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    return out


def test_a_lone_request_pays_no_window() -> None:
    rec = Recorder()
    b = Batcher(rec, window_ms=20_000, max_batch=8)
    t = time.perf_counter()
    assert b.score(7)[0] == 7.0
    # Nothing was announced, so the lane did not wait for the 20 s window.
    assert time.perf_counter() - t < 10
    b.close()


def test_a_lone_request_is_scored_on_its_callers_thread() -> None:
    seen: list[str] = []

    def where(items: Sequence[int]) -> list[np.ndarray]:
        seen.append(threading.current_thread().name)
        return [np.array([float(i)]) for i in items]

    b = Batcher(where, window_ms=0, max_batch=8, lanes=2)
    ticket = b.announce()  # its own announcement does not make it wait for itself
    assert b.score(4, ticket)[0] == 4.0
    assert seen == [threading.current_thread().name] and b.inline == 1
    b.close()


def test_lanes_and_callers_together_run_at_most_lanes_calls_at_once() -> None:
    running, peak, lock = [0], [0], threading.Lock()

    def slow(items: Sequence[int]) -> list[np.ndarray]:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.002)
        with lock:
            running[0] -= 1
        return [np.array([float(i)]) for i in items]

    b = Batcher(slow, window_ms=0, max_batch=2, lanes=2)

    def call(i: int) -> float:
        return sum(float(b.score(i * 100 + k)[0]) for k in range(20))

    out = in_threads(call, 8)
    assert out == [sum(i * 100 + k for k in range(20)) for i in range(8)]
    assert peak[0] == 2  # both lanes' worth used, never more
    assert 0 < b.inline < b.items == 160  # some callers scored alone, the rest were batched
    b.close()


def test_announced_requests_share_one_call() -> None:
    rec = Recorder()
    b = Batcher(rec, window_ms=20_000, max_batch=8)
    tickets = [b.announce() for _ in range(4)]

    def call(i: int) -> float:
        time.sleep(0.05 * i)  # they arrive one after another, the lane waits for all four
        return float(b.score(i, tickets[i])[0])

    assert in_threads(call, 4) == [0.0, 1.0, 2.0, 3.0]
    assert rec.batches == [[0, 1, 2, 3]]
    assert b.batches == 1 and b.items == 4
    b.close()


def test_a_withdrawn_request_is_not_waited_for() -> None:
    rec = Recorder()
    b = Batcher(rec, window_ms=20_000, max_batch=8)
    lost = b.announce()
    b.withdraw(lost)  # its featurisation failed
    b.withdraw(lost)  # twice is harmless
    t = time.perf_counter()
    assert b.score(1)[0] == 1.0
    assert time.perf_counter() - t < 10
    b.close()


def test_batches_respect_max_batch_and_max_rows() -> None:
    rec = Recorder()
    b = Batcher(rec, window_ms=20_000, max_batch=3, size=lambda i: 10, max_rows=25)
    tickets = [b.announce() for _ in range(6)]
    in_threads(lambda i: b.score(i, tickets[i]), 6)
    assert sorted(x for batch in rec.batches for x in batch) == list(range(6))
    assert all(len(batch) <= 2 for batch in rec.batches)  # 3 would be 30 rows > 25
    b.close()


def test_an_error_reaches_every_caller_of_its_batch_and_the_lane_lives_on() -> None:
    rec = Recorder(fail_on=2)
    b = Batcher(rec, window_ms=20_000, max_batch=8)
    tickets = [b.announce() for _ in range(4)]
    out = in_threads(lambda i: b.score(i, tickets[i]), 4)
    assert all(isinstance(x, RuntimeError) for x in out)
    assert b.score(5)[0] == 5.0
    b.close()


def test_many_lanes_under_load_answer_everyone_with_their_own_result() -> None:
    rec = Recorder()
    b = Batcher(rec, window_ms=1, max_batch=4, lanes=3)

    def call(i: int) -> float:
        total = 0.0
        for k in range(30):
            t = b.announce()
            got = float(b.score(i * 100 + k, t)[0])
            assert got == i * 100 + k
            total += got
        return total

    out = in_threads(call, 12)
    assert out == [sum(i * 100 + k for k in range(30)) for i in range(12)]
    assert all(t.is_alive() for t in b._lanes)
    b.close()


def test_close_scores_what_is_queued_and_later_calls_score_directly() -> None:
    rec = Recorder()
    b = Batcher(rec, window_ms=0, max_batch=8)
    b.close()
    assert b.score(3)[0] == 3.0


@pytest.mark.parametrize("name", ["lgbm", "transformer", "rerank"])
def test_a_batch_scores_each_request_as_it_would_alone(
    small_registry: Path, small_lists: Path, name: str
) -> None:
    st = FeatureState.load(small_lists / "state")
    live = LiveFeaturizer(st)
    schema = live.schema_key()
    device = choose_device("auto")
    models = load_model_set(small_registry, LoadOptions(schema, device, 1))
    try:
        m = models.models[name]
        users = [*st.history.users_with_at_least(1)[:5], "nobody"]
        t = int(st.clock_us or 0)
        batch = [
            live.featurize(
                user_id=u,
                query=["hotpot", "coffee", "tea"][k % 3],
                t_us=t,
                item_ids=[str(i) for i in st.items.ids[k * 7 : k * 7 + 3 + 4 * k]],
            )
            for k, u in enumerate(users)
        ]
        together = m.score_many(batch)
        alone = [m.score_many([f])[0] for f in batch]
        assert [len(x) for x in together] == [len(f.num) for f in batch]
        for a, b in zip(together, alone, strict=True):
            np.testing.assert_allclose(a, b, atol=batched_tolerance(), rtol=0)
        # And through the batcher, from concurrent callers.
        got = in_threads(lambda i: m.score(batch[i]), len(batch))
        for a, b in zip(got, alone, strict=True):
            np.testing.assert_allclose(a, b, atol=batched_tolerance(), rtol=0)  # type: ignore[arg-type]
    finally:
        models.close()
