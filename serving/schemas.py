"""Request and response bodies of the HTTP API (OpenAPI at /docs, with examples).

Unknown fields are refused (a typo gets a clear 422 naming it); NaN and infinite numbers are
refused; types are strict (a number is not a string, a string is not a date unless it is
ISO-8601); identifiers may be strings or integers and are compared as strings. Every value is
bounded (``serving.bounds``). The limits that are settings (candidates, history length, events
per call) and the item feature names the state knows are filled into the served OpenAPI
schema at start (``serving.openapi``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from serving.bounds import (
    MAX_CONTEXT_KEYS,
    FeatureValue,
    Id,
    IdStr,
    Key,
    Position,
    Query,
    Text,
    Timestamp,
    TopK,
)

# Upper bounds of the lists; the server's own (smaller) limits are settings, enforced by the
# service and written into the served schema.
MAX_LIST = 100_000
Context = dict[Key, Text | FeatureValue | StrictBool | None]
# Identifiers are tried left to right: a string id is taken as a string at once. The routes
# validate bodies from JSON, where pydantic's default (smart) union also tries the integer
# branch, a Python call (its before-validator) for every candidate: that made validating from
# the bytes slower than json.loads plus validating the dicts. The branches take disjoint
# inputs, so results, errors and the JSON schema are the smart union's
# (tests/serving/test_body_parsing.py).
AnyId = Annotated[Id, Field(union_mode="left_to_right")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class Candidate(Strict):
    item_id: AnyId
    features: dict[Key, FeatureValue] | None = Field(
        None,
        description="numeric item attributes to use instead of the server's (e.g. a live "
        "price); the names this server knows are listed in its schema",
    )


class HistoryEvent(Strict):
    item_id: AnyId
    ts: Timestamp | None = None
    ordered: StrictBool = False


# A client's history: ids or events, tried left to right for the same reason as AnyId.
HistoryEntry = Annotated[Id | HistoryEvent, Field(union_mode="left_to_right")]


class RankRequest(Strict):
    request_id: IdStr | None = Field(None, description="made by the server when absent")
    user_id: AnyId
    query: Query
    ts: Timestamp | None = Field(
        None,
        description="ISO-8601; the server's clock when absent; at most the server's allowed "
        "clock skew ahead of it",
    )
    context: Context | None = Field(
        None,
        max_length=MAX_CONTEXT_KEYS,
        description="request context, e.g. lat, lon (numbers) and device",
    )
    candidates: list[Candidate] = Field(
        ...,
        min_length=1,
        max_length=MAX_LIST,
        description="distinct items (item_ids compared as strings)",
        json_schema_extra={"uniqueItems": True},
    )
    history: list[HistoryEntry] | None = Field(
        None,
        max_length=MAX_LIST,
        description="the user's recent clicks, oldest first; the server's own when absent",
    )
    top_k: TopK | None = None
    model: Text | None = Field(None, description="a model name; overrides the experiment")

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "user_id": "u0042",
                    "query": "hotpot",
                    "ts": "2026-01-26T19:05:00Z",
                    "context": {"lat": 31.2304, "lon": 121.4737, "device": "ios"},
                    "candidates": [
                        {"item_id": "i0007"},
                        {"item_id": "i0451", "features": {"avg_price": 88.0}},
                    ],
                    "top_k": 10,
                }
            ]
        },
    )


class RankedItem(BaseModel):
    item_id: Id
    score: float
    rank: int
    team: str | None = Field(None, description="interleaving: the variant that contributed it")


class RankResponse(BaseModel):
    request_id: str
    model: str
    version: str
    variant: str
    items: list[RankedItem]
    took_ms: float

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "3f2c9a4e",
                    "model": "transformer",
                    "version": "v1",
                    "variant": "treatment",
                    "items": [
                        {"item_id": "i0451", "score": 2.31, "rank": 1},
                        {"item_id": "i0007", "score": 1.07, "rank": 2},
                    ],
                    "took_ms": 1.9,
                }
            ]
        }
    )


class Event(Strict):
    type: Literal["impression", "click", "order"]
    request_id: IdStr = Field(..., description="the served ranking the event belongs to")
    user_id: AnyId = Field(..., description="the user the ranking was served to")
    item_id: AnyId = Field(..., description="one of the ranking's candidates")
    position: Position | None = Field(None, description="1 = top; at most the list's length")
    ts: Timestamp | None = Field(
        None,
        description="when it happened; the ranking's time when absent; not before the ranking, "
        "at most the server's allowed clock skew ahead of it",
    )
    event_id: IdStr | None = Field(
        None,
        description="idempotency key: an event whose key was already stored is a retry and "
        "counts once, through any replica (default: its type, request_id and item_id)",
    )


class EventsRequest(Strict):
    events: list[Event] = Field(..., min_length=1, max_length=MAX_LIST)

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "events": [
                        {
                            "type": "impression",
                            "request_id": "3f2c9a4e",
                            "user_id": "u0042",
                            "item_id": "i0451",
                            "position": 1,
                        },
                        {
                            "type": "click",
                            "request_id": "3f2c9a4e",
                            "user_id": "u0042",
                            "item_id": "i0451",
                            "position": 1,
                        },
                    ]
                }
            ]
        },
    )


class EventsResponse(BaseModel):
    accepted: int  # every event of the call (it was checked and is stored)
    duplicates: int = 0  # of those, retries of events already stored (counted once)


class ModelInfo(BaseModel):
    name: str
    version: str
    kind: str
    reranker_of: str | None = None
    default: bool = False
    sha256: str


class WorkerInfo(BaseModel):
    pid: int
    generation: int
    models: dict[str, str] = Field(description="model name -> version this worker serves")


class ModelsResponse(BaseModel):
    generation: int
    device: str
    worker: int = Field(description="the process id of the worker that answered")
    models: list[ModelInfo]
    workers: list[WorkerInfo] = Field(description="every worker seen in the last 10 s")
    version_skew: bool = Field(description="true while live workers serve different versions")
    experiment: dict[str, object] | None = None


class ErrorResponse(BaseModel):
    error: str
    detail: list[dict[str, object]] | str | None = None
