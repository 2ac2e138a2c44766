"""Dependencies routes declare: the settings (cached) and the worker's service."""

from __future__ import annotations

from fastapi import Request

from serving.requests import ServingError
from serving.service import Service


def get_service(request: Request) -> Service:
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        raise ServingError(503, "the service is starting")
    return service
