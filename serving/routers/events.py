"""POST /v1/events: impressions, clicks and orders, fed back."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from serving.deps import get_service
from serving.schemas import ErrorResponse, EventsRequest, EventsResponse
from serving.service import Service

router = APIRouter(tags=["events"])


@router.post(
    "/v1/events",
    response_model=EventsResponse,
    responses={400: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
    summary="Report impressions, clicks and orders",
)
def events(body: EventsRequest, service: Service = Depends(get_service)) -> EventsResponse:  # noqa: B008
    """Events update user histories at once and counters after the same fixed delay as
    offline; every worker of the server sees them. They are also logged for the next
    training and for online A/B reports."""
    return EventsResponse(accepted=service.events(body))
