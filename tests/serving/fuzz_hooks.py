"""Schemathesis hooks for the fuzz test: what the served schema cannot say, made true.

A ``ts`` is valid when it is from 2000 on and at most the allowed skew ahead of the server's
clock: the first half the served schema cannot say (JSON Schema has no bounds for date-times),
the second depends on when the test runs. So a generated date-time outside that range is
moved into it (the same instant of the year 2020 plus the generated seconds within a day),
and everything else the fuzzer made is left as it was. Values that are not date-times are
untouched: the negative cases stay negative. Likewise a ranking's candidates must name
distinct items, compared as strings (1 and "1" are one item); the schema's ``uniqueItems``
compares whole objects, so repeated item ids are dropped from generated candidate lists.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import schemathesis

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def _in_range(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return value
    aware = t if t.tzinfo else t.replace(tzinfo=UTC)
    if EARLIEST <= aware <= datetime.now(UTC):
        return value
    return aware.replace(year=2020, month=1, day=1).isoformat()


def _distinct(candidates: Any) -> Any:
    if not isinstance(candidates, list):
        return candidates
    seen: set[str] = set()
    out = []
    for c in candidates:
        key = str(c.get("item_id")) if isinstance(c, dict) else repr(c)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def _walk(body: Any) -> Any:
    if isinstance(body, dict):
        if "candidates" in body:
            body = {**body, "candidates": _distinct(body["candidates"])}
        return {k: _in_range(v) if k == "ts" else _walk(v) for k, v in body.items()}
    if isinstance(body, list):
        return [_walk(v) for v in body]
    return body


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Every phase's schema-valid cases (the coverage phase bypasses the body hooks); the
    negative ones are left exactly as generated."""
    meta = case._meta
    if meta is None or meta.generation.mode.name != "POSITIVE":
        return
    body = _walk(case.body)
    if body != case.body:
        case.body = body
