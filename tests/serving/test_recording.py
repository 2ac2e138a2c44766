"""Recording served rankings: beside the ranking on a pool (a remote store) or on the caller's
thread at the end (the embedded store), with the same outcomes."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from serving.recording import Recorder
from serving.store import StoreError


class FakeStore:
    def __init__(self, fail: bool = False):
        self.fail = fail
        self.calls: list[tuple[str, str]] = []  # (request id, thread name)
        self.owner: dict[str, str] = {}
        self.started = threading.Event()
        self.release = threading.Event()

    def record_request(
        self, rid: str, user: str, query: str, t_us: int, variant: str, cands: Sequence[str]
    ) -> bool:
        self.calls.append((rid, threading.current_thread().name))
        self.started.set()
        self.release.wait(10)
        if self.fail:
            raise StoreError("store down")
        return self.owner.setdefault(rid, user) == user


def test_a_remote_record_runs_while_the_ranking_works_and_is_awaited_at_the_end() -> None:
    store = FakeStore()
    rec = Recorder(store.record_request, concurrent=True, threads=2)
    outcome = rec.start("r1", "u1", "q", 1, "default", ["a", "b"])
    assert store.started.wait(10)  # begun before anyone asked for the outcome
    assert store.calls[0][1] != threading.current_thread().name
    store.release.set()
    assert outcome().mine and outcome().failure is None
    assert not rec.start("r1", "someone else", "q", 1, "default", ["a"])().mine
    rec.close()


@pytest.mark.parametrize("concurrent", [True, False])
def test_a_store_failure_degrades_the_ranking_and_is_named(concurrent: bool) -> None:
    store = FakeStore(fail=True)
    store.release.set()
    rec = Recorder(store.record_request, concurrent=concurrent, threads=1)
    got = rec.start("r1", "u1", "q", 1, "default", ["a"])()
    assert got.mine and got.failure == "store down"
    rec.close()


def test_the_embedded_store_records_on_the_callers_thread_when_asked() -> None:
    store = FakeStore()
    store.release.set()
    rec = Recorder(store.record_request, concurrent=False, threads=1)
    outcome = rec.start("r1", "u1", "q", 1, "default", ["a"])
    assert store.calls == []  # nothing until the ranking is done
    assert outcome().mine
    assert store.calls == [("r1", threading.current_thread().name)]
    rec.close()
