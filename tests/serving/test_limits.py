"""Limits: requests beyond the in-flight bound or past their deadline get 503 with
Retry-After instead of queueing; a reload under batched requests leaves none hanging."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from pipelines.features.state import FeatureState

TOKEN = "test-admin-token"


def _bodies(state: Path, n: int, size: int) -> list[dict[str, object]]:
    ids = [str(i) for i in FeatureState.load(state).items.ids]
    return [
        {
            "user_id": f"lim-{k}",
            "query": "hotpot",
            "model": "transformer",
            "candidates": [{"item_id": ids[(k * 7 + j) % len(ids)]} for j in range(size)],
        }
        for k in range(n)
    ]


def _concurrently(c: TestClient, bodies: list[dict[str, object]]) -> list[Any]:
    out: list[Any] = [None] * len(bodies)

    def go(k: int) -> None:
        out[k] = c.post("/v1/rank", json=bodies[k])

    threads = [threading.Thread(target=go, args=(k,)) for k in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_requests_beyond_the_in_flight_bound_are_shed_with_retry_after(
    small_registry: Path, small_lists: Path, settings_for: Any, open_client: Any, tmp_path: Path
) -> None:
    s = settings_for(small_registry, tmp_path / "logs", max_in_flight=1)
    with open_client(s) as c:
        replies = _concurrently(c, _bodies(small_lists / "state", 12, 300))
        codes = sorted(r.status_code for r in replies)
        assert set(codes) == {200, 503}, codes
        shed = [r for r in replies if r.status_code == 503]
        assert all(r.headers["retry-after"] == "1" and "busy" in r.json()["error"] for r in shed)
        assert 'ranker_shed_total{reason="busy"}' in c.get("/metrics").text
        assert c.get("/readyz").status_code == 200  # health checks are never shed


def test_a_request_past_its_deadline_gets_503(
    small_registry: Path, small_lists: Path, settings_for: Any, open_client: Any, tmp_path: Path
) -> None:
    s = settings_for(small_registry, tmp_path / "logs", deadline_ms=0.001)
    with open_client(s) as c:
        r = c.post("/v1/rank", json=_bodies(small_lists / "state", 1, 5)[0])
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "deadline" in r.json()["error"]


def test_reloads_under_batched_requests_leave_none_hanging(
    small_registry: Path, small_lists: Path, settings_for: Any, open_client: Any, tmp_path: Path
) -> None:
    s = settings_for(small_registry, tmp_path / "logs", batch_window_ms=5.0)
    bodies = _bodies(small_lists / "state", 8, 20)
    with open_client(s) as c:
        stop = threading.Event()
        results: list[int] = []

        def load(k: int) -> None:
            while not stop.is_set():
                results.append(c.post("/v1/rank", json=bodies[k]).status_code)

        threads = [threading.Thread(target=load, args=(k,)) for k in range(len(bodies))]
        for t in threads:
            t.start()
        old = c.app.state.service.models.current  # type: ignore[attr-defined]
        for _ in range(5):
            r = c.post("/v1/models/reload", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads), "a request hung on a closed batcher"
        assert results and set(results) == {200}
        assert old._closed  # the replaced set was closed once its last request finished


def test_rank_threads_bounds_the_rankings_computed_at_once(
    small_registry: Path, small_lists: Path, settings_for: Any, open_client: Any, tmp_path: Path
) -> None:
    s = settings_for(small_registry, tmp_path / "logs", rank_threads=1)
    with open_client(s) as c:
        service = c.app.state.service  # type: ignore[attr-defined]
        inner, lock = service.rank, threading.Lock()
        now, most = [0], [0]

        def counted(*args: Any, **kw: Any) -> Any:
            with lock:
                now[0] += 1
                most[0] = max(most[0], now[0])
            try:
                time.sleep(0.02)  # long enough for the other threads' requests to arrive
                return inner(*args, **kw)
            finally:
                with lock:
                    now[0] -= 1

        service.rank = counted
        replies = _concurrently(c, _bodies(small_lists / "state", 8, 20))
        assert [r.status_code for r in replies] == [200] * 8
        assert most[0] == 1
        assert "queue" in replies[0].headers["server-timing"]


def test_concurrency_defaults_per_device(
    settings_for: Any, small_registry: Path, tmp_path: Path
) -> None:
    s = settings_for(small_registry, tmp_path / "logs", workers=1, max_batch=32)
    cores = os.cpu_count() or 1
    cpu, gpu = s.concurrency(cuda=False), s.concurrency(cuda=True)
    assert (cpu.batch_window_ms, cpu.lanes, cpu.rank_threads) == (0.0, cores, 2 * cores)
    assert (gpu.batch_window_ms, gpu.lanes, gpu.rank_threads) == (2.0, 1, 32)
    given = settings_for(small_registry, tmp_path / "logs", rank_threads=3, batch_window_ms=1)
    assert given.concurrency(cuda=True).rank_threads == 3
    assert given.concurrency(cuda=False).batch_window_ms == 1.0
