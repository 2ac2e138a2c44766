"""POST /v1/events: impressions, clicks and orders, fed back (client token)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Response

from serving.deps import ClientAuth, JsonBodyRoute, ServiceDep
from serving.schemas import ErrorResponse, EventsRequest, EventsResponse

# JsonBodyRoute: the body is validated from its bytes in Rust (no json.loads, no second pass).
router = APIRouter(
    prefix="/v1/events", tags=["events"], dependencies=[ClientAuth], route_class=JsonBodyRoute
)


@router.post(
    "",
    response_model=EventsResponse,
    responses={
        400: {"model": ErrorResponse},
        401: {"model": ErrorResponse},
        413: {"model": ErrorResponse},
        422: {"model": ErrorResponse, "description": "a bad event: each one named"},
        503: {"model": ErrorResponse, "description": "the store cannot be written: retry"},
    },
    summary="Report impressions, clicks and orders",
)
def events(body: EventsRequest, service: ServiceDep) -> Response:
    """Each event must belong to a ranking this server served: its request id, user, one of
    its candidates, a time not before it (unless the server accepts unserved events). A call
    is accepted whole or not at all. Events update user histories at once and counters after
    the same fixed delay as offline; every worker of the server sees them. They are also
    logged for the next training and for online A/B reports. An event already stored (the
    same ``event_id``, by default the same type, request and item) is a retry: acknowledged,
    counted in ``duplicates`` and applied once."""
    # The documented EventsResponse (response_model above), written directly: FastAPI would
    # validate the model it was handed once more before serialising it.
    accepted, duplicates = service.events(body)
    return Response(
        orjson.dumps({"accepted": accepted, "duplicates": duplicates}),
        media_type="application/json",
    )
