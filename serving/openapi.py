"""The served OpenAPI schema says what this server does: the limits that are settings and the
item feature names its state knows are written into the static schema of ``schemas.py``.

A schema fuzzer (schemathesis) once found a candidate feature name the schema allowed and the
server refused: the names are now listed (and others forbidden), as are the list limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from serving.bounds import MAX_ABS_FEATURE

if TYPE_CHECKING:
    from serving.service import Service


def served_schema(app: FastAPI, service: Service | None) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    if service is None:
        return schema
    s = service.settings
    parts = schema["components"]["schemas"]
    features = {
        "type": "object",
        "properties": {
            name: {"type": "number", "minimum": -MAX_ABS_FEATURE, "maximum": MAX_ABS_FEATURE}
            for name in sorted(service.numeric_attrs)
        },
        "additionalProperties": False,
        "description": parts["Candidate"]["properties"]["features"].get("description", ""),
    }
    parts["Candidate"]["properties"]["features"] = {"anyOf": [features, {"type": "null"}]}
    rank = parts["RankRequest"]["properties"]
    rank["candidates"]["maxItems"] = s.max_candidates
    for option in rank["history"].get("anyOf", []):
        if option.get("type") == "array":
            option["maxItems"] = s.max_history
    parts["EventsRequest"]["properties"]["events"]["maxItems"] = s.max_events
    return schema


def install(app: FastAPI) -> None:
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        service = getattr(app.state, "service", None)
        if cache.get("service") is not service or "schema" not in cache:
            cache["schema"], cache["service"] = served_schema(app, service), service
        return dict(cache["schema"])

    app.openapi = openapi  # type: ignore[method-assign]
