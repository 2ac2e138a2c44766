"""What routes declare: the worker's service, the bearer-token checks (declared in the OpenAPI
schema as the ``clientToken`` and ``adminToken`` security schemes), and ``JsonBodyRoute``, the
route class of the hot routes, whose JSON body pydantic validates straight from the bytes."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope

from serving.auth import check_bearer
from serving.requests import ServingError
from serving.service import Service


# The dependencies are coroutines although they never wait: FastAPI runs a plain function on
# its thread pool. Without that hop a ranking's median parse stage fell by 0.13-0.22 ms and its
# queue stage rose by 0.06-0.10 ms (concurrency 1, alternated with the previous build).
async def get_service(request: Request) -> Service:
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


async def require_client(
    service: ServiceDep, credentials: Annotated[Bearer, Depends(_client_bearer)]
) -> None:
    """The client token, unless the server runs --insecure-open."""
    if not service.tokens.open_to_clients:
        check_bearer(
            "client", service.tokens.client, credentials.credentials if credentials else None
        )


async def require_admin(
    service: ServiceDep, credentials: Annotated[Bearer, Depends(_admin_bearer)]
) -> None:
    check_bearer("admin", service.tokens.admin, credentials.credentials if credentials else None)


ClientAuth = Depends(require_client)
AdminAuth = Depends(require_admin)


class JsonBodyRoute(APIRoute):
    """A route whose body, when it is one pydantic model, is parsed and validated from the raw
    bytes in one pass of pydantic-core (Rust), instead of ``json.loads`` into Python dicts and
    lists and a second pass over those.

    The body stays declared as usual (``body: RankRequest``), so the OpenAPI schema is the one
    FastAPI writes, and FastAPI still reads the body, checks its content type, and reports a
    missing body. Only the request's ``json()`` changes: it returns the validated model, which
    FastAPI's own validation then passes through (an instance of the model is not validated
    again). A body the fast path refuses is parsed again exactly as before (``json.loads``)
    and validated by FastAPI, so a client sees the errors it always saw: pydantic's JSON
    parser refuses inputs ``json.loads`` takes (a lone surrogate escape, which our validators
    then name by field; a UTF-8 BOM; UTF-16), and its error messages differ. Refused requests
    are parsed twice; accepted ones once, and the two parsers agree on every body both accept
    (tests/serving/test_body_parsing.py)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        body = self.body_field
        model = body.field_info.annotation if body is not None else None
        # A single model parameter only: FastAPI validates an embedded or optional body (or
        # one of several) by parts, which a model instance would not fit.
        single = len(self.dependant.body_params) == 1 and self.dependant.body_params[0] is body
        if not (single and isinstance(model, type) and issubclass(model, BaseModel)):
            return handler
        body_model: type[BaseModel] = model

        async def validated_from_bytes(request: Request) -> Response:
            return await handler(_ModelJsonRequest(request.scope, request.receive, body_model))

        return validated_from_bytes


class _ModelJsonRequest(Request):
    def __init__(self, scope: Scope, receive: Receive, model: type[BaseModel]):
        super().__init__(scope, receive)
        self._model = model

    async def json(self) -> Any:
        raw = await self.body()
        try:
            return self._model.model_validate_json(raw)
        except ValidationError:
            return await super().json()  # FastAPI's own path, for its exact errors
