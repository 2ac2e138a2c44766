"""Request and response bodies of the HTTP API (OpenAPI at /docs, with examples).

Unknown fields are refused (a typo gets a clear 422 naming it); NaN and infinite numbers are
refused; identifiers may be strings or integers and are compared as strings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Id = str | int


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Candidate(Strict):
    item_id: Id
    features: dict[str, float] | None = Field(
        None,
        description="numeric item attributes to use instead of the server's (e.g. a live price)",
    )


class HistoryEvent(Strict):
    item_id: Id
    ts: datetime | None = None
    ordered: bool = False


class RankRequest(Strict):
    request_id: str | None = Field(None, description="made by the server when absent")
    user_id: Id
    query: str = Field(..., max_length=1000)
    ts: datetime | None = Field(None, description="ISO-8601; the server's clock when absent")
    context: dict[str, str | float | int | bool | None] | None = Field(
        None, description="request context, e.g. lat, lon (numbers) and device"
    )
    candidates: list[Candidate] = Field(..., min_length=1)
    history: list[Id | HistoryEvent] | None = Field(
        None, description="the user's recent clicks, oldest first; the server's own when absent"
    )
    top_k: int | None = Field(None, ge=1)
    model: str | None = Field(None, description="a model name; overrides the experiment")

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
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
    request_id: str
    user_id: Id
    item_id: Id
    position: int | None = Field(None, ge=1)
    ts: datetime | None = Field(
        None, description="when it happened; the request's time when absent"
    )


class EventsRequest(Strict):
    events: list[Event] = Field(..., min_length=1)

    model_config = ConfigDict(
        extra="forbid",
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
    accepted: int


class ModelInfo(BaseModel):
    name: str
    version: str
    kind: str
    reranker_of: str | None = None
    default: bool = False
    sha256: str


class ModelsResponse(BaseModel):
    generation: int
    device: str
    models: list[ModelInfo]
    experiment: dict[str, object] | None = None


class ErrorResponse(BaseModel):
    error: str
    detail: list[dict[str, object]] | str | None = None
