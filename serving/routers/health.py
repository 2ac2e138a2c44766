"""GET /healthz (the process is up), /readyz (models loaded, store writable), /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from serving import metrics

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Models loaded and warmed up, the shared store writable",
    responses={503: {"description": "not ready, with the reason"}},
)
def readyz(request: Request, response: Response) -> dict[str, str]:
    service = getattr(request.app.state, "service", None)
    if service is None or not service.ready:
        response.status_code = 503
        return {"status": "starting"}
    if not service.health.ok:
        response.status_code = 503
        return {"status": "store unavailable", "reason": service.health.reason}
    versions = service.models.versions()
    return {"status": "ready", "models": ", ".join(f"{k}/{v}" for k, v in versions.items())}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def prometheus() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
