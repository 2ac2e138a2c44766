"""Bad input: a clear 4xx JSON error naming the problem, never a 5xx, never a crash."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from serving.settings import Settings

GOOD = {"user_id": "u1", "query": "tea", "candidates": [{"item_id": "i1"}, {"item_id": "i2"}]}


@pytest.fixture
def client(module_client: TestClient) -> TestClient:
    """One app for the module: every request here is refused but the last test's one ranking,
    which no other test reads."""
    return module_client


def _err(client: TestClient, body: object, status: int, *, raw: bytes | None = None) -> dict:
    r = client.post(
        "/v1/rank",
        content=raw if raw is not None else json.dumps(body),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == status, r.text
    out = r.json()
    assert isinstance(out["error"], str) and out["error"]
    return out


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**GOOD, "user_id": None}, "user_id"),
        ({k: v for k, v in GOOD.items() if k != "query"}, "query"),
        ({**GOOD, "candidates": []}, "candidates"),
        ({**GOOD, "candidates": "i1"}, "candidates"),
        ({**GOOD, "candidates": [{"id": "i1"}]}, "candidates.0.item_id"),
        ({**GOOD, "top_k": 0}, "top_k"),
        ({**GOOD, "top_k": "ten"}, "top_k"),
        ({**GOOD, "ts": "yesterday"}, "ts"),
        ({**GOOD, "colour": "blue"}, "colour"),
        (
            {**GOOD, "candidates": [{"item_id": "i1", "features": {"avg_price": "cheap"}}]},
            "candidates.0.features.avg_price",
        ),
    ],
)
def test_wrong_types_missing_and_unknown_fields_are_named(
    client: TestClient, body: dict, field: str
) -> None:
    out = _err(client, body, 422)
    assert field in [d["field"] for d in out["detail"]], out


def test_nan_and_infinite_values_are_refused(client: TestClient) -> None:
    for token in ("NaN", "Infinity", "-Infinity"):
        raw = (
            '{"user_id": "u", "query": "q", "candidates": '
            f'[{{"item_id": "i", "features": {{"rating": {token}}}}}]}}'
        ).encode()
        out = _err(client, None, 422, raw=raw)
        assert out["detail"][0]["field"] == "candidates.0.features.rating"


def test_invalid_json_oversized_body_and_too_many_candidates(
    client: TestClient, settings: Settings
) -> None:
    assert _err(client, None, 400, raw=b'{"user_id": "u", "query": ')["error"] == "invalid JSON"
    many = {**GOOD, "candidates": [{"item_id": f"x{i}"} for i in range(1001)]}
    assert "too many candidates" in _err(client, many, 422)["error"]
    huge = b'{"user_id": "u", "query": "' + b"x" * (settings.max_body_bytes + 10) + b'"}'
    assert "too large" in _err(client, None, 413, raw=huge)["error"]


def test_unknown_model_feature_and_repeated_items(client: TestClient) -> None:
    assert _err(client, {**GOOD, "model": "nope"}, 422)["detail"][0]["field"] == "model"
    out = _err(
        client, {**GOOD, "candidates": [{"item_id": "i1", "features": {"colour": 1.0}}]}, 422
    )
    assert out["detail"][0]["field"] == "candidates.0.features.colour"
    assert (
        "repeat"
        in _err(client, {**GOOD, "candidates": [{"item_id": "a"}, {"item_id": "a"}]}, 422)["error"]
    )
    out = _err(client, {**GOOD, "context": {"lat": "north"}}, 422)
    assert out["detail"][0]["field"] == "context.lat"


def test_bad_events_are_refused_by_field(client: TestClient) -> None:
    ok = {"type": "click", "request_id": "r", "user_id": "u", "item_id": "i"}
    for bad, field in (
        ({**ok, "type": "like"}, "events.0.type"),
        ({**ok, "position": 0}, "events.0.position"),
        ({k: v for k, v in ok.items() if k != "item_id"}, "events.0.item_id"),
    ):
        r = client.post("/v1/events", json={"events": [bad]})
        assert r.status_code == 422 and field in [d["field"] for d in r.json()["detail"]]
    assert client.post("/v1/events", json={"events": []}).status_code == 422


def test_the_server_keeps_serving_after_bad_input(client: TestClient) -> None:
    _err(client, None, 400, raw=b"\xff\xfe not json")
    assert client.post("/v1/rank", json=GOOD).status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}
