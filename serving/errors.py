"""Every bad request gets a clear 4xx JSON answer naming the problem; nothing crashes.

- invalid JSON -> 400; a body over the size limit -> 413;
- a field of the wrong type, missing, unknown, NaN or infinite -> 422 with each field's path;
- a request the service cannot serve as asked (too many candidates, an unknown model or item
  feature) -> the status the service chose, with the field;
- the shared store unavailable -> 503 with ``Retry-After``;
- anything unexpected -> 500 with a request reference, and the traceback in the server log.

Errors are counted by route template, never by the raw path, and no message echoes more than
a bounded, ASCII-escaped piece of what the client sent.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import metrics
from serving.bounds import name_as_sent
from serving.requests import ServingError
from serving.store_rows import StoreError

log = logging.getLogger(__name__)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    """A field path as a client wrote it: no "body" prefix, no union-member tags (pydantic
    reports ``user_id.str`` and ``user_id.int`` for a union it could not match); a key the
    client made up (an unknown field) is clipped."""
    parts = [name_as_sent(p) for p in loc if p != "body" and not _is_tag(p)]
    return ".".join(parts) or "body"


def endpoint(request: Request) -> str:
    """The route template a request matched (a bounded label), or "unmatched"."""
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))


def _is_tag(p: object) -> bool:
    return isinstance(p, str) and (
        p in _UNION_TAGS
        or "[" in p
        or p[:1].isupper()
        or p.startswith(("constrained-", "function-"))
    )


_UNION_TAGS = {"str", "int", "float", "bool", "none", "function-after", "function-before"}


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            metrics.ERRORS.labels(endpoint(request), "400").inc()
            msg = next(e.get("msg", "") for e in errors if e.get("type") == "json_invalid")
            return JSONResponse({"error": "invalid JSON", "detail": msg}, status_code=400)
        detail: list[dict[str, str]] = []
        seen: set[str] = set()
        for e in errors:
            name = _field(e.get("loc", ()))
            if name not in seen:  # one entry per field, not one per union member
                seen.add(name)
                detail.append(
                    {"field": name, "message": e.get("msg", ""), "type": e.get("type", "")}
                )
        metrics.ERRORS.labels(endpoint(request), "422").inc()
        fields = ", ".join(d["field"] for d in detail[:5])
        return JSONResponse(
            {"error": f"invalid request: {fields}", "detail": detail}, status_code=422
        )

    @app.exception_handler(ServingError)
    async def serving(request: Request, exc: ServingError) -> JSONResponse:
        metrics.ERRORS.labels(endpoint(request), str(exc.status)).inc()
        body: dict[str, Any] = {"error": exc.message}
        if exc.detail:
            body["detail"] = exc.detail
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StoreError)
    async def store(request: Request, exc: StoreError) -> JSONResponse:
        metrics.ERRORS.labels(endpoint(request), "503").inc()
        log.error("store unavailable on %s: %s", endpoint(request), exc)
        return JSONResponse(
            {"error": "the shared store is unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(HTTPException)
    async def http(request: Request, exc: HTTPException) -> JSONResponse:
        metrics.ERRORS.labels(endpoint(request), str(exc.status_code)).inc()
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        log.exception("internal error %s on %s", ref, endpoint(request))
        metrics.ERRORS.labels(endpoint(request), "500").inc()
        return JSONResponse({"error": f"internal error (reference {ref})"}, status_code=500)


class BodyLimit:
    """Refuses bodies over ``max_bytes`` with 413, by declared length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _too_large(send, self.max_bytes)
            return
        seen = 0
        too_large = False

        async def limited() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _too_large(send, self.max_bytes)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    await send_json(send, 413, {"error": f"request body too large (limit {limit} bytes)"})


async def send_json(
    send: Send,
    status: int,
    payload: dict[str, Any],
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """A JSON answer straight from ASGI middleware (before any route runs)."""
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
