"""The served OpenAPI schema says what this server does: the limits that are settings, the
item feature names its state knows and the models it serves are written into the static
schema of ``schemas.py``.

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
    _key_patterns_as_property_names(schema)
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
    names = {"type": "string", "enum": sorted(service.models.versions())}
    rank["model"] = {
        "anyOf": [names, {"type": "null"}],
        "description": rank["model"]["description"],
    }
    rank["candidates"]["maxItems"] = s.max_candidates
    for option in rank["history"].get("anyOf", []):
        if option.get("type") == "array":
            option["maxItems"] = s.max_history
    parts["EventsRequest"]["properties"]["events"]["maxItems"] = s.max_events
    return schema


def _key_patterns_as_property_names(node: Any) -> None:
    """pydantic writes a dict's key pattern as ``patternProperties``, which leaves keys that
    do not match it unconstrained in JSON Schema; the server refuses them. Say so: the pattern
    goes to ``propertyNames`` and the value schema to ``additionalProperties``."""
    if isinstance(node, dict):
        patterns = node.get("patternProperties")
        if isinstance(patterns, dict) and len(patterns) == 1 and "propertyNames" in node:
            ((pattern, values),) = patterns.items()
            node["propertyNames"] = {**node["propertyNames"], "pattern": pattern}
            node["additionalProperties"] = values
            del node["patternProperties"]
        for value in node.values():
            _key_patterns_as_property_names(value)
    elif isinstance(node, list):
        for value in node:
            _key_patterns_as_property_names(value)


def install(app: FastAPI) -> None:
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        service = getattr(app.state, "service", None)
        # Built again when the worker or its model names change (a reload may add a model).
        key = (id(service), tuple(service.models.versions()) if service else ())
        if cache.get("key") != key:
            cache["schema"], cache["key"] = served_schema(app, service), key
        return dict(cache["schema"])

    app.openapi = openapi  # type: ignore[method-assign]
