"""Bodies of the hot routes are validated from their bytes by pydantic-core (``JsonBodyRoute``)
instead of ``json.loads`` and a pass over the dicts: the same bodies are accepted with the same
values, every refused body gets exactly the answer it got before, and the schema is unchanged.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import starlette.requests
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, TypeAdapter, ValidationError

from serving import errors
from serving.bounds import Id
from serving.deps import JsonBodyRoute
from serving.schemas import AnyId, EventsRequest, HistoryEntry, HistoryEvent, RankRequest

TS = "2026-01-26T19:05:00Z"
JSON = {"content-type": "application/json"}
RANK = {"user_id": "u1", "query": "tea", "ts": TS, "candidates": [{"item_id": "i1"}]}
EVENTS = {"events": [{"type": "click", "request_id": "r", "user_id": "u", "item_id": "i"}]}
# Values that sit on the edges of the bounds and of what the two parsers agree on.
VALUES: list[object] = [
    None, True, False, 0, -1, 1, 3, 5.0, 1.5, -0.0, 798.0, 1e3, 2**53 - 1, 2**53, -(2**53 - 1),
    2**63, 2**64, 1e12, 1e13, -1e12, 1e200, "", "a", "x" * 257, "x" * 1001, "a\nb", "\x00", "é",
    "😀", TS, "2026-01-26", "1767225600", "1999-12-31T23:59:59Z", "2026-13-01T00:00:00Z",
    "2026-01-26T19:05:00", "2026-01-26T19:05:00+08:00", "2026-01-26 19:05:00",
    "2026-01-26T19:05:00.123456Z", [], [1], ["a", 2], {}, {"item_id": "x"}, {"a": 1}, [[[]]],
    "click", "like", 1767225600,
]  # fmt: skip
# Raw JSON tokens json.dumps does not write: the parsers differ on some of them.
TOKENS = [
    "NaN", "Infinity", "-Infinity", "1e400", "1e-400", "01", "+1", ".5", "1.", '"\\ud800"',
    '"a\\udc80b"', '"\\ud83d\\ude00"', '"\\u0000"', "[" * 300 + "]" * 300, "tru", '"\t"', "1E2",
    "-0", "5.0", "9007199254740993", "1" * 5000, '"\\x41"', "'a'",
]  # fmt: skip
KEYS = {
    RankRequest: ["request_id", "user_id", "query", "ts", "context", "candidates", "history",
                  "top_k", "model", "colour"],
    EventsRequest: ["type", "request_id", "user_id", "item_id", "position", "ts", "extra"],
}  # fmt: skip


def _valid(rng: random.Random, model: type[BaseModel]) -> dict[str, Any]:
    ids = [rng.choice(["i1", "i2", 7, 7.0, "ü", 2**53 - 1]) for _ in range(4)]
    if model is EventsRequest:
        return {
            "events": [
                {"type": "click", "request_id": "r", "user_id": rng.choice(ids), "item_id": i}
                | ({"position": rng.choice([1, 2.0])} if rng.random() < 0.5 else {})
                | ({"ts": rng.choice([TS, "2026-01-26"])} if rng.random() < 0.3 else {})
                for i in ids[: rng.randrange(1, 4)]
            ]
        }
    body: dict[str, Any] = {
        "user_id": rng.choice(ids),
        "query": rng.choice(["tea", "é", "a\u0000b", ""]),
        "candidates": [
            {"item_id": i} | ({"features": {"price": rng.choice([1, 2.5, -0.0])}} if k else {})
            for k, i in enumerate(ids)
        ],
    }
    optional = {
        "ts": rng.choice([TS, "2026-01-26T19:05:00+08:00", "2026-01-26"]),
        "context": {"lat": rng.choice([31.2, 31]), "device": rng.choice(["ios", None, True])},
        "history": [rng.choice(["i9", 5, 5.0, {"item_id": "i8", "ts": TS, "ordered": True}])],
        "top_k": rng.choice([1, 3.0, 1e1]),
        "model": "transformer",
        "request_id": "rid",
    }
    body.update({k: v for k, v in optional.items() if rng.random() < 0.5})
    return body


def _mutated(rng: random.Random, model: type[BaseModel]) -> bytes:
    """A valid body with a few values replaced or removed, a raw token, or damaged bytes."""
    body = _valid(rng, model)
    target, keys = (body["events"][0] if model is EventsRequest else body), KEYS[model]
    if model is RankRequest and rng.random() < 0.3:
        target, keys = body["candidates"][0], ["item_id", "features", "extra"]
    for _ in range(rng.randrange(0, 3)):
        key = rng.choice(keys)
        if rng.random() < 0.8:
            target[key] = rng.choice(VALUES)
        else:
            target.pop(key, None)
    raw = json.dumps(body)
    if rng.random() < 0.3:  # one scalar as a raw token
        raw = raw.replace(
            json.dumps(rng.choice(["i1", "tea", "u1", "click", TS])), rng.choice(TOKENS), 1
        )
    data = raw.encode()
    op = rng.random()
    if op < 0.05:
        data = b"\xef\xbb\xbf" + data
    elif op < 0.1:
        data = raw.encode("utf-16")
    elif op < 0.15:
        data = data[: rng.randrange(len(data))]
    elif op < 0.2:
        data = data.replace(b'"query"', b'"query": "dup", "query"', 1)
    return data


def _typed(v: Any) -> Any:
    """A value with every type spelled out: 1 and 1.0, -0.0 and 0.0 differ here."""
    if isinstance(v, BaseModel):
        return (type(v).__name__, sorted(v.model_fields_set), _typed(dict(v)))
    if isinstance(v, dict):
        return {k: _typed(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_typed(x) for x in v]
    if isinstance(v, datetime):
        return ("datetime", v.isoformat())
    return (type(v).__name__, repr(v))


def _corpus(model: type[BaseModel], n: int, seed: int = 20261205) -> Iterator[bytes]:
    rng = random.Random(seed)
    for k in range(n):
        yield json.dumps(_valid(rng, model)).encode() if k % 3 == 0 else _mutated(rng, model)


@pytest.mark.parametrize("model", [RankRequest, EventsRequest], ids=lambda m: m.__name__)
def test_a_body_the_rust_parser_accepts_is_the_body_json_loads_gave(
    model: type[BaseModel],
) -> None:
    accepted = refused_only_by_rust = 0
    for raw in _corpus(model, 3000):
        try:
            fast = model.model_validate_json(raw)
        except ValidationError:
            try:
                model.model_validate(json.loads(raw))
                refused_only_by_rust += 1  # a BOM, UTF-16, ...: the route falls back for these
            except (ValueError, RecursionError):
                pass
            continue
        accepted += 1
        assert _typed(fast) == _typed(model.model_validate(json.loads(raw))), raw
    assert accepted > 1000 and refused_only_by_rust > 0, (accepted, refused_only_by_rust)


def _app(route_class: type | None) -> FastAPI:
    app = FastAPI()
    errors.install(app)
    router = APIRouter(route_class=route_class) if route_class else APIRouter()

    @router.post("/rank")
    def rank(body: RankRequest) -> dict[str, Any]:
        return {"echo": repr(_typed(body))}

    @router.post("/events")
    def events(body: EventsRequest) -> dict[str, Any]:
        return {"echo": repr(_typed(body))}

    app.include_router(router)
    return app


def test_every_answer_is_the_one_fastapis_own_parsing_gives() -> None:
    plain_app, fast_app = _app(None), _app(JsonBodyRoute)
    assert plain_app.openapi() == fast_app.openapi()
    plain = TestClient(plain_app, raise_server_exceptions=False)
    fast = TestClient(fast_app, raise_server_exceptions=False)
    good = json.dumps(RANK).encode()
    special: list[tuple[bytes | None, dict[str, str]]] = [
        (good, {}),  # no content type: FastAPI refuses to guess
        (good, {"content-type": "text/plain"}),
        (good, {"content-type": "application/json; charset=utf-8"}),
        (good, {"content-type": "application/vnd.ranker+json"}),
        (b"", JSON),
        (None, JSON),
        (b"\xff\xfe{", JSON),
        (b'{"user_id": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", JSON),
    ]
    corpus = [(raw, JSON) for raw in _corpus(RankRequest, 600)]
    answers = {"200": 0, "400": 0, "422": 0}
    for path, cases in (
        ("/rank", special + corpus),
        ("/events", [(json.dumps(EVENTS).encode(), {})] + [
            (raw, JSON) for raw in _corpus(EventsRequest, 300)
        ]),
    ):  # fmt: skip
        for raw, headers in cases:
            a = plain.post(path, content=raw, headers=headers)
            b = fast.post(path, content=raw, headers=headers)
            assert (a.status_code, a.json()) == (b.status_code, b.json()), raw
            answers[str(a.status_code)] = answers.get(str(a.status_code), 0) + 1
    assert min(answers.values()) > 20, answers  # each kind of answer was compared


@pytest.fixture
def loads_of(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bodies Starlette's ``Request.json`` (``json.loads``, FastAPI's own path) parsed."""
    seen: list[bytes] = []
    original = starlette.requests.Request.json

    async def counting(self: starlette.requests.Request) -> Any:
        seen.append(await self.body())
        return await original(self)

    monkeypatch.setattr(starlette.requests.Request, "json", counting)
    return seen


def test_the_hot_routes_parse_valid_bodies_once_in_rust(
    client: TestClient, loads_of: list[bytes]
) -> None:
    body = {**RANK, "ts": None, "candidates": [{"item_id": "nowhere"}]}
    r = client.post("/v1/rank", content=json.dumps(body), headers=JSON)
    assert r.status_code == 200, r.text
    assert "parse;dur=" in r.headers["server-timing"]
    # Schema-valid events of a ranking the server never served: refused by the service.
    r = client.post("/v1/events", json=EVENTS)
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "unknown_request", r.text
    assert loads_of == []
    # A body with a byte-order mark: pydantic's parser refuses it, json.loads takes it.
    r = client.post("/v1/rank", content=b"\xef\xbb\xbf" + json.dumps(body).encode(), headers=JSON)
    assert r.status_code == 200 and len(loads_of) == 1, r.text
    r = client.post("/v1/events", json={"events": [{**EVENTS["events"][0], "type": "like"}]})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "events.0.type"
    assert len(loads_of) == 2


@pytest.mark.parametrize(
    ("smart", "first_match", "in_list"),
    [(Id, AnyId, False), (list[Id | HistoryEvent], list[HistoryEntry], True)],
    ids=["id", "history"],
)
def test_identifiers_tried_left_to_right_validate_as_the_smart_union_did(
    smart: Any, first_match: Any, in_list: bool
) -> None:
    a, b = TypeAdapter(smart), TypeAdapter(first_match)
    assert a.json_schema() == b.json_schema()

    def outcome(ta: TypeAdapter[Any], value: Any, mode: str) -> Any:
        try:
            v = ta.validate_python(value) if mode == "python" else ta.validate_json(value)
            return _typed(v)
        except ValidationError as e:
            return [(x["loc"], x["type"], x["msg"]) for x in e.errors(include_url=False)]

    for value in [*VALUES, float("nan"), "\ud800", HistoryEvent(item_id="h")]:
        v = [value] if in_list else value
        assert outcome(a, v, "python") == outcome(b, v, "python"), value
        try:
            raw = json.dumps(v)
        except TypeError:
            continue
        assert outcome(a, raw, "json") == outcome(b, raw, "json"), value
