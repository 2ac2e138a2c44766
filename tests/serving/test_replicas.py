"""Two `ranker serve` replicas (separate processes, ports and log directories, as on two
machines) sharing one real Redis: events and reloads cross between them, a retry through the
other replica counts once, and Redis going down degrades rankings and refuses events."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from ops.online.http_client import Http
from ops.online.redis_proc import RedisServer, redis_available, redis_server
from ops.online.server_proc import background_server

pytestmark = pytest.mark.skipif(redis_available() is not None, reason=str(redis_available()))


@pytest.fixture
def replicas(
    small_registry: Path, small_lists: Path, tmp_path: Path
) -> Iterator[tuple[RedisServer, Http, Http]]:
    with ExitStack() as stack:
        redis = stack.enter_context(redis_server(tmp_path / "redis"))
        a, b = (
            stack.enter_context(
                background_server(
                    small_registry,
                    small_lists / "state",
                    tmp_path / name,
                    extra=["--store", redis.url],
                )
            )
            for name in ("a", "b")
        )
        yield (
            redis,
            Http(a.url, a.client_token, a.admin_token),
            Http(b.url, b.client_token, b.admin_token),
        )


def _rank(server: Http, user: str, ts: str | None = None) -> dict:
    body = {
        "user_id": user,
        "query": "hotpot",
        "candidates": [{"item_id": f"i{k:03d}"} for k in range(1, 9)],
    }
    r = server.post("/v1/rank", body | ({"ts": ts} if ts else {}))
    assert r.status == 200, r.body
    return dict(r.body)


def test_replicas_share_events_reloads_and_scores(replicas: tuple[RedisServer, Http, Http]) -> None:
    _, a, b = replicas
    ranked = _rank(a, "shared-user")
    event = {
        "type": "click",
        "request_id": ranked["request_id"],
        "user_id": "shared-user",
        "item_id": "i002",
        "position": 2,
    }
    assert a.post("/v1/events", {"events": [event]}).body == {"accepted": 1, "duplicates": 0}
    hist = b.get("/v1/users/shared-user/history").body["history"]
    assert [h["item_id"] for h in hist] == ["i002"]  # B's next read sees A's click
    # The client retries through the other replica: acknowledged, stored once.
    assert b.post("/v1/events", {"events": [event]}).body == {"accepted": 1, "duplicates": 1}
    assert len(a.get("/v1/users/shared-user/history").body["history"]) == 1
    # Both replicas score the same request (same time) alike, bit for bit.
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    one, two = _rank(a, "shared-user", ts), _rank(b, "shared-user", ts)
    assert [(i["item_id"], i["score"]) for i in one["items"]] == [
        (i["item_id"], i["score"]) for i in two["items"]
    ]
    # An event may name the ranking of the other replica (its ranking is in Redis).
    other = {**event, "request_id": two["request_id"], "item_id": "i003", "position": 3}
    assert a.post("/v1/events", {"events": [other]}).body["accepted"] == 1
    # A reload through one replica reaches the other.
    gen = b.get("/v1/models").body["generation"]
    assert a.post("/v1/models/reload", {}, auth="admin").status == 200
    b.wait(lambda: b.get("/v1/models").body["generation"] == gen + 1, timeout=20)


def test_redis_down_degrades_rankings_and_refuses_events(
    replicas: tuple[RedisServer, Http, Http],
) -> None:
    redis, a, _ = replicas
    ranked = _rank(a, "u-down")
    os.kill(redis.pid, signal.SIGKILL)
    r = a.post(
        "/v1/rank",
        {"user_id": "u-down", "query": "hotpot", "candidates": [{"item_id": "i001"}]},
    )
    assert r.status == 200 and "store" in r.headers.get("x-ranker-degraded", "")
    event = {
        "type": "click",
        "request_id": ranked["request_id"],
        "user_id": "u-down",
        "item_id": "i001",
    }
    r = a.post("/v1/events", {"events": [event]})
    assert r.status == 503 and "store" in r.body["error"]
