"""Dependencies routes declare: the worker's service and the bearer-token checks (declared
in the OpenAPI schema as the ``clientToken`` and ``adminToken`` security schemes)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.auth import check_bearer
from serving.requests import ServingError
from serving.service import Service


def get_service(request: Request) -> Service:
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        raise ServingError(503, "the service is starting")
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
# auto_error=False: the answer to a missing or wrong token is ours (401, JSON, named).
_client_bearer = HTTPBearer(
    scheme_name="clientToken",
    description="RANKER_CLIENT_TOKEN (or a line of --client-tokens-file)",
    auto_error=False,
)
_admin_bearer = HTTPBearer(
    scheme_name="adminToken", description="RANKER_ADMIN_TOKEN", auto_error=False
)
Bearer = HTTPAuthorizationCredentials | None


def require_client(
    service: ServiceDep, credentials: Annotated[Bearer, Depends(_client_bearer)]
) -> None:
    """The client token, unless the server runs --insecure-open."""
    if not service.tokens.open_to_clients:
        check_bearer(
            "client", service.tokens.client, credentials.credentials if credentials else None
        )


def require_admin(
    service: ServiceDep, credentials: Annotated[Bearer, Depends(_admin_bearer)]
) -> None:
    check_bearer("admin", service.tokens.admin, credentials.credentials if credentials else None)


ClientAuth = Depends(require_client)
AdminAuth = Depends(require_admin)
