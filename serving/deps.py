"""Dependencies routes declare: the worker's service and the bearer-token checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from serving.auth import check_bearer
from serving.requests import ServingError
from serving.service import Service


def get_service(request: Request) -> Service:
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        raise ServingError(503, "the service is starting")
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
AuthorizationHeader = Annotated[str | None, Header(description="Bearer TOKEN")]


def require_client(service: ServiceDep, authorization: AuthorizationHeader = None) -> None:
    """The client token (``RANKER_CLIENT_TOKEN``), unless the server runs --insecure-open."""
    if not service.tokens.open_to_clients:
        check_bearer("client", service.tokens.client, authorization)


def require_admin(service: ServiceDep, authorization: AuthorizationHeader = None) -> None:
    """The admin token (``RANKER_ADMIN_TOKEN``)."""
    check_bearer("admin", service.tokens.admin, authorization)


ClientAuth = Depends(require_client)
AdminAuth = Depends(require_admin)
