"""Hostile requests against a real `ranker serve --workers 2`: each gets a clear 4xx, and
afterwards ordinary requests on every worker still get 200 and exactly the scores they got
before it. Every case here once broke the service (a 500, a locked store, a moved clock, an
unbounded metric)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from ops.online.http_client import Http, Reply
from ops.online.server_proc import background_server
from pipelines.features.state import FeatureState


def iso(us: int) -> str:
    return f"{np.datetime64(int(us), 'us')}Z"


class World:
    """What the tests need to know of the small world's state."""

    def __init__(self, state: Path):
        st = FeatureState.load(state)
        self.items = [str(i) for i in st.items.ids]
        self.numeric = list(st.items.num_names)
        self.clock_us = int(st.clock_us or 0)


@pytest.fixture(scope="module")
def world(small_lists: Path) -> World:
    return World(small_lists / "state")


@pytest.fixture(scope="module")
def server(
    small_registry: Path, small_lists: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Http]:
    logs = tmp_path_factory.mktemp("hostile")
    with background_server(small_registry, small_lists / "state", logs, workers=2) as s:
        yield Http(s.url, s.client_token, s.admin_token)


@pytest.fixture(scope="module")
def probe(server: Http, world: World) -> dict[str, object]:
    """An ordinary ranking (its own user, items and query, a fixed time) and its scores."""
    body = {
        "user_id": "probe-user",
        "query": "hotpot",
        "ts": iso(world.clock_us + 600 * 10**6),
        "model": "transformer",
        "candidates": [{"item_id": i} for i in world.items[:20]],
    }
    return {"body": body, "scores": _scores_on_every_worker(server, body)}


def _scores_on_every_worker(server: Http, body: object) -> dict[str, float]:
    replies = server.each_worker("POST", "/v1/rank", body)
    first, second = ({i["item_id"]: i["score"] for i in r.body["items"]} for r in replies.values())
    assert first == second  # both workers score alike
    return first


def _still_serving(server: Http, probe: dict[str, object]) -> None:
    assert _scores_on_every_worker(server, probe["body"]) == probe["scores"]


def _rank(world: World, **changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "user_id": "h-user",
        "query": "tea",
        "ts": iso(world.clock_us + 60 * 10**6),
        "candidates": [{"item_id": i} for i in world.items[100:105]],
    }
    return {**body, **changes}


def _event(**changes: object) -> dict[str, object]:
    return {
        "events": [{"type": "click", "request_id": "r", "user_id": "u", "item_id": "i", **changes}]
    }


def _raw(obj: object, swap: dict[str, str]) -> bytes:
    """JSON text with placeholders replaced by raw escapes Python's json would not write."""
    text = json.dumps(obj)
    for k, v in swap.items():
        text = text.replace(json.dumps(k), v)
    return text.encode()


NESTED = b'{"user_id": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
# (name, path, the call's keywords given the world, status, the field the error names;
# "{feature}" stands for the state's first numeric item attribute)
HOSTILE: list[tuple[str, str, Callable[[World], dict[str, object]], int, str | None]] = [
    (
        "position beyond int64",
        "/v1/events",
        lambda w: {"body": _event(position=2**63)},
        422,
        "events.0.position",
    ),
    (
        "user id beyond int64",
        "/v1/events",
        lambda w: {"body": _event(user_id=2**64)},
        422,
        "events.0.user_id",
    ),
    (
        "lone surrogate in an event's user",
        "/v1/events",
        lambda w: {"raw": _raw(_event(user_id="SURROGATE"), {"SURROGATE": '"\\ud800"'})},
        422,
        "events.0.user_id",
    ),
    (
        "feature of 1e200",
        "/v1/rank",
        lambda w: {
            "body": _rank(w, candidates=[{"item_id": "x", "features": {w.numeric[0]: 1e200}}])
        },
        422,
        "candidates.0.features.{feature}",
    ),
    (
        "lone surrogate in the query",
        "/v1/rank",
        lambda w: {"raw": _raw(_rank(w, query="SURROGATE"), {"SURROGATE": '"a\\udc80b"'})},
        422,
        "query",
    ),
    (
        "ts years ahead",
        "/v1/rank",
        lambda w: {"body": _rank(w, ts="2033-01-01T00:00:00Z")},
        422,
        "ts",
    ),
    ("ts as a number", "/v1/rank", lambda w: {"body": _rank(w, ts=1767225600)}, 422, "ts"),
    (
        "too many candidates",
        "/v1/rank",
        lambda w: {"body": _rank(w, candidates=[{"item_id": f"c{i}"} for i in range(3000)])},
        422,
        "candidates",
    ),
    (
        "latitude of 1e11",
        "/v1/rank",
        lambda w: {"body": _rank(w, context={"lat": 1e11})},
        422,
        "context.lat",
    ),
    (
        "control characters in an id",
        "/v1/rank",
        lambda w: {"body": _rank(w, request_id="a\nb")},
        422,
        "request_id",
    ),
    (
        "a float as a history item",
        "/v1/rank",
        lambda w: {"body": _rank(w, history=[1.5])},
        422,
        "history.0",
    ),
    ("JSON nested 20,000 deep", "/v1/rank", lambda w: {"raw": NESTED}, 400, None),
    ("not JSON", "/v1/rank", lambda w: {"raw": b"\xff\xfe{"}, 400, None),
    ("events without a token", "/v1/events", lambda w: {"body": _event(), "auth": None}, 401, None),
    (
        "events with a wrong token",
        "/v1/events",
        lambda w: {"body": _event(), "auth": "Bearer nope"},
        401,
        None,
    ),
    (
        "admin token of non-ASCII bytes",
        "/v1/models/reload",
        lambda w: {"auth": b"Bearer \xc3\xa9\xff\x80"},
        401,
        None,
    ),
    (
        "client token of non-ASCII bytes",
        "/v1/events",
        lambda w: {"body": _event(), "auth": b"Bearer \xe2\x82\xac"},
        401,
        None,
    ),
]


@pytest.mark.parametrize(
    ("name", "path", "call", "status", "field"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
def test_a_hostile_request_gets_a_4xx_and_hurts_no_other(
    server: Http,
    world: World,
    probe: dict[str, object],
    name: str,
    path: str,
    call: Callable[[World], dict[str, object]],
    status: int,
    field: str | None,
) -> None:
    r: Reply = server.post(path, **call(world))
    assert r.status == status, r.body
    assert isinstance(r.body, dict) and r.body["error"], r.body
    if field is not None:
        expected = field.replace("{feature}", world.numeric[0])
        assert expected in [d["field"] for d in r.body["detail"]], r.body
    assert len(json.dumps(r.body)) < 2000, "the error echoes too much of the request"
    _still_serving(server, probe)


def test_user_histories_need_the_client_token(server: Http) -> None:
    assert server.get("/v1/users/anyone/history", auth=None).status == 401
    assert server.get("/v1/users/anyone/history").status == 200


def test_unknown_paths_do_not_create_metric_series(server: Http) -> None:
    def series() -> int:
        text = server.get("/metrics", auth=None).body
        return sum(1 for line in text.splitlines() if line.startswith("ranker_errors_total{"))

    before = series()
    for i in range(300):
        assert server.get(f"/nothing/here/{i}", auth=None).status == 404
    assert series() <= before + 1  # one "unmatched" series at most


def test_events_must_belong_to_their_ranking(
    server: Http, world: World, probe: dict[str, object]
) -> None:
    items = world.items[200:205]
    t = world.clock_us + 120 * 10**6
    ranked = server.post(
        "/v1/rank",
        {
            "user_id": "ev-user",
            "query": "sushi",
            "ts": iso(t),
            "candidates": [{"item_id": i} for i in items],
        },
    )
    assert ranked.status == 200
    rid = ranked.body["request_id"]
    good = {
        "type": "click",
        "request_id": rid,
        "user_id": "ev-user",
        "item_id": items[1],
        "position": 2,
    }
    bad = [
        ({"request_id": "never-served"}, "events.0.request_id", "unknown_request"),
        ({"user_id": "someone-else"}, "events.0.user_id", "user_mismatch"),
        ({"item_id": world.items[300]}, "events.0.item_id", "item_not_candidate"),
        ({"position": 6}, "events.0.position", "position_out_of_range"),
        ({"ts": iso(t - 10**6)}, "events.0.ts", "before_ranking"),
        ({"ts": "2031-01-01T00:00:00Z"}, "events.0.ts", "future_ts"),
    ]
    for change, field, reason in bad:
        r = server.post("/v1/events", {"events": [good, {**good, **change}]})
        assert r.status == 422, (change, r.body)
        assert [(d["field"], d["type"]) for d in r.body["detail"]] == [
            (field.replace("0", "1"), reason)
        ]
    # Nothing of a refused call was kept: the good event in each is not in the history.
    hist = server.get("/v1/users/ev-user/history").body["history"]
    assert hist == []
    assert server.post("/v1/events", {"events": [good]}).body == {"accepted": 1, "duplicates": 0}
    hist = server.get("/v1/users/ev-user/history").body["history"]
    assert [h["item_id"] for h in hist] == [items[1]]
    text = server.get("/metrics", auth=None).body
    for _, _, reason in bad:
        assert f'ranker_events_refused_total{{reason="{reason}"}}' in text
    _still_serving(server, probe)


def test_future_clicks_cannot_evict_a_history(server: Http, world: World) -> None:
    items = world.items[400:410]
    t = world.clock_us + 180 * 10**6
    ranked = server.post(
        "/v1/rank",
        {
            "user_id": "fut-user",
            "query": "noodles",
            "ts": iso(t),
            "candidates": [{"item_id": i} for i in items],
        },
    ).body
    click = {
        "type": "click",
        "request_id": ranked["request_id"],
        "user_id": "fut-user",
        "item_id": items[0],
    }
    assert server.post("/v1/events", {"events": [click]}).status == 200
    future = [
        {**click, "item_id": items[1 + k % 9], "ts": f"2040-01-01T00:{k // 60:02d}:{k % 60:02d}Z"}
        for k in range(100)
    ]
    r = server.post("/v1/events", {"events": future})
    assert r.status == 422 and len(r.body["detail"]) == 20  # listed up to 20, all refused
    for r in server.each_worker("GET", "/v1/users/fut-user/history").values():
        assert [h["item_id"] for h in r.body["history"]] == [items[0]]


def test_a_request_id_cannot_take_over_another_users_ranking(server: Http, world: World) -> None:
    items = world.items[500:504]
    body = {
        "request_id": "taken-rid",
        "user_id": "owner",
        "query": "bbq",
        "ts": iso(world.clock_us + 240 * 10**6),
        "candidates": [{"item_id": i} for i in items],
    }
    assert server.post("/v1/rank", body).status == 200
    assert server.post("/v1/rank", body).status == 200  # the same user retrying: fine
    r = server.post("/v1/rank", {**body, "user_id": "intruder"})
    assert r.status == 409 and r.body["detail"][0]["field"] == "request_id"
    click = {"type": "click", "request_id": "taken-rid", "user_id": "owner", "item_id": items[0]}
    assert server.post("/v1/events", {"events": [click]}).status == 200
    intruder = {**click, "user_id": "intruder"}
    assert server.post("/v1/events", {"events": [intruder]}).status == 422
