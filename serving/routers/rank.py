"""POST /v1/rank: rank a request's candidates."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Response

from serving.deps import get_service
from serving.schemas import ErrorResponse, RankRequest, RankResponse
from serving.service import Service

router = APIRouter(tags=["ranking"])


@router.post(
    "/v1/rank",
    response_model=RankResponse,
    responses={
        400: {"model": ErrorResponse},
        413: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
    summary="Rank candidates for a user's query",
)
def rank(body: RankRequest, service: Service = Depends(get_service)) -> Response:  # noqa: B008
    """Features the client leaves out (item attributes, counters, the user's history) come
    from the server's feature state; the response names the model, its version and the
    experiment variant that served the request."""
    # Serialised here: the service builds exactly the documented shape, so FastAPI's second
    # validation pass over every item would only cost time.
    return Response(
        json.dumps(service.rank(body), separators=(",", ":")), media_type="application/json"
    )
