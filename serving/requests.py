"""Turning a validated request body into what the feature path takes; errors that name a field."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipelines.features.live import HistoryEvent as LiveHistory
from serving.bounds import clip, name_as_sent
from serving.schemas import HistoryEvent, RankRequest


class ServingError(Exception):
    """A request the service cannot serve as asked: a 4xx (or a 503 when it cannot serve now)
    with a message naming the field; ``detail`` lists several fields."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        detail: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field
        self.detail = (
            detail
            if detail is not None
            else ([{"field": field, "message": message}] if field else None)
        )
        self.headers = headers


def to_us(ts: datetime | None) -> int:
    if ts is None:
        return time.time_ns() // 1000
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return int(ts.timestamp() * 1_000_000)


def client_time(ts: datetime | None, field: str, max_skew_s: float) -> int:
    """A client's time in microseconds; the server's clock when absent. No client may move
    the state's clock: a time more than the allowed skew ahead is refused."""
    now = time.time_ns() // 1000
    if ts is None:
        return now
    t_us = to_us(ts)
    if t_us > now + max_skew_s * 1e6:
        raise ServingError(
            422,
            f"{field} is {(t_us - now) / 1e6:.0f} s ahead of the server clock "
            f"(at most {max_skew_s:g} s, the server's --max-clock-skew-s)",
            field,
        )
    return t_us


def retry_later(message: str, seconds: int = 1) -> ServingError:
    """A 503 telling the client when to try again."""
    return ServingError(503, message, headers={"Retry-After": str(seconds)})


def item_overrides(req: RankRequest, known: set[str]) -> dict[str, np.ndarray] | None:
    """Per-candidate feature values the client sent, as NaN-padded columns (None if none)."""
    given = [(j, c.features) for j, c in enumerate(req.candidates) if c.features]
    if not given:
        return None
    out: dict[str, np.ndarray] = {}
    n = len(req.candidates)
    for j, feats in given:
        for name, value in (feats or {}).items():
            if name not in known:
                raise ServingError(
                    422,
                    f"unknown item feature {clip(name)}; known: {sorted(known)}",
                    f"candidates.{j}.features.{name_as_sent(name)}",
                )
            out.setdefault(name, np.full(n, np.nan))[j] = value
    return out


COORD_RANGE = {"lat": 90.0, "lon": 180.0}


def context_coord(context: dict[str, Any], key: str) -> float | None:
    v = context.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ServingError(422, f"context.{key} must be a number", f"context.{key}")
    if abs(v) > COORD_RANGE[key]:
        raise ServingError(
            422, f"context.{key} must be within +-{COORD_RANGE[key]:g}", f"context.{key}"
        )
    return float(v)


def history_event(h: str | int | HistoryEvent) -> LiveHistory:
    if isinstance(h, HistoryEvent):
        return LiveHistory(str(h.item_id), None if h.ts is None else to_us(h.ts), h.ordered)
    return LiveHistory(str(h), None, False)
