"""GET /v1/models and POST /v1/models/reload (admin token)."""

from __future__ import annotations

from fastapi import APIRouter

from serving.deps import AdminAuth, ServiceDep
from serving.schemas import ErrorResponse, ModelsResponse

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelsResponse, summary="The models being served")
def models(service: ServiceDep) -> ModelsResponse:
    """This worker's models, and every live worker's versions: ``version_skew`` is true while
    workers serve different versions (a reload one of them could not follow)."""
    return ModelsResponse.model_validate(service.info())


@router.post(
    "/reload",
    response_model=ModelsResponse,
    dependencies=[AdminAuth],
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        409: {"model": ErrorResponse},
        503: {"model": ErrorResponse},
    },
    summary="Load the registry's latest exported models (bearer token)",
)
def reload(service: ServiceDep) -> ModelsResponse:
    """Swaps to the new models atomically (requests in flight finish on the old ones); a
    corrupted or incompatible model is rejected with 409 and the old ones keep serving. Every
    worker of the server follows."""
    service.reload()
    return ModelsResponse.model_validate(service.info())
