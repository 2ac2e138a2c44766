"""POST /v1/rank: rank a request's candidates."""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Depends, Request, Response

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
def rank(request: Request, body: RankRequest, service: Service = Depends(get_service)) -> Response:  # noqa: B008
    """Features the client leaves out (item attributes, counters, the user's history) come
    from the server's feature state; the response names the model, its version and the
    experiment variant that served the request."""
    t_route = time.perf_counter()
    out = service.rank(body)
    inner = out.pop("_timing")
    # Serialised here: the service builds exactly the documented shape, so FastAPI's second
    # validation pass over every item would only cost time.
    t_ser = time.perf_counter()
    payload = json.dumps(out, separators=(",", ":"))
    done = time.perf_counter()
    # Per-stage times for clients and load tests (the W3C Server-Timing header).
    started = request.scope.get("ranker_t0", t_route)
    stages = {
        "parse": (t_route - started) * 1000,
        **inner,
        "serialize": (done - t_ser) * 1000,
    }
    timing = ", ".join(f"{k};dur={v:.3f}" for k, v in stages.items())
    return Response(payload, media_type="application/json", headers={"Server-Timing": timing})
