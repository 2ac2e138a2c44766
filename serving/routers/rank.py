"""POST /v1/rank: rank a request's candidates."""

from __future__ import annotations

import time
from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Request, Response

from serving.admission import ARRIVAL, DEADLINE
from serving.deps import JsonBodyRoute, ServiceDep
from serving.schemas import ErrorResponse, RankRequest, RankResponse

# JsonBodyRoute: the body is validated from its bytes in Rust (no json.loads, no second pass).
router = APIRouter(prefix="/v1/rank", tags=["ranking"], route_class=JsonBodyRoute)
DEGRADED = "X-Ranker-Degraded"


@router.post(
    "",
    response_model=RankResponse,
    responses={
        400: {"model": ErrorResponse},
        409: {"model": ErrorResponse, "description": "request_id used for another user"},
        413: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        503: {"model": ErrorResponse, "description": "busy or past the deadline: retry"},
    },
    summary="Rank candidates for a user's query",
)
async def rank(request: Request, body: RankRequest, service: ServiceDep) -> Response:
    """Features the client leaves out (item attributes, counters, the user's history) come
    from the server's feature state; the response names the model, its version and the
    experiment variant that served it. ``X-Ranker-Degraded`` says when the shared store could
    not be read or written (the ranking is served; its events cannot be checked)."""
    t_route = time.perf_counter()
    deadline = request.scope.get(DEADLINE)

    def in_thread() -> tuple[float, dict[str, Any]]:
        return time.perf_counter(), service.rank(body, deadline=deadline)

    # On a thread of the worker's own pool (``rank_threads``), not the default one that other
    # routes share; a ranking waiting for one past its deadline is refused by Service.rank.
    t_thread, out = await anyio.to_thread.run_sync(in_thread, limiter=service.rank_slots)
    inner = out.pop("_timing")
    degraded = out.pop("_degraded")
    # Serialised here: the service builds exactly the documented shape, so FastAPI's second
    # validation pass over every item would only cost time. orjson (Rust) writes the same JSON
    # as json.dumps did, with non-ASCII characters as UTF-8 rather than escaped (and a NaN as
    # null, not as the invalid NaN; the service refuses non-finite scores). NumPy scalars are
    # allowed because json.dumps took a numpy.float64 (a float subclass) and orjson would not.
    t_ser = time.perf_counter()
    payload = orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)
    done = time.perf_counter()
    # Per-stage times for clients and load tests (the W3C Server-Timing header).
    started = request.scope.get(ARRIVAL, t_route)
    stages = {
        "parse": (t_route - started) * 1000,
        "queue": (t_thread - t_route) * 1000,
        **inner,
        "serialize": (done - t_ser) * 1000,
    }
    headers = {"Server-Timing": ", ".join(f"{k};dur={v:.3f}" for k, v in stages.items())}
    if degraded:
        headers[DEGRADED] = ", ".join(degraded)
    return Response(payload, media_type="application/json", headers=headers)
