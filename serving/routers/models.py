"""GET /v1/models and POST /v1/models/reload (admin)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Header

from serving.deps import get_service
from serving.requests import ServingError
from serving.schemas import ErrorResponse, ModelsResponse
from serving.service import Service
from serving.settings import Settings, get_settings

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelsResponse, summary="The models being served")
def models(service: Service = Depends(get_service)) -> ModelsResponse:  # noqa: B008
    return ModelsResponse.model_validate(service.info())


@router.post(
    "/v1/models/reload",
    response_model=ModelsResponse,
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        409: {"model": ErrorResponse},
    },
    summary="Load the registry's latest exported models (bearer token)",
)
def reload(
    authorization: str | None = Header(None),
    service: Service = Depends(get_service),  # noqa: B008
    settings: Settings = Depends(get_settings),  # noqa: B008
) -> ModelsResponse:
    """Swaps to the new models atomically (requests in flight finish on the old ones); a
    corrupted or incompatible model is rejected with 409 and the old ones keep serving. Every
    worker of the server follows."""
    if not settings.admin_token:
        raise ServingError(403, "reload is disabled: the server has no RANKER_ADMIN_TOKEN")
    token = (authorization or "").removeprefix("Bearer ").strip()
    if not authorization or not hmac.compare_digest(token, settings.admin_token):
        raise ServingError(401, "missing or wrong bearer token")
    service.reload()
    return ModelsResponse.model_validate(service.info())
